"""Moment tensors from neighbour vectors (SPEC §2).

Basic moments m_i = Σ_j f_μ(r_ij) u_x^a u_y^b u_z^c with u = r_ij / |r_ij|, computed as one
contraction over neighbours of radial values [N, J, K] and monomials [N, J, T]; products
m_k += w m_p m_q are applied wave by wave (every row of a wave only reads finished moments).
"""

from __future__ import annotations

import jax.numpy as jnp

from mtpjax.model import ModelSpec


def unit_monomials(unit, monomials, max_power: int):
    """u_x^a u_y^b u_z^c for each exponent row.

    Args:
        unit: float [..., 3] unit vectors.
        monomials: int [T, 3] exponents (static numpy).
        max_power: largest exponent.
    Returns:
        float [..., T].
    """
    powers = [jnp.ones_like(unit)]
    for _ in range(max_power):
        powers.append(powers[-1] * unit)
    powers = jnp.stack(powers, axis=-2)  # [..., P+1, 3]
    px = powers[..., monomials[:, 0], 0]
    py = powers[..., monomials[:, 1], 1]
    pz = powers[..., monomials[:, 2], 2]
    return px * py * pz


def basic_moments(spec: ModelSpec, radial_values, unit, mask):
    """Basic moments per atom.

    Args:
        radial_values: float [N, J, K], f_μ(r_ij) for each neighbour.
        unit: float [N, J, 3], unit vectors r_ij / r_ij.
        mask: bool [N, J], True for real neighbours inside the cutoff.
    Returns:
        float [N, B].
    """
    mono = unit_monomials(unit, spec.monomials, spec.max_power)  # [N, J, T]
    weighted = jnp.where(mask[..., None], radial_values, 0.0)
    tensor = jnp.einsum("njk,njt->nkt", weighted, mono)  # [N, K, T]
    return tensor[:, spec.basic_mu, spec.basic_monomial]


def all_moments(spec: ModelSpec, basic):
    """Extend basic moments [N, B] by the product moments → float [N, alpha_moments_count]."""
    n_extra = spec.basis.alpha_moments_count - spec.basis.basic_count
    moments = jnp.concatenate([basic, jnp.zeros(basic.shape[:-1] + (n_extra,), basic.dtype)], -1)
    for p, q, w, k in spec.waves:
        contrib = moments[:, p] * moments[:, q] * w.astype(basic.dtype)
        moments = moments.at[:, k].add(contrib)
    return moments


def scalar_moments(spec: ModelSpec, basic):
    """Scalar basis function values B_s, float [N, S], from basic moments [N, B]."""
    return all_moments(spec, basic)[:, spec.basis.alpha_moment_mapping]
