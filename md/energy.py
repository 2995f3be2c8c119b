"""MTP energy functions for MD, in jax-md's style (closures over a potential).

Two layers:

* :func:`local_energy` / :func:`local_energy_forces_virial`: energy of a *block* of central
  atoms (their neighbour rows) as a function of all positions. With one block holding every
  atom this is the core's :func:`mtpjax.potential.total_energy`; with one block per device it
  is the sharded MD of :mod:`md.sharded`.
* :func:`mtp_energy_fn` + :func:`neighbor_list_fn`: a jax-md energy function
  ``energy_fn(R, neighbor, box=..., perturbation=None)`` for jax-md users (``jax_md.simulate``
  integrators, ``space.periodic_general`` with real or fractional coordinates, ``quantity.stress``).

Neighbour lists are mtpjax's on-device cell lists (:mod:`mtpjax.cell_list`, the same builder
as the MD runner), not jax-md's: they are exact for any triclinic cell, including cells
smaller than the cutoff (several images of one atom, images of the atom itself), and carry
integer image shifts so that no minimum-image convention is needed. Positions wrapped back
into the cell (as ``space.periodic_general``'s ``shift_fn`` does) are handled by correcting
the shifts with the integer wrap counts relative to the build-time fractional coordinates.

jax-md's ``box`` convention: real = ``box @ frac`` per atom, i.e. ``box`` = cell.T, where the
mtpjax ``cell`` holds lattice vectors as rows. Units: Å, eV, eV/Å.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtpjax import cell_list
from mtpjax.cell_list import CellList
from mtpjax.io.mtp_file import read_mtp
from mtpjax.model import ModelSpec
from mtpjax.potential import (
    Neighbors,
    site_energies,
    site_energies_and_gradients,
    virial_from_pair_gradients,
)
from mtpjax.potential_data import MTPotential
from mtpjax.precision import highest_precision


def load_model(potential) -> tuple[MTPotential, ModelSpec, dict]:
    """(potential, spec, params as float64 numpy) from an :class:`MTPotential` or ``.mtp`` path."""
    if isinstance(potential, (str, Path)):
        path = Path(potential)
        if not path.is_file():
            raise FileNotFoundError(f"potential file not found: {path}")
        potential = read_mtp(path)
    if not isinstance(potential, MTPotential):
        raise TypeError(f"expected an MTPotential or a path, got {type(potential).__name__}")
    if not potential.is_trained:
        raise ValueError("the potential has no coefficients (an untrained template?)")
    params = {k: np.asarray(v, dtype=np.float64) for k, v in potential.params().items()}
    return potential, ModelSpec.from_potential(potential), params


def local_energy(spec: ModelSpec, params, positions, centers, cell, types, center_types,
                 neighbors: Neighbors, strain=None, atom_mask=None):
    """Sum of site energies (eV) of a block of central atoms.

    Args:
        positions: float [N, 3] all atoms (Å, unwrapped consistently with ``neighbors``).
        centers: float [n, 3] positions of the block's central atoms (a slice of ``positions``).
        cell: float [3, 3] lattice vectors as rows (Å). types: int [N]; center_types: int [n].
        neighbors: rows [n, J] of the block; ``idx`` indexes ``positions``.
        strain: optional symmetric ε [3, 3]: r_ij → r_ij (I + ε).
        atom_mask: optional bool [n]; False rows (padding) contribute nothing.
    """
    disp = positions[neighbors.idx] - centers[:, None, :]
    disp = disp + jnp.einsum("nja,ab->njb", neighbors.shifts.astype(positions.dtype), cell)
    if strain is not None:
        disp = disp + disp @ strain
    e = site_energies(spec, params, disp, center_types, types[neighbors.idx], neighbors.mask)
    if atom_mask is not None:
        e = jnp.where(atom_mask, e, 0.0)
    return jnp.sum(e)


#: central atoms per chunk of :func:`local_energy_forces_virial` (a multiple of the core's
#: 32-atom cache block): the [n, J, 3] pair vectors and gradients exist one chunk at a time
EVAL_CHUNK = 8192
#: the same on accelerators. Larger chunks would keep a GPU busier, but on the one H200
#: measured (docs/gpu.md, 2026-12-04) the level-16 program over 55,296-atom chunks did not
#: finish compiling in 7.5 minutes, while 8,000-atom programs compiled in 6-25 s; a larger
#: value waits for a GPU measurement (``benchmarks/gpu_check.py --chunk``)
EVAL_CHUNK_ACCELERATOR = 8192


def local_energy_forces_virial(spec: ModelSpec, params, positions, centers, cell, types,
                               center_types, neighbors: Neighbors, atom_mask=None,
                               chunk_size: int | str | None = "auto"):
    """Block energy (eV), its gradients and virial in one pass.

    Uses the core's explicit reverse pass (:func:`mtpjax.potential.site_energies_and_gradients`)
    for g_ij = ∂E/∂r_ij, with r_ij = x_idx − x_i + S·cell (``neighbors.shifts`` may be small
    integers; they are cast to the float dtype here).

    Blocks of more than ``chunk_size`` central atoms are evaluated chunk by chunk in a
    ``lax.scan`` that accumulates the energy, the scattered gradients and the virial, so no
    [n, J, …] float intermediate is ever materialised for the whole block (10⁶ atoms: a few
    hundred MB instead of several GB). The last chunk overlaps the previous one; its rows
    already done are masked; the chunks are balanced (10,648 atoms: 2 × 5,344, not
    8,192 + 8,192). Smaller blocks take the one-pass path (same numbers; chunked
    sums differ by rounding only). ``chunk_size``: "auto" = :data:`EVAL_CHUNK` (read at
    trace time), None = one pass.

    Returns (E_block, dE/d positions [N, 3], dE/d centers [n, 3], virial dE/dε [3, 3] eV).
    The force on atom a is −(Σ_blocks dE/dpositions[a] + dE/dcenters[a] of its own block).
    """
    params = jax.tree.map(jnp.asarray, params)
    n = centers.shape[0]
    if chunk_size == "auto":
        chunk_size = EVAL_CHUNK if jax.default_backend() == "cpu" else EVAL_CHUNK_ACCELERATOR
    if chunk_size is None or n <= chunk_size:
        return _block_energy_forces_virial(spec, params, positions, centers, cell, types,
                                           center_types, neighbors, atom_mask)
    n_chunks = -(-n // int(chunk_size))
    # balanced: equal chunks (a multiple of the core's 32-atom block), so the overlap of the
    # last chunk (recomputed, masked rows) stays below 32 rows per chunk
    c = -(-n // n_chunks)
    if c > 64:
        c = min(n, -(-c // 32) * 32)
    dtype = positions.dtype

    def body(carry, k):
        e_acc, g_all, g_cen, vir = carry
        lo = jnp.minimum(k * c, n - c)
        valid = lo + jnp.arange(c) >= k * c  # rows of an earlier chunk (last chunk overlaps)

        def sl(a):
            return jax.lax.dynamic_slice_in_dim(a, lo, c, 0)

        am = valid if atom_mask is None else sl(atom_mask) & valid
        nb = Neighbors(sl(neighbors.idx), sl(neighbors.shifts),
                       sl(neighbors.mask) & valid[:, None])
        cen = sl(centers)
        disp = positions[nb.idx] - cen[:, None, :]
        disp = disp + jnp.einsum("nja,ab->njb", nb.shifts.astype(dtype), cell)
        e, g = site_energies_and_gradients(spec, params, disp, sl(center_types),
                                           types[nb.idx], nb.mask, am)
        e_acc = e_acc + jnp.sum(jnp.where(am, e, 0.0))
        g_all = g_all.at[nb.idx.reshape(-1)].add(g.reshape(-1, 3))
        own = jax.lax.dynamic_slice_in_dim(g_cen, lo, c, 0) - jnp.sum(g, axis=1)
        g_cen = jax.lax.dynamic_update_slice_in_dim(g_cen, own, lo, 0)
        return (e_acc, g_all, g_cen, vir + virial_from_pair_gradients(disp, g)), None

    # zeros_like keeps the block's manual-axis type inside shard_map (a varying carry)
    init = (jnp.zeros_like(centers, shape=()), jnp.zeros_like(centers, shape=positions.shape),
            jnp.zeros_like(centers), jnp.zeros_like(centers, shape=(3, 3)))
    (e, g_all, g_cen, vir), _ = jax.lax.scan(body, init, jnp.arange(n_chunks))
    return e, g_all, g_cen, vir


def _block_energy_forces_virial(spec, params, positions, centers, cell, types, center_types,
                                neighbors: Neighbors, atom_mask=None):
    disp = positions[neighbors.idx] - centers[:, None, :]
    disp = disp + jnp.einsum("nja,ab->njb", neighbors.shifts.astype(positions.dtype), cell)
    e, g = site_energies_and_gradients(spec, params, disp, center_types,
                                       types[neighbors.idx], neighbors.mask, atom_mask)
    if atom_mask is not None:
        e = jnp.where(atom_mask, e, 0.0)
    g_all = jnp.zeros(positions.shape, g.dtype).at[neighbors.idx.reshape(-1)].add(
        g.reshape(-1, 3))
    return jnp.sum(e), g_all, -jnp.sum(g, axis=1), virial_from_pair_gradients(disp, g)


def energy_forces_virial(spec: ModelSpec, params, positions, cell, types, neighbors: Neighbors,
                         atom_mask=None):
    """Single-block (all atoms) energy (eV), forces [N, 3] (eV/Å), virial [3, 3] (eV)."""
    e, g_all, g_cen, vir = local_energy_forces_virial(spec, params, positions, positions, cell,
                                                      types, types, neighbors, atom_mask)
    return e, -(g_all + g_cen), vir


# ----------------------------------------------------------------------------- jax-md layer


def _cell_from_box(box, dim: int = 3):
    """mtpjax cell (rows = lattice vectors) from a jax-md box (scalar, [3] or [3, 3])."""
    box = jnp.asarray(box)
    if box.ndim == 0:
        return jnp.eye(dim, dtype=box.dtype) * box
    if box.ndim == 1:
        return jnp.diag(box)
    return box.T


def mtp_energy_fn(potential, types=None, fractional_coordinates: bool = False,
                  dtype=jnp.float64):
    """A jax-md energy function for an MTP.

    Args:
        potential: :class:`MTPotential` or path to an ``.mtp`` file.
        types: int [N] MLIP species per atom (default: all type 0). Can be overridden per call.
        fractional_coordinates: R is fractional (``space.periodic_general(...,
            fractional_coordinates=True)``); real positions are ``space.transform(box, R)``,
            whose custom JVP makes ``-grad`` real-space forces, as jax-md expects.
        dtype: float dtype of the coefficients (float64 needs ``jax_enable_x64``).

    Returns:
        ``energy_fn(R, neighbor, box, perturbation=None, types=None, **unused) -> eV``.
        ``neighbor`` is a :class:`mtpjax.cell_list.CellList` from :func:`neighbor_list_fn`
        (its image shifts are corrected for atoms wrapped since the build); ``box`` follows
        jax-md (scalar, diagonal [3] or [3, 3] with lattice vectors as columns);
        ``perturbation`` is jax-md's strain hook (``quantity.stress``): r_ij → r_ij·P.
    """
    _, spec, params_np = load_model(potential)
    default_types = None if types is None else np.asarray(types, dtype=np.int32)

    @highest_precision
    def energy_fn(R, neighbor: CellList, box=None, perturbation=None, types=None, **unused):
        if box is None:
            raise ValueError("energy_fn needs box= (the cell, jax-md convention)")
        params = {k: jnp.asarray(v, dtype) for k, v in params_np.items()}
        cell = _cell_from_box(box, R.shape[-1]).astype(R.dtype)
        if fractional_coordinates:
            from jax_md import space

            positions = space.transform(_box_matrix(box, R), R)
        else:
            positions = R
        t = types if types is not None else default_types
        t = jnp.zeros(R.shape[0], jnp.int32) if t is None else jnp.asarray(t)
        nbrs = cell_list.wrap_corrected(neighbor, jax.lax.stop_gradient(positions),
                                        jax.lax.stop_gradient(cell))
        strain = None
        if perturbation is not None:
            p = jnp.asarray(perturbation, R.dtype)
            eye = jnp.eye(3, dtype=R.dtype)
            strain = (eye * p if p.ndim == 0 else p.T) - eye
        return local_energy(spec, params, positions, positions, cell, t, t, nbrs, strain)

    energy_fn.spec = spec
    return energy_fn


def _box_matrix(box, R):
    box = jnp.asarray(box, R.dtype)
    if box.ndim == 0:
        return jnp.eye(R.shape[-1], dtype=R.dtype) * box
    if box.ndim == 1:
        return jnp.diag(box)
    return box


class NeighborListFns(NamedTuple):
    """``allocate(R, box)`` (host: sizes the buffers, builds on the device) and the jit-able
    ``update(R, neighbor, box)`` (jax-md style)."""

    allocate: object
    update: object


def neighbor_list_fn(cutoff: float, skin: float = 0.5, fractional_coordinates: bool = False,
                     capacity_multiplier: float = 1.25) -> NeighborListFns:
    """jax-md style neighbour-list functions over :mod:`mtpjax.cell_list` (the on-device
    cell list; fully periodic cells, any triclinic shape and size).

    ``allocate(R, box)`` sizes the static buffers on the host and builds the list;
    ``update(R, neighbor, box)`` is pure and jit-able: it returns ``neighbor`` unchanged while
    no pair can have come within ``cutoff`` (displacements in scaled coordinates and the box
    deformation, :func:`mtpjax.cell_list.is_stale`), else rebuilds it (``lax.cond``). The
    result is a pytree (no state in a closure) usable inside ``lax.fori_loop``/``scan``;
    check ``neighbor.did_buffer_overflow`` after a loop and, if set, re-allocate
    (``allocate`` again, or :func:`mtpjax.cell_list.grow`) and redo it from a state before
    the overflow, as with jax-md's own lists. Units: Å (or fractional R).
    """

    @highest_precision
    def _real(R, box):
        cell = _cell_from_box(jnp.asarray(box, R.dtype), R.shape[-1])
        return (R @ cell if fractional_coordinates else R), cell

    def allocate_fn(R, box) -> CellList:
        R = jnp.asarray(R)
        pos, cell = _real(R, box)
        spec = cell_list.plan(np.asarray(pos, np.float64), np.asarray(cell, np.float64),
                              cutoff, skin, capacity_multiplier=capacity_multiplier)
        return cell_list.allocate(spec, pos, cell)

    def update_fn(R, neighbor: CellList, box) -> CellList:
        pos, cell = _real(jnp.asarray(R), box)
        return cell_list.update(neighbor, pos, cell)

    return NeighborListFns(allocate_fn, update_fn)


__all__ = [
    "energy_forces_virial",
    "load_model",
    "local_energy",
    "local_energy_forces_virial",
    "mtp_energy_fn",
    "neighbor_list_fn",
]
