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


def chebyshev_basis_and_derivative(r, min_dist: float, max_dist: float, size: int, scaling=1.0,
                                   clamp=False):
    """Q_k(r) and dQ_k/dr (1/Å), both float [..., R], by the same three-term recursion.

    With ``clamp`` (``RBChebyshev_repuls``) the values are those at ``min_dist`` below it and
    the derivative is zero there.
    """
    rc = jnp.maximum(r, min_dist) if clamp else r
    span = max_dist - min_dist
    xi = (2.0 * rc - (min_dist + max_dist)) / span
    dxi = 2.0 / span
    q = [scaling * (rc - max_dist) ** 2]
    dq = [2.0 * scaling * (rc - max_dist)]
    q.append(xi * q[0])
    dq.append(dxi * q[0] + xi * dq[0])
    for _ in range(2, size):
        q.append(2.0 * xi * q[-1] - q[-2])
        dq.append(2.0 * dxi * q[-2] + 2.0 * xi * dq[-1] - dq[-2])
    q, dq = jnp.stack(q[:size], axis=-1), jnp.stack(dq[:size], axis=-1)
    if clamp:
        dq = jnp.where((r < min_dist)[..., None], 0.0, dq)
    return q, dq


def repulsion_derivative(r, min_dist: float):
    """d/dr of :func:`repulsion_energy` (eV/Å), float [...]."""
    r_safe = jnp.minimum(r, min_dist)
    return jnp.where(r < min_dist, -1e5 * jnp.exp(-10.0 * (r_safe - 1.0)), 0.0)
