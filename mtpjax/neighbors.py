"""Padded neighbour lists for triclinic cells of any size and mixed periodicity.

Two steps, as in jax-md: :func:`allocate` runs on the host (numpy, exact for any cell: cells
smaller than the cutoff, several images of one atom and images of the atom itself are all
found), sizes a padded ``[N, J]`` buffer and records reference positions and cell;
:func:`needs_rebuild` (host, numpy) tells when the skin is used up, and :func:`update`
rebuilds on the host, reallocating when the capacity is exceeded, so that no neighbour is
ever dropped. Rows hold every neighbour within ``cutoff + skin``; the energy applies the
exact cutoff. :func:`in_range` and :func:`compact` keep, for the current positions, only the entries
within the cutoff (what the ASE calculator evaluates, so that the skin costs no pair work).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from ase.neighborlist import primitive_neighbor_list

from mtpjax.errors import GeometryError
from mtpjax.potential import Neighbors

#: pairs closer than this (Å) are coincident atoms: no potential can evaluate them
COINCIDENT_TOL = 1e-6


class NeighborOverflowError(RuntimeError):
    """A neighbour buffer is too small and may not be reallocated."""


def validate_geometry(positions, cell, pbc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check and normalise positions [N, 3] (Å), cell [3, 3] (rows = lattice vectors), pbc [3]."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        bad = np.argwhere(~np.isfinite(positions))[0][0]
        raise GeometryError(f"positions contain NaN or infinite values (atom {bad})",
                            atoms=[bad])
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    if cell.shape != (3, 3):
        raise ValueError(f"cell must have shape [3, 3], got {cell.shape}")
    if not np.all(np.isfinite(cell)):
        raise GeometryError("cell contains NaN or infinite values")
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    if pbc.any():
        periodic = cell[pbc]
        # the periodic lattice vectors must be linearly independent and non-degenerate
        if np.linalg.matrix_rank(periodic, tol=1e-8 * max(1.0, np.abs(periodic).max())) < len(
            periodic
        ) or np.any(np.linalg.norm(periodic, axis=1) < 1e-8):
            raise GeometryError(
                f"singular cell for periodic directions {pbc.tolist()}: {cell.tolist()}"
            )
        if pbc.all() and abs(np.linalg.det(cell)) < 1e-8:
            raise GeometryError(f"singular cell (volume {np.linalg.det(cell):.3g} Å^3)")
    return positions, cell, pbc


def _bounding_cell(positions, cell, pbc, cutoff):
    """Replace non-periodic zero lattice vectors by a box enclosing all atoms (for binning)."""
    cell = cell.copy()
    span = positions.max(axis=0) - positions.min(axis=0) if len(positions) else np.zeros(3)
    extent = float(span.max()) + 2.0 * cutoff + 1.0
    for d in range(3):
        if not pbc[d] and np.linalg.norm(cell[d]) < 1e-8:
            cell[d] = 0.0
            cell[d, d] = extent
    if abs(np.linalg.det(cell)) < 1e-8:  # non-periodic axes parallel to periodic ones
        q, _ = np.linalg.qr(cell[pbc].T if pbc.any() else np.eye(3))
        for d in range(3):
            if not pbc[d]:
                cell[d] = 0.0
                cell[d, d] = extent
    return cell


#: smallest system for which :func:`pair_list` uses matscipy's C cell list (when it applies)
FAST_MIN_ATOMS = 512


def fast_path_applies(cell, pbc, cutoff: float) -> bool:
    """True when matscipy's neighbour list gives exactly the pairs of the ASE path: a fully
    periodic cell whose three heights are all ≥ 2·cutoff (no atom meets two images of another)
    and matscipy importable."""
    if not np.all(pbc):
        return False
    try:
        import matscipy.neighbours  # noqa: F401
    except ImportError:  # pragma: no cover - matscipy is a dependency
        return False
    inv = np.linalg.inv(cell)
    heights = 1.0 / np.linalg.norm(inv, axis=0)
    return bool(np.all(heights >= 2.0 * cutoff))


def _matscipy_pairs(positions, cell, cutoff: float):
    from matscipy.neighbours import neighbour_list

    i, j, S, d = neighbour_list("ijSd", positions=positions, cell=cell, pbc=np.ones(3, bool),
                                cutoff=float(cutoff))
    # S refers to the positions as given (atoms outside the cell included; checked in tests)
    return i, j, S, d


def pair_list(positions, cell, pbc, cutoff: float, method: str = "auto"):
    """All ordered pairs (i, j, S) with |x_j + S·cell − x_i| < cutoff (i≠j or S≠0).

    ``method``: "ase" (any cell: tiny, skewed, mixed periodicity), "matscipy" (C cell list,
    much faster for large cells; only where :func:`fast_path_applies`) or "auto" (matscipy
    for ≥ ``FAST_MIN_ATOMS`` atoms where it applies, else ASE).
    Returns int arrays i [P], j [P], S [P, 3], sorted by i (then j).

    Raises:
        GeometryError: (an :class:`~mtpjax.errors.InputError`) for NaN positions, a singular
            periodic cell, or two atoms (or an atom and an image) closer than
            ``COINCIDENT_TOL`` = 1e-6 Å; ``err.atoms`` holds the 0-based indices.
    """
    positions, cell, pbc = validate_geometry(positions, cell, pbc)
    if len(positions) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros((0, 3), int)
    if method not in ("auto", "ase", "matscipy"):
        raise ValueError(f"unknown neighbour-list method {method!r}")
    fast = method != "ase" and fast_path_applies(cell, pbc, cutoff)
    if method == "matscipy" and not fast:
        raise ValueError("the matscipy neighbour list needs a periodic cell with heights "
                         f"≥ 2·cutoff = {2 * cutoff} Å")
    if fast and (method == "matscipy" or len(positions) >= FAST_MIN_ATOMS):
        i, j, S, d = _matscipy_pairs(positions, cell, cutoff)
    else:
        box = _bounding_cell(positions, cell, pbc, cutoff)
        i, j, S, d = primitive_neighbor_list(
            "ijSd", pbc, box, positions, cutoff, self_interaction=False,
            use_scaled_positions=False
        )
    _check_coincident(i, j, S, d)
    order = np.lexsort((j, i))
    return i[order], j[order], S[order]


def find_duplicate_atoms(positions, cell=None, pbc=(False, False, False)):
    """A fast (O(N log N)) pre-check for atoms at the same place: the first pair (a, b) of atoms
    whose positions, wrapped into a fully periodic cell, agree to 1e-6 Å after rounding, or
    None. Exact duplicates (a repeated atom line) are always found; the neighbour list
    (:func:`pair_list`) remains the exact test for pairs closer than ``COINCIDENT_TOL``."""
    positions = np.asarray(positions, dtype=np.float64)
    if len(positions) < 2 or not np.all(np.isfinite(positions)):
        return None
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if pbc.all() and cell is not None and abs(np.linalg.det(cell)) > 1e-8:
        cell = np.asarray(cell, dtype=np.float64)
        frac = positions @ np.linalg.inv(cell)
        frac -= np.floor(frac)
        frac[frac > 1.0 - 1e-12] = 0.0
        positions = frac @ cell
    keys = np.round(positions / COINCIDENT_TOL).astype(np.int64)
    _, first, inverse, counts = np.unique(keys, axis=0, return_index=True, return_inverse=True,
                                          return_counts=True)
    inverse = inverse.reshape(-1)
    dup = np.flatnonzero(counts[inverse] > 1)
    if not len(dup):
        return None
    b = int(dup[np.argmax(dup != first[inverse[dup]])])
    return int(first[inverse[b]]), b


def _check_coincident(i, j, S, d) -> None:
    """Raise :class:`GeometryError` naming the first pair (distances ``d``, Å) closer than
    ``COINCIDENT_TOL``."""
    if len(i) == 0 or d.min() >= COINCIDENT_TOL:
        return
    close = np.flatnonzero(d < COINCIDENT_TOL)
    if len(close):
        p = close[np.lexsort((j[close], i[close]))[0]]
        a, b = int(i[p]), int(j[p])
        image = "" if not np.any(S[p]) else f" (periodic image {S[p].tolist()})"
        raise GeometryError(
            f"atoms {a} and {b}{image} coincide (distance {d[p]:.3g} Å < "
            f"{COINCIDENT_TOL:g} Å; 0-based atom indices)",
            atoms=sorted({a, b}),
        )


@dataclass(frozen=True)
class NeighborList:
    """A padded neighbour list with its build state (host object).

    Attributes:
        neighbors: :class:`Neighbors` (JAX arrays) with capacity J per atom.
        cutoff: interaction cutoff (Å); skin: extra distance (Å) listed for reuse.
        reference_positions: float [N, 3] positions at build time (Å).
        reference_cell: float [3, 3] cell at build time.
        pbc: bool [3].
        max_count: largest number of entries any atom had at build time.
    """

    neighbors: Neighbors
    cutoff: float
    skin: float
    reference_positions: np.ndarray
    reference_cell: np.ndarray
    pbc: np.ndarray
    max_count: int
    shift_bound: float

    @property
    def capacity(self) -> int:
        return int(self.neighbors.idx.shape[1])


def pack(i, j, S, n_atoms: int, capacity: int | None = None, dtype=np.float64):
    """Pack sorted pair arrays into padded ``[N, J]`` arrays.

    Raises :class:`NeighborOverflowError` if some atom has more than ``capacity`` entries.
    Returns (Neighbors as numpy arrays, max_count).
    """
    counts = np.bincount(i, minlength=n_atoms)
    max_count = int(counts.max()) if n_atoms and len(i) else 0
    if capacity is None:
        capacity = max(max_count, 1)
    if max_count > capacity:
        raise NeighborOverflowError(
            f"an atom has {max_count} neighbours but the buffer holds {capacity}"
        )
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(i)) - starts[i]
    idx = np.zeros((n_atoms, capacity), dtype=np.int32)
    idx[:] = np.arange(n_atoms, dtype=np.int32)[:, None]
    shifts = np.zeros((n_atoms, capacity, 3), dtype=dtype)
    mask = np.zeros((n_atoms, capacity), dtype=bool)
    idx[i, slot] = j
    shifts[i, slot] = S
    mask[i, slot] = True
    return Neighbors(idx=idx, shifts=shifts, mask=mask), max_count


def allocate(positions, cell, pbc, cutoff: float, skin: float = 0.0,
             capacity: int | None = None, capacity_multiplier: float = 1.0) -> NeighborList:
    """Build a neighbour list on the host.

    Args:
        positions: float [N, 3] (Å). cell: float [3, 3] or None. pbc: bool or bool [3].
        cutoff: interaction cutoff (Å). skin: extra listed distance (Å) for reuse.
        capacity: entries per atom; default: the largest count × ``capacity_multiplier``.
    """
    if cutoff <= 0 or skin < 0:
        raise ValueError(f"need cutoff > 0 and skin ≥ 0, got {cutoff}, {skin}")
    positions, cell, pbc = validate_geometry(positions, cell, pbc)
    i, j, S = pair_list(positions, cell, pbc, cutoff + skin)
    counts = np.bincount(i, minlength=len(positions))
    max_count = int(counts.max()) if len(i) else 0
    if capacity is None:
        capacity = max(1, int(np.ceil(max_count * capacity_multiplier)))
    nbrs, max_count = pack(i, j, S, len(positions), capacity)
    return NeighborList(
        neighbors=Neighbors(jnp.asarray(nbrs.idx), jnp.asarray(nbrs.shifts),
                            jnp.asarray(nbrs.mask)),
        cutoff=float(cutoff),
        skin=float(skin),
        reference_positions=positions,
        reference_cell=cell,
        pbc=pbc,
        max_count=max_count,
        shift_bound=image_bound(cell, pbc, cutoff + skin),
    )


def image_bound(cell, pbc, reach: float) -> float:
    """Upper bound of |S| (Euclidean norm of integer image shifts) for pairs within ``reach``."""
    cell = np.asarray(cell, dtype=np.float64)
    bound = np.zeros(3)
    if np.any(pbc):
        inv = np.linalg.pinv(cell)
        # width of the cell perpendicular to the other two vectors = 1 / |column of inverse|
        heights = 1.0 / np.maximum(np.linalg.norm(inv, axis=0), 1e-300)
        bound = np.where(pbc, np.ceil(reach / heights) + 1.0, 0.0)
    return float(np.linalg.norm(bound))


def needs_rebuild(reference_positions, reference_cell, positions, cell, skin: float,
                  shift_bound: float) -> bool:
    """Host test (numpy): True when a pair may have crossed the listed range ``cutoff + skin``.

    A pair vector changes by at most 2·max|Δx| + |S|·‖Δcell‖₂, with |S| ≤ ``shift_bound``
    (see :func:`image_bound`); the list stays exact while that is ≤ ``skin``. Numpy, not
    jnp: the ASE calculator calls it on every evaluation, and eager jnp ops would dispatch
    (and compile) on the device each time. The MD loop's on-device test is
    :func:`mtpjax.cell_list.is_stale`.
    """
    disp = np.linalg.norm(np.asarray(positions, np.float64)
                          - np.asarray(reference_positions, np.float64), axis=-1)
    dcell = np.linalg.norm(np.asarray(cell, np.float64) - np.asarray(reference_cell, np.float64),
                           ord=2)
    return bool(2.0 * disp.max(initial=0.0) + shift_bound * dcell > skin)


def in_range(neighbors: Neighbors, positions, cell, cutoff: float) -> np.ndarray:
    """Which listed entries lie within ``cutoff`` now: bool [N, C] (host, numpy).

    ``neighbors``: idx int [N, C], shifts [N, C, 3] (integer image shifts S), mask bool [N, C]
    as numpy arrays, e.g. a skin list from :func:`allocate`; positions float [N, 3] (Å); cell
    float [3, 3] (rows = lattice vectors). An entry is in range when
    |x_j + S·cell − x_i| < ``cutoff`` (Å).
    """
    idx, shifts, mask = neighbors
    positions = np.asarray(positions, np.float64)
    vec = positions[idx] - positions[:, None, :] + shifts @ np.asarray(cell, np.float64)
    return mask & (np.einsum("njk,njk->nj", vec, vec) < cutoff * cutoff)


def compact(neighbors: Neighbors, inside: np.ndarray, capacity: int | None = None,
            n_rows: int | None = None) -> Neighbors:
    """The entries ``inside`` (from :func:`in_range`) moved to the front of their rows in their
    listed order, in ``[n_rows, capacity]`` numpy arrays: a Verlet list's per-step distance
    check, on the host.

    A skin list holds every pair within ``cutoff + skin`` of its build geometry, and a padded
    evaluation pays for every column, in range or not (a 0.5 Å skin on a 5 Å cutoff: ~1.5× the
    pairs that count); compacting 1000 atoms costs about a millisecond of numpy.

    Args:
        neighbors: numpy idx int [N, C], shifts [N, C, 3], mask bool [N, C].
        inside: bool [N, C], the entries to keep.
        capacity: columns of the result (default: the largest count, at least 1).
        n_rows: rows of the result ≥ N (padding rows: own index, no entries); default N.

    Returns:
        Neighbors of numpy arrays: idx int32 [n_rows, capacity], shifts int32
        [n_rows, capacity, 3], mask bool [n_rows, capacity].

    Raises:
        NeighborOverflowError: an atom has more than ``capacity`` entries inside.
    """
    idx, shifts, _ = neighbors
    n, listed = idx.shape
    n_rows = n if n_rows is None else n_rows
    max_count = int(inside.sum(axis=1).max(initial=0))
    capacity = max(max_count, 1) if capacity is None else capacity
    if max_count > capacity:
        raise NeighborOverflowError(
            f"an atom has {max_count} neighbours but the buffer holds {capacity}")
    take = min(capacity, listed)
    order = np.argsort(~inside, axis=1, kind="stable")[:, :take]  # entries inside first
    out_idx = np.broadcast_to(np.arange(n_rows, dtype=np.int32)[:, None],
                              (n_rows, capacity)).copy()
    out_shifts = np.zeros((n_rows, capacity, 3), dtype=np.int32)
    out_mask = np.zeros((n_rows, capacity), dtype=bool)
    out_idx[:n, :take] = np.take_along_axis(idx, order, axis=1)
    out_shifts[:n, :take] = np.rint(np.take_along_axis(shifts, order[:, :, None], axis=1))
    out_mask[:n, :take] = np.take_along_axis(inside, order, axis=1)
    return Neighbors(out_idx, out_shifts, out_mask)


def update(nl: NeighborList, positions, cell=None, *, force: bool = False,
           allow_grow: bool = True, growth: float = 1.25) -> NeighborList:
    """Return ``nl`` if still valid for ``positions``/``cell``, otherwise a rebuilt list.

    A rebuild keeps the capacity (so jit-compiled functions are not recompiled) unless an atom
    now has more neighbours: then the buffer grows by ``growth`` (or
    :class:`NeighborOverflowError` is raised when ``allow_grow`` is False).
    """
    cell = nl.reference_cell if cell is None else np.asarray(cell, dtype=np.float64)
    stale = force or bool(
        needs_rebuild(nl.reference_positions, nl.reference_cell, positions, cell, nl.skin,
                      nl.shift_bound)
    )
    if not stale:
        return nl
    positions, cell, pbc = validate_geometry(positions, cell, nl.pbc)
    i, j, S = pair_list(positions, cell, pbc, nl.cutoff + nl.skin)
    counts = np.bincount(i, minlength=len(positions))
    needed = int(counts.max()) if len(i) else 0
    capacity = nl.capacity
    if needed > capacity:
        if not allow_grow:
            raise NeighborOverflowError(
                f"an atom has {needed} neighbours but the buffer holds {capacity}"
            )
        capacity = max(needed, int(np.ceil(capacity * growth)))
    nbrs, max_count = pack(i, j, S, len(positions), capacity)
    return NeighborList(
        neighbors=Neighbors(jnp.asarray(nbrs.idx), jnp.asarray(nbrs.shifts),
                            jnp.asarray(nbrs.mask)),
        cutoff=nl.cutoff,
        skin=nl.skin,
        reference_positions=positions,
        reference_cell=cell,
        pbc=pbc,
        max_count=max_count,
        shift_bound=image_bound(cell, pbc, nl.cutoff + nl.skin),
    )
