"""Memory-lean neighbour rows for MD, built block by block and per shard (host, numpy).

:func:`mtpjax.neighbors.allocate` builds the pair list of *all* atoms at once (ASE or matscipy)
and packs it into ``[N, J]`` arrays with float64 image shifts: at 10⁶ atoms with a 6 Å reach
that is ~5·10⁷ pairs, several GB of temporaries and a 1.7 GB shift array. Here instead:

* :class:`CellBins` sorts the atoms once into a cell list in *fractional* coordinates (bins
  along each lattice vector, ``nb_d = ⌊h_d / reach⌋`` bins of height h_d/nb_d ≥ reach; h_d the
  distance between opposite cell faces; half-height bins were measured 3× slower in numpy).
  Two atoms closer than ``reach`` differ in fractional coordinate d by less than reach/h_d,
  i.e. by at most ``m_d = ⌊reach·nb_d/h_d⌋ + 1`` bins, so
  scanning bin offsets −m_d…m_d with periodic wrap finds every pair, in any triclinic cell. A
  cell thinner than the reach has one bin and m_d > 1: the offsets then visit the same bin
  with different image shifts, which gives every image of every atom (and the atom's own
  images) exactly once, as ASE does — exact for cells smaller than the cutoff.
* :func:`build_rows` finds the pairs of a range of central atoms (a shard's rows) in chunks of
  ``chunk`` atoms, so the temporaries are O(chunk), and returns them compactly (int32 j,
  small-integer shifts S, counts); :func:`pack_rows` writes them straight into the padded
  ``[n, J]`` arrays a device needs (``shifts`` as int8 when |S| ≤ 127: the jitted step casts
  them to the float dtype).
* :func:`build_sharded` does that for each shard (device) of the atom axis in turn: no global
  ``[N, J]`` array exists on the host; a shard's padded rows exist only until they are placed
  on their device.

Rows hold, for each central atom i, all (j, S) with 0 < |x_j + S·cell − x_i| < reach (the
pairs of :func:`mtpjax.neighbors.pair_list`), sorted by (j, S). Fully periodic cells only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

#: central atoms per chunk of the host build (temporaries ≈ chunk · 27·(atoms per bin) · 60 B)
BUILD_CHUNK = 4096


class CompactRows(NamedTuple):
    """Pairs of central atoms ``start..stop-1``, sorted by (row, j, S).

    j: int32 [P]; shifts: int16 [P, 3] integer image shifts; counts: int32 [stop − start].
    """

    start: int
    stop: int
    j: np.ndarray
    shifts: np.ndarray
    counts: np.ndarray

    @property
    def max_count(self) -> int:
        return int(self.counts.max()) if len(self.counts) else 0


def cell_heights(cell) -> np.ndarray:
    """Distances between opposite faces of the cell (Å), [3]."""
    inv = np.linalg.inv(np.asarray(cell, dtype=np.float64))
    return 1.0 / np.linalg.norm(inv, axis=0)


@dataclass
class CellBins:
    """A fractional-coordinate cell list of all atoms (O(N) host memory).

    wrapped: float [N, 3] positions wrapped into the cell; wrap: int [N, 3] with
    positions = wrapped + wrap·cell; bin_of: int [N, 3]; order: atoms sorted by bin;
    bin_start: int [nbins + 1]; nb: bins per lattice direction; offsets: int [K, 3] bin offsets
    to scan.
    """

    cell: np.ndarray
    reach: float
    wrapped: np.ndarray
    wrap: np.ndarray
    bin_of: np.ndarray
    order: np.ndarray
    bin_start: np.ndarray
    nb: np.ndarray
    offsets: np.ndarray

    @classmethod
    def build(cls, positions, cell, reach: float, max_bins: int | None = None,
              bins_per_reach: int = 1) -> CellBins:
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64)
        if reach <= 0:
            raise ValueError(f"reach must be > 0, got {reach}")
        n = len(positions)
        heights = cell_heights(cell)
        nb = np.maximum(np.floor(bins_per_reach * heights / reach).astype(np.int64), 1)
        # sparse systems: at most ~max_bins bins (coarser bins stay exact, only slower)
        max_bins = max(1, 2 * n) if max_bins is None else max_bins
        while np.prod(nb) > max_bins and nb.max() > 1:
            nb = np.maximum(nb // 2, 1)
        m = np.floor(reach * nb / heights).astype(np.int64) + 1
        frac = positions @ np.linalg.inv(cell)
        wrap = np.floor(frac)
        f = frac - wrap
        wrapped = positions - wrap @ cell
        bin_of = np.minimum(np.floor(f * nb).astype(np.int64), nb - 1)
        bin_of = np.maximum(bin_of, 0)
        flat = (bin_of[:, 0] * nb[1] + bin_of[:, 1]) * nb[2] + bin_of[:, 2]
        order = np.argsort(flat, kind="stable").astype(np.int64)
        counts = np.bincount(flat, minlength=int(np.prod(nb)))
        bin_start = np.concatenate([[0], np.cumsum(counts)])
        grids = np.meshgrid(*[np.arange(-k, k + 1) for k in m], indexing="ij")
        offsets = np.stack([g.reshape(-1) for g in grids], axis=1)
        return cls(cell, float(reach), wrapped, wrap.astype(np.int64), bin_of, order,
                   bin_start, nb, offsets)


def build_rows(bins: CellBins, start: int, stop: int, chunk: int = BUILD_CHUNK,
               as_chunks: bool = False):
    """All pairs (j, S) within ``bins.reach`` of central atoms ``start..stop-1``: one
    :class:`CompactRows`, or (``as_chunks``) a list of them, one per chunk of central atoms
    (no concatenated copy; :func:`pack_rows` takes either)."""
    n_atoms = len(bins.wrapped)
    start, stop = max(0, int(start)), min(int(stop), n_atoms)
    parts = [CompactRows(lo, min(lo + chunk, stop), *_chunk_pairs(bins, lo, min(lo + chunk, stop)))
             for lo in range(start, max(stop, start), chunk)]
    if as_chunks:
        return parts or [_empty_rows(start, stop)]
    if not parts:
        return _empty_rows(start, stop)
    return CompactRows(start, stop, np.concatenate([r.j for r in parts]),
                       np.concatenate([r.shifts for r in parts]),
                       np.concatenate([r.counts for r in parts]))


def _empty_rows(start, stop):
    return CompactRows(start, stop, np.zeros(0, np.int32), np.zeros((0, 3), np.int16),
                       np.zeros(max(stop - start, 0), np.int32))


def _chunk_pairs(bins: CellBins, lo: int, hi: int):
    nb, cell, reach2 = bins.nb, bins.cell, bins.reach ** 2
    centers = np.arange(lo, hi)
    c = len(centers)
    k = len(bins.offsets)
    # neighbour bin (and its image) of every (center, offset)
    nbin = bins.bin_of[centers][:, None, :] + bins.offsets[None, :, :]  # [c, K, 3]
    image = np.floor_divide(nbin, nb)
    nbin -= image * nb
    flat = ((nbin[..., 0] * nb[1] + nbin[..., 1]) * nb[2] + nbin[..., 2]).reshape(-1)
    first = bins.bin_start[flat]
    count = bins.bin_start[flat + 1] - first
    total = int(count.sum())
    # expand every (center, offset) into the atoms of its bin
    src = np.repeat(np.arange(c * k), count)
    pos_in_bin = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    cand = bins.order[first[src] + pos_in_bin]
    image = image.reshape(-1, 3)
    # per (center, offset): image·cell − w_i, so that r = w_j + base (one gather per pair)
    base = (image.astype(np.float64) @ cell).reshape(c, k, 3) - bins.wrapped[lo:hi, None, :]
    d = bins.wrapped[cand] + base.reshape(-1, 3)[src]
    d2 = np.einsum("pa,pa->p", d, d)
    keep = d2 < reach2
    src, cand = src[keep], cand[keep]
    row = src // k
    img = image[src]
    own = (cand == lo + row) & ~np.any(img != 0, axis=1)  # the atom itself (r = 0)
    if own.any():
        row, cand, img = row[~own], cand[~own], img[~own]
    # shifts relative to the unwrapped positions: x_j + S·cell − x_i = w_j + img·cell − w_i
    shifts = img - bins.wrap[cand] + bins.wrap[lo + row]
    order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], cand, row))
    counts = np.bincount(row, minlength=c).astype(np.int32)
    return (cand[order].astype(np.int32), shifts[order].astype(np.int16), counts)


def shift_dtype(max_abs: int):
    """Smallest integer dtype for image shifts (int8 when |S| ≤ 127)."""
    return np.int8 if max_abs <= 127 else np.int16 if max_abs <= 32767 else np.int32


def pack_rows(rows, n_rows: int, capacity: int, shifts_dtype=np.int8):
    """Padded rows (idx int32 [n_rows, J], shifts [n_rows, J, 3], mask bool [n_rows, J]) from
    a :class:`CompactRows` or a list of consecutive ones (row 0 = the first one's ``start``).

    Rows past the last ``stop`` (padding atoms of the last shard) and empty slots point at the
    row's own atom with zero shift and are masked out (as :func:`mtpjax.neighbors.pack`).
    """
    parts = [rows] if isinstance(rows, CompactRows) else list(rows)
    first = parts[0].start
    max_count = max(r.max_count for r in parts)
    if max_count > capacity:
        from mtpjax.neighbors import NeighborOverflowError

        raise NeighborOverflowError(
            f"an atom has {max_count} neighbours but the buffer holds {capacity}")
    idx = np.empty((n_rows, capacity), dtype=np.int32)
    idx[:] = np.arange(first, first + n_rows, dtype=np.int32)[:, None]
    shifts = np.zeros((n_rows, capacity, 3), dtype=shifts_dtype)
    mask = np.zeros((n_rows, capacity), dtype=bool)
    for part in parts:  # chunk by chunk: the index temporaries stay O(chunk)
        counts = part.counts
        if not len(part.j):
            continue
        starts = np.cumsum(counts) - counts
        r = np.repeat(np.arange(len(counts)), counts)
        slot = np.arange(len(part.j)) - starts[r]
        r += part.start - first
        idx[r, slot] = part.j
        shifts[r, slot] = part.shifts
        mask[r, slot] = True
    return idx, shifts, mask


def build_sharded(positions, cell, reach: float, n_shards: int, shard_size: int,
                  shards=None, chunk: int = BUILD_CHUNK):
    """Compact rows of each shard ``d`` (central atoms ``d·shard_size … (d+1)·shard_size − 1``,
    real atoms only), for the shards in ``shards`` (default: all)."""
    bins = CellBins.build(positions, cell, reach)
    shards = range(n_shards) if shards is None else shards
    return {d: build_rows(bins, d * shard_size, (d + 1) * shard_size, chunk) for d in shards}


class MDNeighborList:
    """Host state of the sharded neighbour list of a run (what :mod:`md.runner` keeps).

    The rows of shard d are the central atoms ``d·shard_size … (d+1)·shard_size − 1`` (padding
    atoms beyond ``n_atoms`` get empty rows). :meth:`build` finds the pairs of the shards in
    ``shards`` only (the ones this process feeds); :meth:`packed` pads one shard's rows to the
    common capacity J. Capacity: ``⌈max_count · capacity_multiplier⌉`` at the first build; a
    rebuild keeps it (no recompilation) unless an atom has more neighbours, then it grows by
    ``growth`` (as :func:`mtpjax.neighbors.update`).

    Attributes: cutoff, skin (Å); capacity; max_count (largest row at the last build);
    shift_bound (:func:`mtpjax.neighbors.image_bound`); shifts_dtype (int8 unless an image
    shift exceeds ±127; it only ever widens); reallocations.
    """

    def __init__(self, cutoff: float, skin: float, n_atoms: int, n_shards: int,
                 shard_size: int, capacity_multiplier: float = 1.25, growth: float = 1.25,
                 chunk: int = BUILD_CHUNK):
        if cutoff <= 0 or skin < 0:
            raise ValueError(f"need cutoff > 0 and skin ≥ 0, got {cutoff}, {skin}")
        self.cutoff, self.skin = float(cutoff), float(skin)
        self.n_atoms, self.n_shards, self.shard_size = int(n_atoms), int(n_shards), \
            int(shard_size)
        self.capacity_multiplier, self.growth, self.chunk = capacity_multiplier, growth, chunk
        self.capacity: int | None = None
        self.max_count = 0
        self.shift_bound = 0.0
        self.shifts_dtype = np.int8
        self.reallocations = 0
        self._rows: dict[int, list[CompactRows]] = {}

    @property
    def reach(self) -> float:
        return self.cutoff + self.skin

    def build(self, positions, cell, shards=None, allgather_max=None) -> None:
        """Find the pairs of ``shards`` (default: all) at ``positions`` [N, 3] / ``cell``.

        ``allgather_max``: optional function combining (max_count, max |S|) over processes
        (multi-host), so that every process picks the same capacity and dtype.
        """
        from mtpjax.neighbors import image_bound

        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64)
        if positions.shape != (self.n_atoms, 3):
            raise ValueError(f"expected positions [{self.n_atoms}, 3], got {positions.shape}")
        if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(cell))):
            raise ValueError("positions or cell contain NaN or infinite values")
        bins = CellBins.build(positions, cell, self.reach)
        shards = range(self.n_shards) if shards is None else list(shards)
        self._rows = {}
        for d in shards:
            lo = d * self.shard_size
            self._rows[d] = build_rows(bins, lo, min(lo + self.shard_size, self.n_atoms),
                                       self.chunk, as_chunks=True)
        del bins
        parts = [r for rows in self._rows.values() for r in rows]
        stats = np.array([max((r.max_count for r in parts), default=0),
                          max((int(np.abs(r.shifts).max()) if len(r.shifts) else 0
                               for r in parts), default=0)])
        if allgather_max is not None:
            stats = np.asarray(allgather_max(stats))
        self.max_count, max_shift = int(stats[0]), int(stats[1])
        if self.capacity is None:
            self.capacity = max(1, int(np.ceil(self.max_count * self.capacity_multiplier)))
        elif self.max_count > self.capacity:
            self.capacity = max(self.max_count, int(np.ceil(self.capacity * self.growth)))
            self.reallocations += 1
        if np.dtype(shift_dtype(max_shift)).itemsize > np.dtype(self.shifts_dtype).itemsize:
            self.shifts_dtype = shift_dtype(max_shift)
        self.shift_bound = image_bound(cell, np.ones(3, bool), self.reach)

    def packed(self, d: int):
        """Padded numpy rows (idx int32 [shard_size, J], shifts [shard_size, J, 3] int,
        mask bool [shard_size, J]) of shard ``d`` (built by the last :meth:`build`)."""
        return pack_rows(self._rows[d], self.shard_size, self.capacity, self.shifts_dtype)

    def release(self) -> None:
        """Drop the compact host rows (once placed on the devices)."""
        self._rows = {}
