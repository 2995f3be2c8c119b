"""Site energies, total energy, forces and stress of an MTP (pure, jit-able).

Geometry enters through padded neighbour arrays (see :mod:`mtpjax.neighbors`):
r_ij = (x_j − x_i + S_ij · cell) · (I + ε), where S_ij are integer image shifts and ε a
symmetric strain (zero for plain evaluation). Forces −∂E/∂x (eV/Å) and the virial ∂E/∂ε (eV)
come from one reverse pass. Units: Å, eV, eV/Å, stress eV/Å³ (ASE sign convention).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtpjax.model import ModelSpec
from mtpjax.moments import basic_moments, scalar_moments
from mtpjax.radial import chebyshev_basis, repulsion_energy


class Neighbors(NamedTuple):
    """Padded neighbour arrays (a JAX pytree).

    idx: int [N, J] neighbour atom indices (any value where ``mask`` is False).
    shifts: float [N, J, 3] integer image shifts S (r_j + S·cell is the image).
    mask: bool [N, J] real neighbour entries.
    """

    idx: jax.Array
    shifts: jax.Array
    mask: jax.Array


def pair_vectors(positions, cell, neighbors: Neighbors, strain=None):
    """Neighbour vectors r_ij (Å), float [N, J, 3], optionally under strain ε [3, 3]."""
    disp = positions[neighbors.idx] - positions[:, None, :]
    disp = disp + jnp.einsum("nja,ab->njb", neighbors.shifts.astype(positions.dtype), cell)
    if strain is not None:
        disp = disp + disp @ strain
    return disp


def site_energies(spec: ModelSpec, params, vectors, types, neighbor_types, mask):
    """Site energies E_i (eV), float [N].

    Args:
        params: dict with ``radial_coeffs`` [C, C, K, R], ``species_coeffs`` [C],
            ``moment_coeffs`` [S].
        vectors: float [N, J, 3] neighbour vectors (Å).
        types: int [N] species of the central atoms; neighbor_types: int [N, J].
        mask: bool [N, J] real neighbour entries (the cutoff is applied here).
    """
    dtype = vectors.dtype
    r2 = jnp.sum(vectors * vectors, axis=-1)
    inside = mask & (r2 < spec.max_dist**2)
    # keep the gradient finite on padded / outside entries
    r2_safe = jnp.where(inside, r2, (0.5 * (spec.min_dist + spec.max_dist)) ** 2)
    r = jnp.sqrt(r2_safe)
    vec_safe = jnp.where(inside[..., None], vectors, r[..., None] / jnp.sqrt(3.0))
    unit = vec_safe / r[..., None]
    q = chebyshev_basis(
        r, spec.min_dist, spec.max_dist, spec.radial_basis_size, spec.scaling, spec.repulsive
    )  # [N, J, R]
    coeffs = params["radial_coeffs"].astype(dtype)
    if spec.species_count == 1:
        radial = jnp.einsum("njr,kr->njk", q, coeffs[0, 0])
    else:
        pair_coeffs = coeffs[types[:, None], neighbor_types]  # [N, J, K, R]
        radial = jnp.einsum("njr,njkr->njk", q, pair_coeffs)
    basic = basic_moments(spec, radial, unit, inside)
    scalars = scalar_moments(spec, basic)
    energy = params["species_coeffs"].astype(dtype)[types] + scalars @ params[
        "moment_coeffs"
    ].astype(dtype)
    if spec.repulsive:
        energy = energy + jnp.sum(jnp.where(inside, repulsion_energy(r, spec.min_dist), 0.0), -1)
    return energy


def total_energy(spec: ModelSpec, params, positions, cell, types, neighbors: Neighbors,
                 strain=None, atom_mask=None):
    """Total energy (eV) = Σ_i E_i over real atoms (``atom_mask`` [N] for padded batches)."""
    vectors = pair_vectors(positions, cell, neighbors, strain)
    e = site_energies(spec, params, vectors, types, types[neighbors.idx], neighbors.mask)
    if atom_mask is not None:
        e = jnp.where(atom_mask, e, 0.0)
    return jnp.sum(e)


def energy_forces_virial(spec: ModelSpec, params, positions, cell, types,
                         neighbors: Neighbors, atom_mask=None):
    """Energy (eV), forces float [N, 3] (eV/Å) and virial ∂E/∂ε float [3, 3] (eV) in one pass.

    The ASE stress is ``virial / volume`` (eV/Å³); MLIP's PlusStress is ``−virial``.
    """
    strain = jnp.zeros((3, 3), positions.dtype)

    def fn(pos, eps):
        sym = 0.5 * (eps + eps.T)
        return total_energy(spec, params, pos, cell, types, neighbors, sym, atom_mask)

    energy, (grad_pos, grad_strain) = jax.value_and_grad(fn, argnums=(0, 1))(positions, strain)
    return energy, -grad_pos, grad_strain
