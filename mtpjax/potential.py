"""Site energies, total energy, forces and stress of an MTP (pure, jit-able).

Geometry enters through padded neighbour arrays (see :mod:`mtpjax.neighbors`):
r_ij = (x_j − x_i + S_ij · cell) · (I + ε), where S_ij are integer image shifts and ε a
symmetric strain (zero for plain evaluation). Forces −∂E/∂x (eV/Å) and the virial ∂E/∂ε (eV)
come from one reverse pass. Units: Å, eV, eV/Å, stress eV/Å³ (ASE sign convention).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from mtpjax.model import ModelSpec
from mtpjax.moments import (
    basic_from_tensor,
    moment_tensor,
    monomial_layers,
    pair_adjoints,
    scalar_moment_rows,
)
from mtpjax.radial import (
    chebyshev_basis,
    chebyshev_basis_and_derivative,
    repulsion_derivative,
    repulsion_energy,
)


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


def _geometry(spec: ModelSpec, vectors, mask):
    """(r [N, J] Å, unit vectors [N, J, 3], inside bool [N, J]) with finite values on padding."""
    r2 = jnp.sum(vectors * vectors, axis=-1)
    inside = mask & (r2 < spec.max_dist**2)
    # keep values and gradients finite on padded / outside entries
    r2_safe = jnp.where(inside, r2, (0.5 * (spec.min_dist + spec.max_dist)) ** 2)
    r = jnp.sqrt(r2_safe)
    vec_safe = jnp.where(inside[..., None], vectors, r[..., None] / jnp.sqrt(3.0))
    return r, vec_safe / r[..., None], inside


def _radial_values(spec: ModelSpec, params, q, types, neighbor_types):
    """f_μ(r_ij) = Σ_k c^{(t_i, t_j)}_{μ,k} Q_k(r_ij): float [N, J, K] from Q [N, J, R]."""
    coeffs = params["radial_coeffs"].astype(q.dtype)
    if spec.species_count == 1:
        return jnp.einsum("njr,kr->njk", q, coeffs[0, 0])
    pair_coeffs = coeffs[types[:, None], neighbor_types]  # [N, J, K, R]
    return jnp.einsum("njr,njkr->njk", q, pair_coeffs)


def _energy_from_basic(spec: ModelSpec, params, types, basic_rows):
    """Site energies without pair repulsion (eV), float [N], from basic moments [B, N]."""
    dtype = basic_rows.dtype
    scalars = scalar_moment_rows(spec, basic_rows)  # [S, N]
    return params["species_coeffs"].astype(dtype)[types] + params["moment_coeffs"].astype(
        dtype) @ scalars


#: atoms per block on CPU: the per-pair intermediates of a block stay in the L2 cache
#: (measured 3.5× faster than one [N, J, T] pass at 1000 atoms; benchmarks/NOTES.md)
CPU_BLOCK_SIZE = 32


def default_block_size() -> int | None:
    """Atoms per block for the default backend: ``CPU_BLOCK_SIZE`` on CPU, None (one block)
    on accelerators, which want large batches."""
    return CPU_BLOCK_SIZE if jax.default_backend() == "cpu" else None


def map_blocks(fn, block_size, *arrays):
    """Apply ``fn`` to consecutive blocks of ``block_size`` rows of every array (leading axis N)
    with ``lax.map`` and concatenate the outputs (pytree of [N, ...]).

    Padding rows (N not a multiple of the block size) are zeros/False; ``fn`` must give finite
    results for them. ``block_size`` None or ≥ N: one call on the whole arrays.
    """
    n = arrays[0].shape[0]
    if block_size is None or block_size >= n:
        return fn(*arrays)
    blocks = -(-n // block_size)
    pad = blocks * block_size - n

    def split(x):
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
        return x.reshape((blocks, block_size) + x.shape[1:])

    out = jax.lax.map(lambda xs: fn(*xs), tuple(split(x) for x in arrays))
    return jax.tree.map(lambda y: y.reshape((blocks * block_size,) + y.shape[2:])[:n], out)


def _resolve_block(block_size):
    return default_block_size() if block_size == "auto" else block_size


def site_energies(spec: ModelSpec, params, vectors, types, neighbor_types, mask,
                  block_size="auto"):
    """Site energies E_i (eV), float [N] (differentiable by JAX to any order).

    Computed in blocks of atoms (``block_size``: "auto" = :func:`default_block_size`, None =
    all at once); the values do not depend on it. Derivatives w.r.t. ``vectors`` use the
    explicit reverse pass of :func:`site_energies_and_gradients` (a custom JVP:
    dE_i = Σ_j ∂E_i/∂r_ij · dr_ij, since E_i depends only on its own neighbour vectors), so
    ``jax.grad`` of a total energy costs about what ``energy_forces_virial`` costs; derivatives
    w.r.t. ``params`` go through the plain forward code.
    """
    return _site_energies_custom(spec, _resolve_block(block_size), params, vectors, types,
                                 neighbor_types, mask)


def _site_energies_plain(spec: ModelSpec, block, params, vectors, types, neighbor_types, mask):
    return map_blocks(lambda v, t, nt, m: _site_energies_block(spec, params, v, t, nt, m),
                      block, vectors, types, neighbor_types, mask)


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _site_energies_custom(spec, block, params, vectors, types, neighbor_types, mask):
    return _site_energies_plain(spec, block, params, vectors, types, neighbor_types, mask)


def _is_zero(t) -> bool:
    return isinstance(t, SymbolicZero)


def _site_energies_jvp(spec, block, primals, tangents):
    params, vectors, types, neighbor_types, mask = primals
    d_params, d_vectors = tangents[0], tangents[1]
    energy, grad = site_energies_and_gradients(spec, params, vectors, types, neighbor_types,
                                               mask, None, block)
    d_energy = jnp.zeros_like(energy)
    if not _is_zero(d_vectors):
        d_energy = d_energy + jnp.einsum("nja,nja->n", grad, d_vectors)
    leaves = jax.tree.leaves(d_params, is_leaf=_is_zero)
    if not all(_is_zero(t) for t in leaves):
        d_params = jax.tree.map(lambda t, p: jnp.zeros_like(p) if _is_zero(t) else t,
                                d_params, params, is_leaf=_is_zero)
        _, d_from_params = jax.jvp(
            lambda p: _site_energies_plain(spec, block, p, vectors, types, neighbor_types, mask),
            (params,), (d_params,))
        d_energy = d_energy + d_from_params
    return energy, d_energy


_site_energies_custom.defjvp(_site_energies_jvp, symbolic_zeros=True)


def _radial_and_monomials(spec: ModelSpec, params, vectors, types, neighbor_types, mask):
    """Per-pair inputs of the moments: (r [N, J] Å, inside bool [N, J], radial values
    f_μ(r_ij) float [N, J, K] (zero outside the cutoff and on padding), monomial layers of the
    unit vectors (:func:`mtpjax.moments.monomial_layers`))."""
    r, unit, inside = _geometry(spec, vectors, mask)
    q = chebyshev_basis(
        r, spec.min_dist, spec.max_dist, spec.radial_basis_size, spec.scaling, spec.repulsive
    )  # [N, J, R]
    radial = jnp.where(inside[..., None], _radial_values(spec, params, q, types, neighbor_types),
                       0.0)
    return r, inside, radial, monomial_layers(unit, spec.max_power)


def _site_energies_block(spec: ModelSpec, params, vectors, types, neighbor_types, mask):
    """Site energies E_i (eV), float [N].

    Args:
        params: dict with ``radial_coeffs`` [C, C, K, R], ``species_coeffs`` [C],
            ``moment_coeffs`` [S].
        vectors: float [N, J, 3] neighbour vectors (Å).
        types: int [N] species of the central atoms; neighbor_types: int [N, J].
        mask: bool [N, J] real neighbour entries (the cutoff is applied here).
    """
    r, inside, radial, mono = _radial_and_monomials(spec, params, vectors, types,
                                                    neighbor_types, mask)
    basic = basic_from_tensor(spec, moment_tensor(spec, radial, mono)).T  # [B, N]
    energy = _energy_from_basic(spec, params, types, basic)
    if spec.repulsive:
        energy = energy + jnp.sum(jnp.where(inside, repulsion_energy(r, spec.min_dist), 0.0), -1)
    return energy


def site_energies_and_gradients(spec: ModelSpec, params, vectors, types, neighbor_types, mask,
                                weights=None, block_size="auto"):
    """Site energies and the gradient of Σ_i w_i E_i w.r.t. the neighbour vectors.

    Same model as :func:`site_energies`; the reverse pass through the basic moments is written
    out (:func:`mtpjax.moments.pair_adjoints`), the product DAG is differentiated by JAX. The
    result is plain JAX, so it can be differentiated again (e.g. w.r.t. ``params``).

    Args:
        vectors: float [N, J, 3] (Å); types int [N]; neighbor_types int [N, J]; mask bool [N, J].
        weights: optional float/bool [N] w_i (e.g. an atom mask); default 1.
        block_size: atoms per block ("auto": :func:`default_block_size`; None: all at once).
    Returns:
        (E_i float [N] eV, ∂(Σ w_i E_i)/∂r_ij float [N, J, 3] eV/Å).
    """
    if weights is None:
        weights = jnp.ones(vectors.shape[0], vectors.dtype)
    weights = jnp.asarray(weights).astype(vectors.dtype)
    return map_blocks(
        lambda v, t, nt, m, w: _site_energies_and_gradients_block(spec, params, v, t, nt, m, w),
        _resolve_block(block_size), vectors, types, neighbor_types, mask, weights)


def _site_energies_and_gradients_block(spec: ModelSpec, params, vectors, types, neighbor_types,
                                       mask, weights):
    """One block of :func:`site_energies_and_gradients` (weights float [n])."""
    r, unit, inside = _geometry(spec, vectors, mask)
    q, dq = chebyshev_basis_and_derivative(
        r, spec.min_dist, spec.max_dist, spec.radial_basis_size, spec.scaling, spec.repulsive
    )
    radial = jnp.where(inside[..., None], _radial_values(spec, params, q, types, neighbor_types),
                       0.0)
    d_radial_dr = _radial_values(spec, params, dq, types, neighbor_types)
    mono = monomial_layers(unit, spec.max_power)
    basic = basic_from_tensor(spec, moment_tensor(spec, radial, mono)).T  # [B, N]
    energy, vjp = jax.vjp(lambda b: _energy_from_basic(spec, params, types, b), basic)
    (grad_basic,) = vjp(weights)
    d_radial, d_unit = pair_adjoints(spec, grad_basic, mono, radial)
    de_dr = jnp.sum(d_radial * d_radial_dr, -1)
    if spec.repulsive:
        energy = energy + jnp.sum(jnp.where(inside, repulsion_energy(r, spec.min_dist), 0.0), -1)
        de_dr = de_dr + weights[:, None] * repulsion_derivative(r, spec.min_dist)
    radial_part = jnp.sum(unit * d_unit, -1, keepdims=True)
    grad = de_dr[..., None] * unit + (d_unit - unit * radial_part) / r[..., None]
    return energy, jnp.where(inside[..., None], grad, 0.0)


def scalar_pair_jacobian(spec: ModelSpec, params, vectors, types, neighbor_types, mask):
    """Scalar basis functions and their derivatives w.r.t. the neighbour vectors, by the chain
    rule through the basic moments (the linear part of the site energy, E_i = c_{t_i} +
    Σ_s θ_s B_s(i) + repulsion; for the rows ∂r/∂θ of a fit).

    With m(i) = Σ_j m_ij the basic moments (each pair's term m_ij depends on r_ij only):
    ∂B_s(i)/∂r_ij = Σ_b ∂B_s/∂m_b (i) · ∂m_ij,b/∂r_ij — per atom the product-DAG Jacobian
    [S, B] (forward mode, B tangents, no neighbours) times the per-pair moment derivatives
    [B, 3J] (forward mode, 3 tangents) in one batched matrix product.

    Args:
        params: needs ``radial_coeffs`` [C, C, K, R] only.
        vectors: float [N, J, 3] (Å); types int [N]; neighbor_types int [N, J]; mask bool [N, J].
    Returns:
        (B_s(i) float [N, S], ∂B_s(i)/∂r_ij float [N, J, S, 3] (1/Å), zero outside the cutoff).
    """
    n, j = mask.shape
    dtype = vectors.dtype

    def pair_terms(v):  # m_ij, float [N, J, B]: each pair as an atom with one neighbour
        _, _, radial, mono = _radial_and_monomials(spec, params, v, types, neighbor_types, mask)
        flat = [x.reshape((n * j, 1, x.shape[-1])) for x in (radial, *mono)]
        return basic_from_tensor(spec, moment_tensor(spec, flat[0], flat[1:])).reshape(n, j, -1)

    terms, d_terms = jax.linearize(pair_terms, vectors)
    eye3 = jnp.eye(3, dtype=dtype)
    dm = jax.vmap(lambda e: d_terms(jnp.broadcast_to(e, vectors.shape)), out_axes=3)(eye3)
    basic = jnp.sum(terms, axis=1)  # [N, B]
    b_count = basic.shape[1]
    scalars, d_scalars = jax.linearize(lambda b: scalar_moment_rows(spec, b), basic.T)
    eye_b = jnp.broadcast_to(jnp.eye(b_count, dtype=dtype)[:, :, None], (b_count, b_count, n))
    jp = jax.vmap(d_scalars, out_axes=2)(eye_b)  # [S, N, B]
    grad = jnp.einsum("snb,njba->njsa", jp, dm)
    return scalars.T, grad


def total_energy(spec: ModelSpec, params, positions, cell, types, neighbors: Neighbors,
                 strain=None, atom_mask=None):
    """Total energy (eV) = Σ_i E_i over real atoms (``atom_mask`` [N] for padded batches)."""
    vectors = pair_vectors(positions, cell, neighbors, strain)
    e = site_energies(spec, params, vectors, types, types[neighbors.idx], neighbors.mask)
    if atom_mask is not None:
        e = jnp.where(atom_mask, e, 0.0)
    return jnp.sum(e)


def energy_forces_virial(spec: ModelSpec, params, positions, cell, types,
                         neighbors: Neighbors, atom_mask=None, block_size="auto"):
    """Energy (eV), forces float [N, 3] (eV/Å) and virial ∂E/∂ε float [3, 3] (eV) in one pass.

    Uses :func:`site_energies_and_gradients` (explicit reverse pass through the moments):
    with g_ij = ∂E/∂r_ij, F_i = Σ_j g_ij − Σ_{(k,j): idx_kj = i} g_kj and the virial is
    sym(Σ r_ij ⊗ g_ij). The ASE stress is ``virial / volume`` (eV/Å³); MLIP's PlusStress is
    ``−virial``. ``block_size``: atoms per block (see :func:`site_energies_and_gradients`).
    """
    vectors = pair_vectors(positions, cell, neighbors)
    e, grad = site_energies_and_gradients(
        spec, params, vectors, types, types[neighbors.idx], neighbors.mask, atom_mask, block_size
    )
    if atom_mask is not None:
        e = jnp.where(atom_mask, e, 0.0)
    forces = forces_from_pair_gradients(grad, neighbors.idx, positions.shape[0])
    return jnp.sum(e), forces, virial_from_pair_gradients(vectors, grad)


def forces_from_pair_gradients(grad, idx, n_atoms: int):
    """Forces float [n_atoms, 3] (eV/Å) from g_ij = ∂E/∂r_ij [n, J, 3] of central atoms 0..n−1
    (r_ij = x_idx − x_i + shift): F_i = Σ_j g_ij − Σ_{(k,j): idx_kj = i} g_kj."""
    n = grad.shape[0]
    gathered = jnp.zeros((n_atoms, 3), grad.dtype).at[idx.reshape(-1)].add(
        grad.reshape(-1, 3))
    own = jnp.sum(grad, axis=1)
    if n != n_atoms:
        own = jnp.zeros((n_atoms, 3), grad.dtype).at[:n].set(own)
    return own - gathered


def virial_from_pair_gradients(vectors, grad):
    """Virial ∂E/∂ε (eV), float [3, 3]: sym(Σ_ij r_ij ⊗ ∂E/∂r_ij)."""
    w = jnp.einsum("nja,njb->ab", vectors, grad)
    return 0.5 * (w + w.T)
