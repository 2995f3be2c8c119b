"""Chebyshev radial basis of MLIP-2 (``RBChebyshev``, ``RBChebyshev_repuls``) and radial functions.

With ξ = (2r − (r_min + r_max)) / (r_max − r_min):
Q₀ = s (r − r_max)², Q₁ = s ξ (r − r_max)², Q_k = 2ξ Q_{k−1} − Q_{k−2}  (s = ``scaling``).
Distances in Å. Values vanish with zero slope at r = r_max.
"""

from __future__ import annotations

import jax.numpy as jnp


def chebyshev_basis(r, min_dist: float, max_dist: float, size: int, scaling=1.0, clamp=False):
    """Radial basis values Q_k(r).

    Args:
        r: distances, float [...] (Å).
        min_dist, max_dist: basis range (Å).
        size: number of basis functions R.
        scaling: multiplies every Q_k.
        clamp: clamp r to ``min_dist`` from below (``RBChebyshev_repuls``).
    Returns:
        float [..., R].
    """
    if clamp:
        r = jnp.maximum(r, min_dist)
    xi = (2.0 * r - (min_dist + max_dist)) / (max_dist - min_dist)
    d2 = (r - max_dist) ** 2
    q0 = scaling * d2
    q1 = scaling * (xi * d2)
    values = [q0, q1]
    for _ in range(2, size):
        values.append(2.0 * xi * values[-1] - values[-2])
    return jnp.stack(values[:size], axis=-1)


def repulsion_energy(r, min_dist: float):
    """Extra pair energy of ``RBChebyshev_repuls`` (eV): 1e4 (e^{−10(r−1)} − e^{−10(r_min−1)})
    for r < r_min, zero otherwise. float [...] → float [...]."""
    r_safe = jnp.minimum(r, min_dist)
    value = 1e4 * (jnp.exp(-10.0 * (r_safe - 1.0)) - jnp.exp(-10.0 * (min_dist - 1.0)))
    return jnp.where(r < min_dist, value, 0.0)
