"""Energy, forces and virial of very large systems, evaluated in chunks of central atoms.

Memory of one evaluation grows with the per-pair intermediates (monomials, radial values and
their adjoints: tens of kB per atom at level 16), so a million-atom cell is evaluated a chunk
of ``chunk_size`` central atoms at a time with one compiled function (fixed shapes; the last
chunk is padded and masked). A site energy E_i depends on the positions of i and of its
neighbours j, which may lie in other chunks, so each chunk returns g_ij = ∂E_i/∂r_ij and the
forces are accumulated over all chunks: F_i = Σ_j g_ij − Σ_{(k,j): idx_kj = i} g_kj; the virial
is Σ r_ij ⊗ g_ij. Units: Å, eV, eV/Å, virial eV (ASE stress = virial / volume).

The neighbour list is built once on the host (:func:`mtpjax.neighbors.pair_list`, matscipy's
C cell list for large periodic cells) and packed per chunk; image shifts are kept as int8.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtpjax.model import ModelSpec
from mtpjax.neighbors import pair_list, validate_geometry
from mtpjax.potential import site_energies_and_gradients
from mtpjax.precision import highest_precision


class ChunkedNeighbors(NamedTuple):
    """Host-side neighbour pairs of a whole system, sorted by central atom.

    j: int32 [P] neighbour indices; shifts: int8 [P, 3] image shifts; starts: int64 [N+1] the
    pairs of atom i are ``starts[i]:starts[i+1]``; capacity: the largest count (J).
    """

    j: np.ndarray
    shifts: np.ndarray
    starts: np.ndarray
    capacity: int


def build_pairs(positions, cell, pbc, cutoff: float, method: str = "auto") -> ChunkedNeighbors:
    """Neighbour pairs of all atoms within ``cutoff`` (Å), compact host arrays."""
    positions, cell, pbc = validate_geometry(positions, cell, pbc)
    i, j, S = pair_list(positions, cell, pbc, cutoff, method=method)
    if len(S) and np.abs(S).max() > 127:
        raise ValueError("image shifts beyond ±127 cells: use mtpjax.neighbors.allocate")
    counts = np.bincount(i, minlength=len(positions))
    starts = np.concatenate([[0], np.cumsum(counts)])
    del i
    return ChunkedNeighbors(j.astype(np.int32), S.astype(np.int8), starts,
                            max(int(counts.max()) if len(counts) else 0, 1))


def pack_chunk(pairs: ChunkedNeighbors, start: int, size: int):
    """Padded rows of central atoms start..start+size−1 (past the end: empty rows).

    Returns (idx int32 [size, J], shifts int8 [size, J, 3], mask bool [size, J], atom_mask
    bool [size]).
    """
    n_atoms = len(pairs.starts) - 1
    stop = min(start + size, n_atoms)
    cap = pairs.capacity
    lo, hi = pairs.starts[start], pairs.starts[stop]
    counts = np.diff(pairs.starts[start:stop + 1])
    rows = np.repeat(np.arange(stop - start), counts)
    slot = np.arange(hi - lo) - (pairs.starts[start:stop] - lo)[rows]
    idx = np.zeros((size, cap), np.int32)
    shifts = np.zeros((size, cap, 3), np.int8)
    mask = np.zeros((size, cap), bool)
    idx[rows, slot] = pairs.j[lo:hi]
    shifts[rows, slot] = pairs.shifts[lo:hi]
    mask[rows, slot] = True
    atom_mask = np.arange(size) < (stop - start)
    return idx, shifts, mask, atom_mask


def balanced_chunk(n_atoms: int, chunk_size: int, multiple: int = 64) -> int:
    """Chunk length ≤ ``chunk_size`` (rounded up to ``multiple``) that splits ``n_atoms`` into
    the fewest chunks with the least padding in the last one."""
    chunk_size = max(1, min(chunk_size, n_atoms))
    count = -(-n_atoms // chunk_size)
    size = -(-n_atoms // count)
    return min(-(-size // multiple) * multiple, max(n_atoms, 1)) if size > multiple else size


@partial(jax.jit, static_argnums=(0,), donate_argnums=(2,))
@highest_precision
def _chunk_step(spec: ModelSpec, params, acc, positions, cell, types, start, idx, shifts, mask,
                atom_mask):
    """Add one chunk's energy, forces and virial to ``acc`` = (E, F [N, 3], virial [3, 3])."""
    energy, forces, virial = acc
    n = idx.shape[0]
    centers = jnp.minimum(start + jnp.arange(n), positions.shape[0] - 1)
    dtype = positions.dtype
    vectors = positions[idx] - positions[centers][:, None, :]
    vectors = vectors + jnp.einsum("nja,ab->njb", shifts.astype(dtype), cell)
    e, grad = site_energies_and_gradients(spec, params, vectors, types[centers], types[idx], mask,
                                          atom_mask)
    own = jnp.sum(grad, axis=1)
    forces = forces.at[centers].add(own).at[idx.reshape(-1)].add(-grad.reshape(-1, 3))
    w = jnp.einsum("nja,njb->ab", vectors, grad)
    virial = virial + 0.5 * (w + w.T)
    energy = energy + jnp.sum(jnp.where(atom_mask, e, 0.0))
    return energy, forces, virial


def energy_forces_virial_chunked(spec: ModelSpec, params, positions, cell, pbc, types,
                                 chunk_size: int = 4096, pairs: ChunkedNeighbors | None = None,
                                 dtype=None, progress: bool = False):
    """Energy (eV), forces [N, 3] (eV/Å, numpy) and virial [3, 3] (eV) of a whole system.

    Args:
        spec, params: the model (:class:`ModelSpec`, coefficient dict).
        positions: float [N, 3] (Å); cell: [3, 3] rows = lattice vectors; pbc: bool or [3];
        types: int [N].
        chunk_size: most central atoms per evaluation (memory ∝ chunk_size); the chunks are
            balanced (:func:`balanced_chunk`) so that the last one carries little padding.
        pairs: a prebuilt :func:`build_pairs` result (built here if None).
        dtype: float dtype of the arithmetic (default: float64 when x64 is on).
        progress: show a tqdm bar over chunks.
    """
    positions_np, cell_np, pbc = validate_geometry(positions, cell, pbc)
    n_atoms = len(positions_np)
    if pairs is None:
        pairs = build_pairs(positions_np, cell_np, pbc, spec.cutoff)
    if len(pairs.starts) != n_atoms + 1:
        raise ValueError(f"pairs were built for {len(pairs.starts) - 1} atoms, not {n_atoms}")
    dtype = jnp.asarray(0.0).dtype if dtype is None else dtype
    chunk_size = balanced_chunk(n_atoms, int(chunk_size))
    pos = jnp.asarray(positions_np, dtype)
    cell_j = jnp.asarray(cell_np, dtype)
    types_j = jnp.asarray(np.asarray(types, dtype=np.int32))
    params_j = jax.tree.map(lambda v: jnp.asarray(v, dtype), params)
    acc = (jnp.zeros((), dtype), jnp.zeros((n_atoms, 3), dtype), jnp.zeros((3, 3), dtype))
    starts = range(0, n_atoms, chunk_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="chunks", unit="chunk")
    for start in starts:
        idx, shifts, mask, atom_mask = pack_chunk(pairs, start, chunk_size)
        acc = _chunk_step(spec, params_j, acc, pos, cell_j, types_j, jnp.asarray(start), idx,
                          shifts, mask, atom_mask)
    energy, forces, virial = acc
    return float(energy), np.asarray(forces), np.asarray(virial)
