"""The on-device neighbour list: a cell list built and rebuilt inside ``jit`` (fully periodic).

One builder for MD (``md/``) and for jax-md users (:func:`md.energy.neighbor_list_fn`); the
host builder :func:`mtpjax.neighbors.pair_list` (ASE / matscipy) serves the calculator and
fitting (any periodicity) and is the reference this module is tested against.

Algorithm (all shapes static, so one compile per :class:`CellListSpec`):

* atoms are binned in *fractional* coordinates: ``nb_d`` bins along lattice vector d, each at
  least ``reach = cutoff + skin`` high (h_d = distance between opposite cell faces). Two atoms
  closer than ``reach`` differ by at most ``m_d = ⌊reach·nb_d/h_d⌋ + 1`` bins along d, so
  scanning the ``K = Π(2m_d + 1)`` bin offsets with periodic wrap finds every pair in any
  triclinic cell. A cell thinner than 2·reach has ``nb_d ≤ 2`` and the offsets then visit one
  bin several times *with different image shifts*: every image of every atom (and the atom's
  own images) is found once, exactly as the host builder does — cells smaller than the cutoff
  need no separate path, only more offsets.
* the bins are a dense table ``[n_bins, B]`` of atom indices (B = ``bin_capacity``), filled
  from one argsort of the bin ids; each central atom scans its K·B candidates, keeps those
  with 0 < |x_j + S·cell − x_i| < reach and compacts them in scan order into ``J =
  capacity`` slots (``[N, J]`` rows with integer image shifts S, int8).
* nothing is truncated silently: the build returns the largest row and bin counts it needed
  and a ``did_buffer_overflow`` flag (row > J, bin > B, an image shift outside int8, or a cell
  so deformed that ``m`` no longer covers the reach); the caller re-plans with larger buffers
  (:func:`grow`) and recomputes from a state where the old list was valid.

Validity (:func:`is_stale`): the list holds every pair with |r| < reach at the reference
fractional coordinates s⁰ and cell h⁰. For the current s, h, with M = (h⁰)⁻¹h, any pair absent
from the list has |r| ≥ σ_min(M)·reach − 2·max_i |(s_i − s⁰_i)·h|, so the list is exact while
that bound is ≥ ``cutoff``. Displacements are measured in scaled coordinates, so a homogeneous
deformation (an NPT cell) only uses up the skin through σ_min(M): a 1 % compression of a
5 + 1 Å list costs 0.06 Å of skin, not 1 % of the box length.

Units: Å. Positions [N, 3], cell [3, 3] with lattice vectors as rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mtpjax.potential import Neighbors
from mtpjax.precision import highest_precision

#: central atoms per chunk of a build (temporaries ≈ chunk · K · B · 40 B): small chunks
#: keep the candidates in cache on CPUs (128: 2.5x faster than 4096 here), large ones fill
#: a GPU
BUILD_CHUNK = {"cpu": 128, "default": 16384}


def default_chunk() -> int:
    """:data:`BUILD_CHUNK` for the default JAX backend."""
    return BUILD_CHUNK.get(jax.default_backend(), BUILD_CHUNK["default"])


@dataclass(frozen=True)
class CellListSpec:
    """Static shape of a cell list (hashable: one compile per distinct spec).

    cutoff, skin: Å (rows hold pairs within ``cutoff + skin``). nb: bins per lattice vector;
    m: bin offsets scanned per direction (−m…m); bin_capacity: B atoms per bin;
    capacity: J entries per row; chunk: central atoms per build chunk.
    """

    cutoff: float
    skin: float
    nb: tuple[int, int, int]
    m: tuple[int, int, int]
    bin_capacity: int
    capacity: int
    chunk: int = 128

    @property
    def reach(self) -> float:
        return self.cutoff + self.skin

    @property
    def n_bins(self) -> int:
        return int(np.prod(self.nb))

    def offsets(self) -> np.ndarray:
        """Bin offsets int [K, 3] scanned around each atom's bin."""
        grids = np.meshgrid(*[np.arange(-k, k + 1) for k in self.m], indexing="ij")
        return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int32)


@partial(jax.tree_util.register_dataclass,
         data_fields=["idx", "shifts", "mask", "frac_ref", "cell_ref", "max_count",
                      "max_bin_count", "did_buffer_overflow", "rebuilds"],
         meta_fields=["spec"])
@dataclass(frozen=True)
class CellList:
    """A neighbour list of ``n`` central atoms and its build state (a JAX pytree).

    idx: int32 [n, J] neighbour indices into all N atoms (the row's own atom in empty slots);
    shifts: int8 [n, J, 3] image shifts S relative to the positions given at the build
    (x_j + S·cell − x_i is the pair vector); mask: bool [n, J] real entries;
    frac_ref: float [N, 3] fractional coordinates of all atoms at the build; cell_ref: [3, 3];
    max_count, max_bin_count: int32 () largest row / bin needed at the last build;
    did_buffer_overflow: bool () the last build did not fit ``spec`` (the rows are then
    incomplete and must not be used); rebuilds: int32 () builds since allocation.
    spec: the static :class:`CellListSpec`.
    """

    idx: jax.Array
    shifts: jax.Array
    mask: jax.Array
    frac_ref: jax.Array
    cell_ref: jax.Array
    max_count: jax.Array
    max_bin_count: jax.Array
    did_buffer_overflow: jax.Array
    rebuilds: jax.Array
    spec: CellListSpec = field(metadata={"static": True})

    @property
    def neighbors(self) -> Neighbors:
        """The core's :class:`~mtpjax.potential.Neighbors` view (shifts cast at use)."""
        return Neighbors(self.idx, self.shifts, self.mask)


def cell_heights(cell):
    """Distances between opposite faces of the cell (Å), [3] (numpy or jnp)."""
    xp = jnp if isinstance(cell, jax.Array) else np
    inv = xp.linalg.inv(cell)
    return 1.0 / xp.linalg.norm(inv, axis=0)


def _bins_for(heights: np.ndarray, reach: float, n_atoms: int, slack: float):
    nb = np.maximum(np.floor(heights / (reach * (1.0 + slack))).astype(np.int64), 1)
    while np.prod(nb) > max(2 * n_atoms, 1) and nb.max() > 1:  # sparse systems
        nb = np.maximum(nb // 2, 1)
    m = np.floor(reach * nb / heights).astype(np.int64) + 1
    return tuple(int(x) for x in nb), tuple(int(x) for x in m)


def plan(positions, cell, cutoff: float, skin: float, capacity_multiplier: float = 1.25,
         bin_multiplier: float = 1.25, slack: float = 0.05, chunk: int | None = None,
         centers: int | None = None) -> CellListSpec:
    """Size a :class:`CellListSpec` for ``positions`` [N, 3] / ``cell`` (host, numpy).

    Bins are ≥ reach·(1 + ``slack``) high, so that a cell compressed by up to ``slack`` keeps
    its bin grid. B = ⌈largest bin · ``bin_multiplier``⌉; J = ⌈largest row ·
    ``capacity_multiplier``⌉ (the largest row is found by one device build).
    ``centers``: rows of the first ``centers`` atoms only (default: all). ``chunk``: central
    atoms per build chunk (default :func:`default_chunk`).
    """
    chunk = default_chunk() if chunk is None else int(chunk)
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    if cutoff <= 0 or skin < 0:
        raise ValueError(f"need cutoff > 0 and skin ≥ 0, got {cutoff}, {skin}")
    if positions.ndim != 2 or positions.shape[1] != 3 or cell.shape != (3, 3):
        raise ValueError(f"expected positions [N, 3] and cell [3, 3], got {positions.shape}, "
                         f"{cell.shape}")
    if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(cell))):
        raise ValueError("positions or cell contain NaN or infinite values")
    if abs(np.linalg.det(cell)) < 1e-8:
        raise ValueError(f"singular cell (volume {np.linalg.det(cell):.3g} Å^3)")
    n = len(positions)
    reach = cutoff + skin
    nb, m = _bins_for(cell_heights(cell), reach, n, slack)
    frac = positions @ np.linalg.inv(cell)
    f = frac - np.floor(frac)
    b = np.clip(np.floor(f * np.asarray(nb)).astype(np.int64), 0, np.asarray(nb) - 1)
    flat = (b[:, 0] * nb[1] + b[:, 1]) * nb[2] + b[:, 2]
    max_bin = int(np.bincount(flat, minlength=int(np.prod(nb))).max()) if n else 0
    bin_capacity = max(1, math.ceil(max_bin * bin_multiplier))
    # a first guess of J from the density; one build gives the exact largest row
    density = n / abs(np.linalg.det(cell))
    guess = max(8, math.ceil(4.0 / 3.0 * math.pi * reach ** 3 * density * 2.0))
    spec = CellListSpec(float(cutoff), float(skin), nb, m, bin_capacity, guess,
                        int(min(chunk, max(n, 1))))
    with jax.enable_x64(True):
        nl = allocate(spec, positions, cell, centers=centers)
    needed = int(nl.max_count)
    return replace(spec, capacity=max(1, math.ceil(needed * capacity_multiplier)))


def grow(spec: CellListSpec, nl: CellList, cell=None, growth: float = 1.25,
         slack: float = 0.05, n_atoms: int | None = None) -> CellListSpec:
    """A spec large enough for what the overflowing build ``nl`` needed (host).

    Row and bin capacities grow to at least ``growth`` × the counts found; the bin grid is
    re-derived from ``cell`` only if the current one no longer covers the reach.
    """
    max_count, max_bin = int(nl.max_count), int(nl.max_bin_count)
    capacity = max(spec.capacity, math.ceil(max_count * growth))
    bin_capacity = max(spec.bin_capacity, math.ceil(max_bin * growth))
    nb, m = spec.nb, spec.m
    if cell is not None:
        heights = cell_heights(np.asarray(cell, dtype=np.float64))
        if np.any(spec.reach * np.asarray(nb) / heights >= np.asarray(m)):
            n = int(nl.frac_ref.shape[0]) if n_atoms is None else int(n_atoms)
            nb, m = _bins_for(heights, spec.reach, n, slack)
            # the counts were of the old grid: scale by the bin volume ratio (an estimate;
            # a further overflow gives the exact count)
            ratio = int(np.prod(spec.nb)) / int(np.prod(nb))
            bin_capacity = max(bin_capacity, math.ceil(max_bin * growth * ratio))
    return replace(spec, capacity=capacity, bin_capacity=bin_capacity, nb=nb, m=m)


def _table_index(bins, spec: CellListSpec, window):
    """Row of the bin table of (wrapped) bins int [..., 3]: the flat bin index, or with a
    ``window`` (origin [3], size (3,)) the flat index inside the window and
    ``prod(size)`` (the empty row) for bins outside it. Also: whether each bin is inside."""
    if window is None:
        flat = (bins[..., 0] * spec.nb[1] + bins[..., 1]) * spec.nb[2] + bins[..., 2]
        return flat, jnp.ones(flat.shape, bool)
    origin, size = window
    local = (bins - origin) % jnp.asarray(spec.nb, jnp.int32)
    inside = jnp.all(local < jnp.asarray(size, jnp.int32), axis=-1)
    flat = (local[..., 0] * size[1] + local[..., 1]) * size[2] + local[..., 2]
    return jnp.where(inside, flat, math.prod(size)), inside


def _bin_table(frac_wrapped, spec: CellListSpec, n_real: int, valid=None, window=None):
    """Bin index [N, 3] of every atom, the dense bin table int32 [n_table + 1, B] (N = empty
    slot; the last row stays empty; atoms ≥ ``n_real`` or with ``valid`` False are padding
    and left out), the largest bin count and whether a real atom lay outside the
    ``window`` (n_table: the bins of the window, default all)."""
    n = frac_wrapped.shape[0]
    nb = jnp.asarray(spec.nb, jnp.int32)
    b = jnp.clip(jnp.floor(frac_wrapped * nb).astype(jnp.int32), 0, nb - 1)
    n_table = spec.n_bins if window is None else math.prod(window[1])
    flat, inside = _table_index(b, spec, window)
    real = jnp.arange(n) < n_real
    if valid is not None:
        real = real & valid
    outside = jnp.any(real & ~inside)
    flat = jnp.where(real & inside, flat, n_table)  # padding: no bin
    order = jnp.argsort(flat, stable=True).astype(jnp.int32)
    sorted_bins = flat[order]
    counts = jnp.zeros(n_table, jnp.int32).at[flat].add(1, mode="drop")
    starts = jnp.cumsum(counts) - counts
    rank = jnp.arange(n, dtype=jnp.int32) - starts[jnp.minimum(sorted_bins, n_table - 1)]
    table = jnp.full((n_table + 1, spec.bin_capacity), n, jnp.int32)
    table = table.at[jnp.where(sorted_bins < n_table, sorted_bins, n_table + 1), rank].set(
        order, mode="drop")
    return b, table, jnp.max(counts, initial=0), outside


def _rows_chunk(centers, wrapped, wrap, bins, table, ptable, cell, spec: CellListSpec,
                offsets, valid_row, window=None):
    """Rows of ``centers`` (int [c]): idx [c, J], shifts int [c, J, 3], mask, counts [c]."""
    n = wrapped.shape[0]
    nb = jnp.asarray(spec.nb, jnp.int32)
    nbin = bins[centers][:, None, :] + offsets[None]  # [c, K, 3]
    image = jnp.floor_divide(nbin, nb)
    nbin = nbin - image * nb
    flat, _ = _table_index(nbin, spec, window)  # bins outside a window: the empty row
    cand = table[flat]  # [c, K, B]
    base = image.astype(wrapped.dtype) @ cell - wrapped[centers][:, None, :]  # [c, K, 3]
    d = ptable[flat] + base[:, :, None, :]  # [c, K, B, 3]
    d2 = jnp.sum(d * d, axis=-1)
    own = (cand == centers[:, None, None]) & jnp.all(image == 0, axis=-1)[:, :, None]
    keep = (cand < n) & (d2 < spec.reach ** 2) & ~own & valid_row[:, None, None]
    c, k, b = cand.shape
    keep = keep.reshape(c, k * b)
    # compaction in scan order: slot s holds the first candidate whose running count is s + 1.
    # The running count is a per-bin triangular matmul plus a K-long cumsum (exact in
    # float32: counts < 2²⁴); XLA:CPU's cumsum over K·B is 2-3x slower.
    within = keep.reshape(c, k, b).astype(jnp.float32) @ jnp.triu(jnp.ones((b, b),
                                                                          jnp.float32))
    per_bin = within[..., -1]
    running = (within + (jnp.cumsum(per_bin, axis=1) - per_bin)[..., None]).reshape(
        c, k * b).astype(jnp.int32)
    counts = running[:, -1]
    pos = jax.vmap(lambda r: jnp.searchsorted(
        r, jnp.arange(1, spec.capacity + 1, dtype=jnp.int32), method="scan"))(running)
    pos = jnp.minimum(pos, k * b - 1)
    mask = jnp.arange(spec.capacity)[None, :] < counts[:, None]
    j = jnp.take_along_axis(cand.reshape(c, k * b), pos, axis=1)
    j = jnp.where(mask, j, centers[:, None])
    img = jnp.take_along_axis(image, (pos // b)[..., None], axis=1)  # [c, J, 3]
    # S relative to the given positions: x_j + S·cell − x_i = w_j + image·cell − w_i
    shift = img - wrap[j] + wrap[centers][:, None, :]
    shift = jnp.where(mask[..., None], shift, 0)
    shift_ok = jnp.all(jnp.abs(shift) <= 127)
    idx, shifts = j.astype(jnp.int32), shift
    return idx, shifts.astype(jnp.int8), mask, counts, shift_ok


@highest_precision
def build(spec: CellListSpec, positions, cell, start=0, count: int | None = None,
          rebuilds=0, n_real: int | None = None, valid=None, window=None) -> CellList:
    """Rows of central atoms ``start … start + count − 1`` (default: all) against all atoms.

    Jit-able (``spec``, ``count`` and ``n_real`` static; ``start`` may be traced, e.g.
    ``axis_index · n`` inside ``shard_map``). Positions [N, 3] may be unwrapped: the shifts
    refer to them as given. Atoms ``≥ n_real`` (default N) are padding: never neighbours,
    and their rows are empty; so are atoms whose optional ``valid`` (bool [N], traced) is
    False (empty slots of a spatial domain, :mod:`md.domain`). ``frac_ref`` holds the rows'
    own atoms.

    ``window`` (origin int [3], traced; size (3,) ints, static): bin only the bins origin …
    origin + size − 1 (periodically) along each lattice vector, so that the bin table is
    [Π size + 1, B] instead of [n_bins + 1, B] (a spatial domain and its halo,
    :mod:`md.domain`); every atom must lie in it and every neighbour of a central atom
    within the reach too — then the rows are those of the whole-cell table, in the same
    order. A real atom outside the window sets ``did_buffer_overflow``.
    """
    n = positions.shape[0]
    count = n if count is None else int(count)
    n_real = n if n_real is None else int(n_real)
    dtype = positions.dtype
    cell = jnp.asarray(cell, dtype)
    inv = jnp.linalg.inv(cell)
    frac = positions @ inv
    wrap = jnp.floor(frac)
    fw = frac - wrap
    wrapped = positions - wrap @ cell
    wrap = wrap.astype(jnp.int32)
    bins, table, max_bin, outside = _bin_table(fw, spec, n_real, valid, window)
    # positions by bin slot [n_bins, B, 3]: candidates are gathered a bin at a time
    ptable = wrapped[jnp.minimum(table, n - 1)]
    offsets = jnp.asarray(spec.offsets())
    c = min(spec.chunk, max(count, 1))
    n_chunks = -(-count // c)

    def one(k):
        local = k * c + jnp.arange(c, dtype=jnp.int32)
        ok = (local < count) & (start + local < n_real)
        centers = jnp.minimum(start + local, n - 1).astype(jnp.int32)
        if valid is not None:
            ok = ok & valid[centers]
        return _rows_chunk(centers, wrapped, wrap, bins, table, ptable, cell, spec, offsets,
                           ok, window)

    if n_chunks == 1:
        idx, shifts, mask, counts, shift_ok = one(0)
    else:
        idx, shifts, mask, counts, shift_ok = jax.lax.map(one, jnp.arange(n_chunks))
        idx, shifts, mask, counts = (a.reshape((-1,) + a.shape[2:]) for a in
                                     (idx, shifts, mask, counts))
        shift_ok = jnp.all(shift_ok)
    idx, shifts, mask, counts = idx[:count], shifts[:count], mask[:count], counts[:count]
    max_count = jnp.max(counts, initial=0)
    heights = cell_heights(cell)
    geometry_ok = jnp.all(spec.reach * jnp.asarray(spec.nb, dtype) / heights
                          < jnp.asarray(spec.m, dtype))
    overflow = (max_count > spec.capacity) | (max_bin > spec.bin_capacity) | ~shift_ok \
        | ~geometry_ok | outside
    frac_own = jax.lax.dynamic_slice_in_dim(frac, jnp.minimum(start, n - count), count, 0)
    return CellList(idx=idx, shifts=shifts, mask=mask, frac_ref=frac_own, cell_ref=cell,
                    max_count=max_count.astype(jnp.int32),
                    max_bin_count=max_bin.astype(jnp.int32), did_buffer_overflow=overflow,
                    rebuilds=jnp.asarray(rebuilds, jnp.int32), spec=spec)


@highest_precision
def is_stale(nl: CellList, positions, cell, max_displacement=None):
    """True when the list may miss a pair within ``cutoff`` at ``positions``/``cell``.

    Whole-cell jumps (atoms wrapped since the build) are not displacements; the rows then
    need :func:`wrap_corrected` shifts.

    ``max_displacement``: optional reduction of the per-atom displacement maximum over
    devices (``lax.pmax`` inside ``shard_map``); ``positions`` and ``nl.frac_ref`` then
    hold the same atoms. Jit-able.
    """
    spec = nl.spec
    cell = jnp.asarray(cell, positions.dtype)
    frac = positions @ jnp.linalg.inv(cell)
    delta = frac - nl.frac_ref
    delta = delta - jnp.round(delta)  # an atom wrapped into the cell has not moved
    disp = jnp.linalg.norm(delta @ cell, axis=-1)
    dmax = jnp.max(disp, initial=0.0)
    if max_displacement is not None:
        dmax = max_displacement(dmax)
    deform = jnp.linalg.inv(nl.cell_ref) @ cell
    sigma_min = jnp.linalg.svd(deform, compute_uv=False)[-1]
    return sigma_min * spec.reach - 2.0 * dmax < spec.cutoff


@highest_precision
def wrap_corrected(nl: CellList, positions, cell) -> Neighbors:
    """Rows valid for ``positions`` in which atoms may have been wrapped into the cell since
    the build (as jax-md's ``shift_fn`` does): S ← S + k_i − k_j with the integer jumps
    k = round(s − s⁰). The list's own atoms must be all atoms (one block). Jit-able."""
    frac = positions @ jnp.linalg.inv(jnp.asarray(cell, positions.dtype))
    k = jnp.round(frac - nl.frac_ref).astype(jnp.int32)
    shifts = nl.shifts.astype(jnp.int32) + k[:, None, :] - k[nl.idx]
    return Neighbors(nl.idx, shifts, nl.mask)


def allocate(spec: CellListSpec, positions, cell, centers: int | None = None) -> CellList:
    """Build on the device from host or device arrays (jit-compiled per spec)."""
    positions = jnp.asarray(positions)
    return _build_jit(spec, positions, jnp.asarray(cell, positions.dtype), centers)


@partial(jax.jit, static_argnums=(0, 3))
def _build_jit(spec, positions, cell, centers):
    return build(spec, positions, cell, 0, centers)


@highest_precision
def update(nl: CellList, positions, cell, force: bool = False) -> CellList:
    """The list if still valid at ``positions``/``cell``, else a rebuild (jit-able,
    ``lax.cond``; the rebuild may set ``did_buffer_overflow``: check it)."""
    stale = is_stale(nl, positions, cell) | force
    n = nl.idx.shape[0]
    return jax.lax.cond(
        stale,
        lambda: build(nl.spec, positions, cell, 0, n, nl.rebuilds + 1),
        lambda: nl)


def repad(nl: CellList, spec: CellListSpec) -> CellList:
    """``nl`` with its rows copied into the (larger) buffers of ``spec`` (same entries, same
    order; the build state is kept), so a run can continue exactly where it overflowed."""
    extra = spec.capacity - nl.spec.capacity
    if extra < 0:
        raise ValueError("repad only grows the row capacity")
    n = nl.idx.shape[0]
    idx = jnp.concatenate([nl.idx, jnp.broadcast_to(nl.idx[:, -1:], (n, extra))], 1)
    shifts = jnp.concatenate([nl.shifts, jnp.zeros((n, extra, 3), nl.shifts.dtype)], 1)
    mask = jnp.concatenate([nl.mask, jnp.zeros((n, extra), bool)], 1)
    return replace(nl, idx=idx, shifts=shifts, mask=mask, spec=spec)


__all__ = ["BUILD_CHUNK", "CellList", "CellListSpec", "allocate", "build", "cell_heights",
           "grow", "is_stale", "plan", "repad", "update", "wrap_corrected"]
