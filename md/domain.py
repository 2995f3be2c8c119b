"""Spatial domain decomposition of MD over D devices: each device owns a brick of the cell
(a slab when only one lattice vector is cut) and receives a halo of neighbouring atoms
(``ppermute``), so memory and traffic per device scale with N/D and the domain surface, not
with N.

Geometry. The cell is cut into a grid of px × py × pz = D domains along the three lattice
vectors (scaled coordinates s = x·cell⁻¹): device d = (i·py + j)·pz + k owns the atoms whose
wrapped s lies in [i/px, (i+1)/px) × [j/py, …) × [k/pz, …). Slabs are the grid 1 × 1 × D
(or D × 1 × 1, …): one code path. Along a cut vector a every atom within ``reach = cutoff +
skin`` of a domain has s_a within w_a = reach/h_a of it (h_a the face-to-face height, so
this holds in any triclinic cell); along an uncut vector the periodic images are found by
the cell list as on one device. A domain must be at least w_a thick along every cut vector
(2w_a where the vector is cut in two: both neighbours are then one device and a strip must
not arrive twice). :func:`plan_domains` picks, among the grids whose domains are thick enough
(slabs only for D < 8), the one with the smallest halo volume; none: it declines and the
caller keeps replicated atoms (:mod:`md.sharded`). Under NPT the scaled coordinates do not
change with the cell; the thickness shrinks with it and is re-checked at every rebuild (a
rebuild that finds it too thin stops the chunk; the runner re-runs it on a grid that is thick
enough, or on replicated atoms: ``md.runner.Simulation._switch_decomposition``).

Halo (the LAMMPS staged scheme). The exchange runs in one stage per cut vector, in the
order 0, 1, 2: stage a sends to the lower / upper neighbour along a the local atoms (owned
and the halos received in the earlier stages) within w_a of the lower / upper face, so edge
and corner atoms arrive through two or three stages, never by a diagonal message, and every
atom a domain needs arrives exactly once.

What lives where (per device; C owned slots, H_a halo slots per side of stage a, M
migration slots per side, J list capacity; all static, grown on overflow):

* owned: positions, velocities, forces [C, 3], masses, species, global atom ids, valid [C];
  neighbour rows [C, J] (int32 indices into the L = C + 2·ΣH_a local atoms, int8 image
  shifts, mask) and the rows' reference scaled coordinates — a
  :class:`mtpjax.cell_list.CellList` over the local atoms;
* halo: the indices of the local atoms sent at each stage and side [2·ΣH_a] (fixed between
  rebuilds, with their masks) and the species of the received halo atoms [2·ΣH_a];
* replicated: cell, energy, virial, thermostat/barostat state, PRNG key, counters.

Per step (forward): the positions of the strip atoms go to both neighbours of every stage
(2 × ``ppermute`` of [H_a, 3] per stage); each device evaluates the site energies of its own
atoms only (each site energy once, by its owner) and sends the gradients with respect to its
halo atoms back to their senders, stage by stage in the reverse order (2 × [H_a, 3] per
stage; a gradient on a corner atom travels back through the domains that forwarded it),
which add them to their forces. The alternative — a halo of 2·reach and every pair computed
twice, no reverse traffic — sends about as many bytes (a strip twice as wide) and
duplicates the site energies of the whole inner strip: for the MTP, whose cost is the site
energy and whose site energy needs the full neighbour shell, the reverse communication is
the cheaper choice (the benchmark reports both halo sizes).

Rebuilds. A step whose list is stale (:func:`mtpjax.cell_list.is_stale`, reduced over
devices) is *not* taken: the loop marks the list ``pending`` and, before re-doing that step,
migrates atoms to the domains of their wrapped positions (owned atoms move at most skin/2
between builds, so only to a neighbour, diagonal ones through the stages: per stage 2 ×
``ppermute`` of [M, 10] floats + [M, 5] ints), selects the new strips, exchanges the halo
and builds the rows. The rejected step costs no force evaluation (``lax.cond``), and since
the Langevin noise of an atom depends only on the key and the atom's global index
(:func:`md.ensembles.atom_normal`) the re-done step draws the same numbers, so the
trajectory does not depend on D.

Overflow. A rebuild that needed more owned, halo, migration, row or bin slots than the
static buffers sets ``did_buffer_overflow`` (reduced over devices) and the chunk stops; the
runner grows the buffers (:meth:`DomainEngine.regrow`: one recompile) and re-runs the chunk
from its saved start state, as for the replicated list.

Units: Å, eV, eV/Å, amu, fs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from md.energy import local_energy_forces_virial
from md.ensembles import Comm, EnsembleSpec, MDState, Observables, make_step, observables
from md.sharded import (
    AXIS,
    ChunkResult,
    Schedule,
    Topology,
    make_chunk_loop,
    place,
    state_specs,
    targets_at,
)
from mtpjax import cell_list
from mtpjax.cell_list import CellList, CellListSpec
from mtpjax.precision import highest_precision

#: domains must be this much thicker than the halo width at setup (room for NPT compression)
SLACK = 0.05
#: spare owned / halo slots at allocation (×, +): atoms per domain fluctuate by ~√(N/D); the
#: buffers grow on overflow in any case
OWNED_SPARE = (1.05, 32)
HALO_SPARE = (1.1, 16)
#: fewest devices for which bricks (more than one cut lattice vector) are considered
BRICKS_FROM = 8


@dataclass(frozen=True)
class DomainSpec:
    """Static shape of a domain decomposition (hashable: one compile per spec).

    grid: (px, py, pz) domains along the lattice vectors (product D, one per device);
    cells: the list spec of the local atoms; owned C, halo (H_0, H_1, H_2) slots per side of
    each stage (0 along an uncut vector), migrate M (per side and stage): slots per device.
    """

    grid: tuple[int, int, int]
    cells: CellListSpec
    owned: int
    halo: tuple[int, int, int]
    migrate: int

    @property
    def n_domains(self) -> int:
        return math.prod(self.grid)

    @property
    def axes(self) -> tuple[int, ...]:
        """The cut lattice vectors, in stage order."""
        return tuple(a for a in range(3) if self.grid[a] > 1)

    @property
    def reach(self) -> float:
        return self.cells.reach

    @property
    def local(self) -> int:
        """Local atoms per device: owned + all halos."""
        return self.owned + 2 * sum(self.halo)

    @property
    def capacity(self) -> int:  # the runner reports the row capacity of its list
        return self.cells.capacity

    @property
    def bin_capacity(self) -> int:
        return self.cells.bin_capacity

    def stages(self):
        """(axis, H, offset into the send arrays, local atoms before the stage) per stage."""
        out, off, before = [], 0, self.owned
        for a in self.axes:
            h = self.halo[a]
            out.append((a, h, off, before))
            off += 2 * h
            before += 2 * h
        return out


@partial(jax.tree_util.register_dataclass,
         data_fields=["cells", "types", "ids", "valid", "send", "send_ok", "halo_types",
                      "pending", "max_owned", "max_halo", "max_migrate", "geometry_ok",
                      "did_buffer_overflow", "rebuilds"],
         meta_fields=["spec"])
@dataclass(frozen=True)
class DomainList:
    """The local atoms of one device and its neighbour rows (a pytree; shapes per device).

    cells: rows [C, J] over the L local atoms; types, ids [C] int32 (ids −1: empty), valid
    [C] bool; send [2·ΣH] int32: per stage the local atoms sent to the lower neighbour [H_a]
    then to the upper one [H_a] (indices into the local atoms before that stage), send_ok
    [2·ΣH] bool; halo_types [2·ΣH] (per stage: from below, then from above); pending: a step
    found the rows stale (rebuild before the next step); max_owned, max_halo [3] (per
    lattice vector), max_migrate: largest counts at the last rebuild (over devices);
    geometry_ok: domains thick enough and no atom jumped a whole domain; did_buffer_overflow:
    the last rebuild did not fit (rows unusable); rebuilds: builds since the first.
    """

    cells: CellList
    types: jax.Array
    ids: jax.Array
    valid: jax.Array
    send: jax.Array
    send_ok: jax.Array
    halo_types: jax.Array
    pending: jax.Array
    max_owned: jax.Array
    max_halo: jax.Array
    max_migrate: jax.Array
    geometry_ok: jax.Array
    did_buffer_overflow: jax.Array
    rebuilds: jax.Array
    spec: DomainSpec = field(metadata={"static": True})


def domain_list_specs(spec: DomainSpec) -> DomainList:
    a, r = P(AXIS), P()
    cells = CellList(idx=a, shifts=a, mask=a, frac_ref=a, cell_ref=r, max_count=r,
                     max_bin_count=r, did_buffer_overflow=r, rebuilds=r, spec=spec.cells)
    return DomainList(cells=cells, types=a, ids=a, valid=a, send=a, send_ok=a, halo_types=a,
                      pending=r, max_owned=r, max_halo=r, max_migrate=r, geometry_ok=r,
                      did_buffer_overflow=r, rebuilds=r, spec=spec)


# ---------------------------------------------------------------------- host planning


def halo_width(cell, axis: int, reach: float) -> float:
    """Halo width in scaled coordinates along ``axis``: reach / (face-to-face height)."""
    return reach / float(cell_list.cell_heights(np.asarray(cell, np.float64))[axis])


def _need(p: int, width: float) -> float:
    """Smallest domain thickness (scaled) along a vector cut in ``p`` for halo ``width``."""
    return (2.0 if p == 2 else 1.0) * width


def _thick_enough(grid, widths, slack: float = 0.0) -> bool:
    return all(1.0 / p >= _need(p, w) * (1.0 + slack)
               for p, w in zip(grid, widths, strict=True) if p > 1)


def halo_volume(grid, heights, reach: float) -> float:
    """Halo volume of one domain (Å³; exact in an orthogonal cell, proportional to it in a
    triclinic one): the domain grown by ``reach`` on both sides of every cut vector, less the
    domain (``heights`` [3]: face-to-face heights, Å)."""
    lengths = [h / p for h, p in zip(heights, grid, strict=True)]
    grown = [ln + (2.0 * reach if p > 1 else 0.0) for ln, p in zip(lengths, grid, strict=True)]
    return math.prod(grown) - math.prod(lengths)


def candidate_grids(n_domains: int, heights) -> list[tuple[int, int, int]]:
    """Grids of ``n_domains`` domains considered: slabs (one cut vector) below
    :data:`BRICKS_FROM` devices, every factorisation px·py·pz from there on."""
    divisors = [p for p in range(1, n_domains + 1) if n_domains % p == 0]
    grids = [(px, py, n_domains // (px * py)) for px in divisors for py in divisors
             if (n_domains // px) % py == 0]
    if n_domains < BRICKS_FROM:
        grids = [g for g in grids if sum(p > 1 for p in g) <= 1]
    return grids


def _describe(grid, heights) -> str:
    cut = [a for a in range(3) if grid[a] > 1]
    if len(cut) == 1:
        a = cut[0]
        return f"{grid[a]} slabs of {heights[a] / grid[a]:.3g} Å (lattice vector {a})"
    dims = " × ".join(f"{h / p:.3g}" for h, p in zip(heights, grid, strict=True))
    return f"{grid[0]}×{grid[1]}×{grid[2]} bricks of {dims} Å"


def choose_grid(cell, n_domains: int, reach: float,
                grid=None) -> tuple[tuple[int, int, int] | None, str]:
    """The grid with the smallest halo volume among the :func:`candidate_grids` whose
    domains are at least the halo thick (+:data:`SLACK`), or (None, reason). ``grid``: force
    this one (still checked)."""
    heights = cell_list.cell_heights(np.asarray(cell, np.float64))
    widths = [reach / h for h in heights]
    grids = [tuple(grid)] if grid is not None else candidate_grids(n_domains, heights)
    if grid is not None and math.prod(grid) != n_domains:
        raise ValueError(f"domain grid {grid} does not have {n_domains} domains")
    ok = [g for g in grids if _thick_enough(g, widths, SLACK)]
    if ok:
        best = min(ok, key=lambda g: (halo_volume(g, heights, reach), sum(p > 1 for p in g)))
        return best, ""
    # the least thin candidate, for the message
    # (ratios rounded: equally thin grids are named by the one with the fewest cut vectors)
    closest = max(grids, key=lambda g: (round(min((1.0 / p) / _need(p, w) for p, w in
                                                  zip(g, widths, strict=True) if p > 1), 9),
                                        -sum(p > 1 for p in g)))
    factor = "2 × " if 2 in closest else ""
    return None, (f"domain decomposition off: {_describe(closest, heights)} are thinner "
                  f"than {factor}(cutoff + skin) = {factor}{reach:.3g} Å (+{SLACK:.0%}); "
                  f"using replicated atoms on {n_domains} devices")


def _scaled(positions, cell):
    frac = np.asarray(positions, np.float64) @ np.linalg.inv(np.asarray(cell, np.float64))
    return frac - np.floor(frac)


def _coords_of(s, grid):
    """Domain coordinates [N, 3] of wrapped scaled coordinates ``s`` [N, 3]."""
    g = np.asarray(grid)
    return np.clip(np.floor(s * g).astype(np.int64), 0, g - 1)


def _flat(coords, grid):
    return (coords[..., 0] * grid[1] + coords[..., 1]) * grid[2] + coords[..., 2]


def halo_counts(s, grid, widths) -> np.ndarray:
    """Largest number of atoms any domain sends to one side at each stage [3] (host: the
    staged exchange replayed on the wrapped scaled coordinates ``s`` [N, 3]; ``widths``
    [3] scaled halo widths)."""
    coords = _coords_of(s, grid)
    out = np.zeros(3, np.int64)
    for dom in itertools.product(*(range(p) for p in grid)):
        lo = np.asarray(dom) / np.asarray(grid)
        hi = lo + 1.0 / np.asarray(grid)
        # local set: inside the domain along the vectors not yet exchanged, within the halo
        # (periodically) along those already exchanged
        inside = [coords[:, a] == dom[a] for a in range(3)]
        for a in range(3):
            if grid[a] == 1:
                continue
            local = np.logical_and.reduce(inside)
            sa = s[:, a]
            dn = np.count_nonzero(local & (sa < lo[a] + widths[a]))
            up = np.count_nonzero(local & (sa >= hi[a] - widths[a]))
            out[a] = max(out[a], dn, up)
            inside[a] = ((sa - (lo[a] - widths[a])) % 1.0) < (hi[a] - lo[a] + 2 * widths[a])
    return out


def halo_atoms(positions, cell, grid, reach: float) -> int:
    """Largest number of halo atoms of one domain (host): atoms within ``reach`` (Å) of the
    domain along its cut vectors (periodically) and not in it — the atoms its staged halo
    brings, each once. ``positions`` [N, 3] Å."""
    s = _scaled(positions, cell)
    widths = reach / cell_list.cell_heights(np.asarray(cell, np.float64))
    coords = _coords_of(s, grid)
    most = 0
    for dom in itertools.product(*(range(p) for p in grid)):
        near = np.ones(len(s), bool)
        for a in range(3):
            if grid[a] > 1:
                lo = dom[a] / grid[a] - widths[a]
                near &= ((s[:, a] - lo) % 1.0) < 1.0 / grid[a] + 2 * widths[a]
        own = np.all(coords == np.asarray(dom), axis=1)
        most = max(most, int(np.count_nonzero(near & ~own)))
    return most


def plan_domains(positions, cell, n_domains: int, cells: CellListSpec,
                 grid=None) -> tuple[DomainSpec | None, str]:
    """A :class:`DomainSpec` for ``positions`` [N, 3] / ``cell`` on ``n_domains`` devices, or
    (None, reason) when no grid has domains as thick as the halo (host, numpy). ``cells``:
    the list spec (row capacity J etc.) planned for the whole system; ``grid``: force a grid
    (e.g. (1, 1, D): slabs along vector 2)."""
    if n_domains < 2:
        return None, "one device"
    grid, why = choose_grid(cell, n_domains, cells.reach, grid)
    if grid is None:
        return None, why
    heights = cell_list.cell_heights(np.asarray(cell, np.float64))
    widths = [cells.reach / h for h in heights]
    s = _scaled(positions, cell)
    owned = np.bincount(_flat(_coords_of(s, grid), grid), minlength=n_domains)
    strips = halo_counts(s, grid, widths)
    c = int(math.ceil(owned.max() * OWNED_SPARE[0])) + OWNED_SPARE[1]
    halo = tuple(int(math.ceil(strips[a] * HALO_SPARE[0])) + HALO_SPARE[1] if grid[a] > 1
                 else 0 for a in range(3))
    m = int(math.ceil(0.25 * max(halo))) + 8
    return DomainSpec(tuple(int(p) for p in grid), cells, c, halo, m), ""


def layout(spec: DomainSpec, positions, velocities, masses, types, cell, dtype):
    """Host arrays [D·C, …] of the owned atoms of every domain (by wrapped position):
    positions, velocities, masses, types, ids, valid. Raises if a domain exceeds C."""
    d_count, c = spec.n_domains, spec.owned
    dom = _flat(_coords_of(_scaled(positions, cell), spec.grid), spec.grid)
    n = len(dom)
    order = np.argsort(dom, kind="stable")
    counts = np.bincount(dom, minlength=d_count)
    if counts.max() > c:
        raise ValueError(f"a domain holds {counts.max()} atoms, more than its {c} slots")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.empty(n, np.int64)
    slot[order] = np.arange(n) - np.repeat(starts, counts) + np.repeat(np.arange(d_count) * c,
                                                                       counts)
    total = d_count * c
    out = {
        "positions": np.zeros((total, 3), dtype), "velocities": np.zeros((total, 3), dtype),
        "masses": np.ones(total, dtype), "types": np.zeros(total, np.int32),
        "ids": np.full(total, -1, np.int32), "valid": np.zeros(total, bool)}
    out["positions"][slot] = positions
    out["velocities"][slot] = velocities
    out["masses"][slot] = masses
    out["types"][slot] = types
    out["ids"][slot] = np.arange(n)
    out["valid"][slot] = True
    return out


# ---------------------------------------------------------------------- device side


def _coords(grid):
    """This device's domain coordinates [3] int32 (inside ``shard_map``)."""
    d = lax.axis_index(AXIS)
    return jnp.stack([d // (grid[1] * grid[2]), (d // grid[2]) % grid[1], d % grid[2]])


def _shift(tree, grid, axis: int, s: int):
    """Send ``tree`` from every domain to its neighbour ``s`` (±1) steps along ``axis``."""
    perm = []
    for c in itertools.product(*(range(p) for p in grid)):
        to = list(c)
        to[axis] = (c[axis] + s) % grid[axis]
        perm.append((int(_flat(np.asarray(c), grid)), int(_flat(np.asarray(to), grid))))
    return jax.tree.map(lambda a: lax.ppermute(a, AXIS, perm), tree)


def _compact(sel, size: int):
    """Indices [size] of the first True entries of ``sel`` (0-filled), their mask, and the
    count (may exceed ``size``: an overflow)."""
    idx = jnp.nonzero(sel, size=size, fill_value=0)[0].astype(jnp.int32)
    count = jnp.sum(sel.astype(jnp.int32))
    return idx, jnp.arange(size) < count, count


def _migrate(spec: DomainSpec, state: MDState, dl: DomainList):
    """Wrap the owned atoms into the cell and move those now in another domain to it, one
    stage per cut vector (a diagonal move goes through two or three neighbours).

    Returns (state with the new owned atoms, types, ids, valid, owned count, largest
    migration count, no atom jumped further than one domain)."""
    grid, c, m = spec.grid, spec.owned, spec.migrate
    me = _coords(grid)
    cell = state.cell
    frac = state.positions @ jnp.linalg.inv(cell)
    wrap = jnp.floor(frac)
    x = state.positions - wrap @ cell
    target = jnp.clip(jnp.floor((frac - wrap) * jnp.asarray(grid, frac.dtype)).astype(jnp.int32),
                      0, jnp.asarray(grid, jnp.int32) - 1)
    floats = jnp.concatenate([x, state.velocities, state.forces, state.masses[:, None]], 1)
    ints = jnp.concatenate([jnp.stack([dl.types, dl.ids], 1), target], 1)
    keep = dl.valid
    jumped = jnp.zeros((), bool)
    n_mig = jnp.zeros((), jnp.int32)
    for a in spec.axes:
        p = grid[a]
        t = ints[:, 2 + a]
        stay = keep & (t == me[a])
        go_up = keep & ~stay & (t == (me[a] + 1) % p)
        go_dn = keep & ~stay & ~go_up & (t == (me[a] - 1) % p)
        jumped = jumped | jnp.any(keep & ~stay & ~go_up & ~go_dn)

        up, dn = _compact(go_up, m), _compact(go_dn, m)
        n_up, n_dn = up[2], dn[2]
        up = (floats[up[0]], ints[up[0]], up[1])
        dn = (floats[dn[0]], ints[dn[0]], dn[1])
        from_lo = _shift(up, grid, a, 1)
        from_hi = _shift(dn, grid, a, -1)
        floats = jnp.concatenate([floats, from_lo[0], from_hi[0]])
        ints = jnp.concatenate([ints, from_lo[1], from_hi[1]])
        keep = jnp.concatenate([stay, from_lo[2], from_hi[2]])
        n_mig = jnp.maximum(n_mig, jnp.maximum(n_up, n_dn))
    idx, ok, n_own = _compact(keep, c)
    f = jnp.where(ok[:, None], floats[idx], 0.0)
    i = ints[idx]
    state = state._replace(positions=f[:, 0:3], velocities=f[:, 3:6], forces=f[:, 6:9],
                           masses=jnp.where(ok, f[:, 9], 1.0))
    types = jnp.where(ok, i[:, 0], 0)
    ids = jnp.where(ok, i[:, 1], -1)
    return state, types, ids, ok, n_own, n_mig, ~jumped


def _take(v, idx):
    return v[idx]


def _forward(spec: DomainSpec, tree, send):
    """The local atoms: ``tree`` (a pytree of owned per-atom arrays [C, …]) followed by the
    halo received at each stage (from below [H_a], from above [H_a]), stage by stage."""
    for a, h, off, _ in spec.stages():
        dn, up = send[off:off + h], send[off + h:off + 2 * h]
        from_lo = _shift(jax.tree.map(partial(_take, idx=up), tree), spec.grid, a, 1)
        from_hi = _shift(jax.tree.map(partial(_take, idx=dn), tree), spec.grid, a, -1)
        tree = jax.tree.map(lambda v, lo, hi: jnp.concatenate([v, lo, hi]), tree, from_lo,
                            from_hi)
    return tree


def _backward(spec: DomainSpec, g, send, send_ok):
    """Gradients on the local atoms ``g`` [L, 3] folded back onto the owned atoms [C, 3]:
    the reverse of :func:`_forward`, last stage first (each halo's gradients go back to the
    domain that sent it and are added to the local atoms it sent)."""
    for a, h, off, before in reversed(spec.stages()):
        dn, up = send[off:off + h], send[off + h:off + 2 * h]
        ok_dn, ok_up = send_ok[off:off + h], send_ok[off + h:off + 2 * h]
        for_up = _shift(g[before:before + h], spec.grid, a, -1)  # my up-sends' gradients
        for_dn = _shift(g[before + h:before + 2 * h], spec.grid, a, 1)
        g = g[:before]
        g = g.at[up].add(jnp.where(ok_up[:, None], for_up, 0.0))
        g = g.at[dn].add(jnp.where(ok_dn[:, None], for_dn, 0.0))
    return g


def _strips(spec: DomainSpec, x, types, valid, cell):
    """The staged halo selection at a rebuild: (local positions [L, 3], types [L], valid
    [L], send [2·ΣH], send_ok [2·ΣH], largest strip count per vector [3], domains thick
    enough)."""
    grid = spec.grid
    me = _coords(grid).astype(x.dtype)
    heights = cell_list.cell_heights(cell)
    inv = jnp.linalg.inv(cell)
    send, send_ok, counts = [], [], [jnp.zeros((), jnp.int32)] * 3
    thick = jnp.ones((), bool)
    local = (x, types, valid)
    for a, h, _, _ in spec.stages():
        p = grid[a]
        w = spec.reach / heights[a] * (1.0 + 1e-9)
        thick = thick & (1.0 / p >= _need(p, 1.0) * w)
        s = (local[0] @ inv)[:, a]
        lo = me[a] / p
        dn, ok_dn, n_dn = _compact(local[2] & (s < lo + w), h)
        up, ok_up, n_up = _compact(local[2] & (s >= lo + 1.0 / p - w), h)
        counts[a] = jnp.maximum(n_dn, n_up)
        send += [dn, up]
        send_ok += [ok_dn, ok_up]
        lx, lt, lv = local
        from_lo = _shift((lx[up], lt[up], ok_up), grid, a, 1)
        from_hi = _shift((lx[dn], lt[dn], ok_dn), grid, a, -1)
        local = tuple(jnp.concatenate([v, lo_, hi_])
                      for v, lo_, hi_ in zip(local, from_lo, from_hi, strict=True))
    return (*local, jnp.concatenate(send), jnp.concatenate(send_ok), jnp.stack(counts),
            thick)


def bin_window_size(spec: DomainSpec) -> tuple[int, int, int]:
    """Bins of the cell list's table per lattice vector (static): along a vector cut in p,
    ⌈nb/p⌉ + 2m + 3 of the cell's nb bins (the domain, the halo — w·nb < m bins on each
    side, which the build checks —, one bin of rounding margin on each side), at most nb;
    along an uncut vector all nb."""
    return window_bins(spec.cells.nb, spec.cells.m, spec.grid)


def window_bins(nb, m, grid) -> tuple[int, int, int]:
    """:func:`bin_window_size` of a cell list with ``nb`` bins and ``m`` offsets per
    lattice vector on the domain ``grid``."""
    return tuple(min(n, -(-n // p) + 2 * k + 3) if p > 1 else n
                 for n, k, p in zip(nb, m, grid, strict=True))


def _bin_window(spec: DomainSpec, cell):
    """(origin [3] int32, size) of the bins this device's local atoms (its domain and its
    halo) can lie in (inside ``shard_map``): the cell-list table then covers the domain and
    its halo, not the whole cell."""
    size = bin_window_size(spec)
    me = _coords(spec.grid)
    heights = cell_list.cell_heights(cell)
    origin = []
    for a, (nb, p) in enumerate(zip(spec.cells.nb, spec.grid, strict=True)):
        if size[a] >= nb:
            origin.append(jnp.zeros((), jnp.int32))
            continue
        lo = me[a].astype(cell.dtype) / p - spec.reach / heights[a]
        origin.append(jnp.floor(lo * nb).astype(jnp.int32) - 1)
    return jnp.stack(origin) % jnp.asarray(spec.cells.nb, jnp.int32), size


def rebuild(spec: DomainSpec, state: MDState, dl: DomainList):
    """Migrate, exchange the halo and build the rows (inside ``shard_map``)."""
    state, types, ids, valid, n_own, n_mig, no_jump = _migrate(spec, state, dl)
    x, cell = state.positions, state.cell
    local_x, local_t, local_v, send, send_ok, n_halo, thick = _strips(spec, x, types, valid,
                                                                       cell)
    cells = cell_list.build(spec.cells, local_x, cell, 0, spec.owned, dl.rebuilds + 1,
                            valid=local_v, window=_bin_window(spec, cell))
    pmax = partial(lax.pmax, axis_name=AXIS)
    geometry_ok = pmax((~(thick & no_jump)).astype(jnp.int32)) == 0
    max_owned, max_halo, max_mig = pmax(n_own), pmax(n_halo), pmax(n_mig)
    overflow = cells.did_buffer_overflow | (n_own > spec.owned) \
        | jnp.any(n_halo > jnp.asarray(spec.halo)) | (n_mig > spec.migrate)
    overflow = (pmax(overflow.astype(jnp.int32)) > 0) | ~geometry_ok
    cells = dataclasses.replace(cells, max_count=pmax(cells.max_count),
                                max_bin_count=pmax(cells.max_bin_count),
                                did_buffer_overflow=overflow)
    dl = dataclasses.replace(
        dl, cells=cells, types=types, ids=ids, valid=valid, send=send, send_ok=send_ok,
        halo_types=local_t[spec.owned:], pending=jnp.zeros((), bool), max_owned=max_owned,
        max_halo=max_halo, max_migrate=max_mig, geometry_ok=geometry_ok,
        did_buffer_overflow=overflow, rebuilds=dl.rebuilds + 1)
    return state, dl


def _topology(dl: DomainList) -> Topology:
    return Topology(types_all=dl.types, types=dl.types, atom_mask=dl.valid, atom_ids=dl.ids)


def make_force_fn(model_spec, params, spec: DomainSpec):
    """``force_fn(x [C, 3], cell, topo, dl) -> (x, E, F [C, 3], virial, dl)`` for
    :func:`md.ensembles.make_step`; when the rows are stale it evaluates nothing and returns
    ``dl`` with ``pending`` set (the step is then re-done after a rebuild)."""

    def evaluate(x, cell, dl: DomainList):
        local = _forward(spec, x, dl.send)
        types = jnp.concatenate([dl.types, dl.halo_types])
        e, g_all, g_cen, vir = local_energy_forces_virial(
            model_spec, params, local, x, cell, types, dl.types, dl.cells.neighbors, dl.valid)
        # gradients on halo atoms go back to their owners (the reverse of _forward)
        g = _backward(spec, g_all, dl.send, dl.send_ok) + g_cen
        forces = jnp.where(dl.valid[:, None], -g, 0.0)
        return lax.psum(e, AXIS), forces, lax.psum(vir, AXIS)

    def force_fn(x, cell, topo, dl: DomainList, force_eval=False):
        if force_eval:
            e, f, vir = evaluate(x, cell, dl)
            return x, e, f, vir, dl
        stale = cell_list.is_stale(dl.cells, x, cell,
                                   max_displacement=partial(lax.pmax, axis_name=AXIS))

        def skip():
            z = jnp.zeros((), x.dtype)
            return z, jnp.zeros_like(x), jnp.zeros((3, 3), x.dtype)

        e, f, vir = lax.cond(stale, skip, lambda: evaluate(x, cell, dl))
        return x, e, f, vir, dataclasses.replace(dl, pending=stale)

    return force_fn


def make_advance(spec: DomainSpec, step):
    """``advance(state, dl, targets) -> (state, dl, ok)`` for
    :func:`md.sharded.make_chunk_loop`: rebuild first if the last step found the rows stale,
    then one step, rejected (``ok`` False, state unchanged, ``pending`` set) when stale."""

    def advance(s, dl: DomainList, targets):
        was_pending = dl.pending
        s, dl = lax.cond(dl.pending, lambda: rebuild(spec, s, dl), lambda: (s, dl))
        s1, dl1 = step(s, _topology(dl), targets, dl)
        ok = ~dl1.pending & ~dl.did_buffer_overflow
        # stale right after a rebuild: the skin is smaller than one step's motion
        stuck = dl1.pending & was_pending
        dl = dataclasses.replace(dl, pending=dl1.pending,
                                 geometry_ok=dl.geometry_ok & ~stuck,
                                 did_buffer_overflow=dl.did_buffer_overflow | stuck)
        s = jax.tree.map(lambda a, b: jnp.where(ok, a, b), s1, s)
        return s, dl, ok

    return advance


class DomainEngine:
    """Compiled functions of a domain-decomposed run (same interface as
    :class:`md.sharded.Engine` where the runner uses it).

    Args: spec, params: model; mesh: a 1-D mesh over D ≥ 2 devices; n_real: atoms N.
    """

    domain = True

    def __init__(self, spec, params, mesh: Mesh, n_real: int):
        self.mesh = mesh
        self.comm = Comm(AXIS)
        self.model_spec, self.params = spec, params
        self.n_real = n_real
        self._fns: dict = {}
        self._state_spec = state_specs()

    @property
    def n_devices(self) -> int:
        return self.mesh.size

    def _wrap(self, fn, in_specs, out_specs):
        fn = highest_precision(fn)  # no TF32 in float32 MD on GPUs (mtpjax.precision)
        return jax.jit(jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs,
                                     out_specs=out_specs, check_vma=False))

    # ---------------------------------------------------------------- compiled functions
    def init_fn(self, spec: DomainSpec):
        """``init(state, dl) -> (state, dl)``: migrate, build, first forces."""
        key = ("init", spec)
        if key not in self._fns:
            force_fn = make_force_fn(self.model_spec, self.params, spec)

            def init(state: MDState, dl: DomainList):
                state, dl = rebuild(spec, state, dl)
                x, e, f, vir, dl = force_fn(state.positions, state.cell, None, dl,
                                            force_eval=True)
                dl = dataclasses.replace(dl, rebuilds=jnp.zeros((), jnp.int32))
                return state._replace(positions=x, forces=f, energy=e, virial=vir), dl

            ds = domain_list_specs(spec)
            self._fns[key] = self._wrap(init, (self._state_spec, ds), (self._state_spec, ds))
        return self._fns[key]

    def chunk_fn(self, ens: EnsembleSpec, spec: DomainSpec, max_records: int):
        """``chunk(state, dl, topo, n_steps, record_every, schedule) -> ChunkResult`` (as
        :meth:`md.sharded.Engine.chunk_fn`; ``topo`` is unused: it lives in ``dl``)."""
        key = ("chunk", ens, spec, max_records)
        if key not in self._fns:
            self._fns[key] = self._make_chunk(ens, spec, max_records)
        fn = self._fns[key]

        def call(state, dl, topo, n_steps, record_every, schedule):
            return fn(state, dl, n_steps, record_every, schedule)

        return call

    def _make_chunk(self, ens: EnsembleSpec, spec: DomainSpec, max_records: int):
        step = make_step(ens, make_force_fn(self.model_spec, self.params, spec), self.comm)
        loop = make_chunk_loop(ens, self.comm, max_records)
        advance = make_advance(spec, step)

        def chunk(state: MDState, dl: DomainList, n_steps, record_every, schedule: Schedule):
            return loop(advance, state, dl, n_steps, record_every, schedule)

        rep = P()
        st, ds = self._state_spec, domain_list_specs(spec)
        out = ChunkResult(st, ds, rep, rep, Observables(*(rep,) * 8), rep)
        return self._wrap(chunk, (st, ds, rep, rep, Schedule(*(rep,) * 6)), out)

    def observables_fn(self, ens: EnsembleSpec):
        """``obs(state, schedule) -> Observables`` (the record of the current step)."""
        key = ("obs", ens)
        if key not in self._fns:
            comm = self.comm

            def obs(state: MDState, schedule: Schedule) -> Observables:
                return observables(ens, state, targets_at(schedule, state.step - 1), comm)

            self._fns[key] = self._wrap(obs, (self._state_spec, Schedule(*(P(),) * 6)),
                                        Observables(*(P(),) * 8))
        return self._fns[key]

    # ---------------------------------------------------------------- host <-> device
    def _put(self, tree, specs):
        return place(tree, specs, self.mesh)

    def start(self, spec: DomainSpec, state: MDState, positions, velocities, masses, types):
        """Device state and list of a run: ``state`` (host :class:`MDState` whose per-atom
        fields are ignored) filled with the atoms laid out by domain, then :meth:`init_fn`.
        Positions [N, 3] Å, velocities [N, 3] Å/fs, masses [N] amu, types [N]."""
        dtype = np.asarray(state.cell).dtype
        a = layout(spec, positions, velocities, masses, types, np.asarray(state.cell,
                                                                          np.float64), dtype)
        total = spec.n_domains * spec.owned
        state = state._replace(positions=a["positions"], velocities=a["velocities"],
                               forces=np.zeros((total, 3), dtype), masses=a["masses"])
        dl = self._empty(spec, a, dtype)
        state = self._put(state, self._state_spec)
        dl = self._put(dl, domain_list_specs(spec))
        return self.init_fn(spec)(state, dl)

    def _empty(self, spec: DomainSpec, a: dict, dtype) -> DomainList:
        d, c, h, j = spec.n_domains, spec.owned, 2 * sum(spec.halo), spec.cells.capacity
        z = np.zeros
        cells = CellList(idx=z((d * c, j), np.int32), shifts=z((d * c, j, 3), np.int8),
                         mask=z((d * c, j), bool), frac_ref=z((d * c, 3), dtype),
                         cell_ref=np.eye(3, dtype=dtype), max_count=np.int32(0),
                         max_bin_count=np.int32(0), did_buffer_overflow=np.bool_(False),
                         rebuilds=np.int32(0), spec=spec.cells)
        zi = z(d * h, np.int32)
        zb = z(d * h, bool)
        return DomainList(cells=cells, types=a["types"], ids=a["ids"], valid=a["valid"],
                          send=zi, send_ok=zb, halo_types=z(d * h, np.int32),
                          pending=np.bool_(False), max_owned=np.int32(0),
                          max_halo=np.zeros(3, np.int32),
                          max_migrate=np.int32(0), geometry_ok=np.bool_(True),
                          did_buffer_overflow=np.bool_(False), rebuilds=np.int32(0),
                          spec=spec)

    def gather(self, x, dl: DomainList) -> np.ndarray:
        """Host array [N, …] (float64 for floats) in global atom order from a per-atom device
        array [D·C, …] laid out as ``dl``. In a multi-process run each process reads only its
        addressable shards and the rows are combined with one all-gather of the owned
        atoms (``multihost_utils.process_allgather``)."""
        ids, xs = _local_rows(dl.ids), _local_rows(x)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            ids, xs = multihost_utils.process_allgather((ids, xs), tiled=True)
        keep = ids >= 0
        out = np.zeros((self.n_real,) + xs.shape[1:], np.float64 if xs.dtype.kind == "f"
                       else xs.dtype)
        out[ids[keep]] = xs[keep]
        return out

    def grown_spec(self, spec: DomainSpec, bad: DomainList, cell, growth: float):
        """A spec with room for what the overflowing rebuild ``bad`` needed (host); raises
        if the domains became too thin (an NPT compression) or the skin is too small."""
        if not bool(bad.geometry_ok):
            raise RuntimeError(
                "domain decomposition: a domain became thinner than cutoff + skin (the cell was "
                "compressed), an atom moved more than a domain, or the list went stale within "
                "one step; run on fewer devices or with decomposition = 'replicated'")
        cells = cell_list.grow(spec.cells, bad.cells, cell=cell, growth=growth,
                               n_atoms=self.n_real)
        new = dataclasses.replace(
            spec, cells=cells,
            owned=max(spec.owned, math.ceil(int(bad.max_owned) * growth)),
            halo=tuple(max(h, math.ceil(int(n) * growth)) if h else 0
                       for h, n in zip(spec.halo, np.asarray(bad.max_halo), strict=True)),
            migrate=max(spec.migrate, math.ceil(int(bad.max_migrate) * growth)))
        if new == spec:
            raise RuntimeError("domain buffers overflowed but nothing can grow")
        return new

    def regrow(self, state0: MDState, nl0: DomainList, bad: DomainList, cell, growth: float):
        """(state, list) of the chunk start ``state0``/``nl0`` laid out again in buffers that
        fit what the overflowing rebuild ``bad`` needed at ``cell`` (one recompile;
        :meth:`grown_spec`). The chunk is then re-run from there."""
        new = self.grown_spec(nl0.spec, bad, np.asarray(cell, np.float64), growth)
        host = jax.tree.map(np.asarray, state0._replace(positions=None, velocities=None,
                                                        forces=None, masses=None))
        state, dl, _ = self.start_fitting(new, host, self.gather(state0.positions, nl0),
                                          self.gather(state0.velocities, nl0),
                                          self.gather(state0.masses, nl0),
                                          self.gather(nl0.types, nl0).astype(np.int32),
                                          growth)
        return state, dataclasses.replace(dl, rebuilds=nl0.rebuilds)

    def start_fitting(self, spec: DomainSpec, state: MDState, positions, velocities, masses,
                      types, growth: float, tries: int = 8):
        """:meth:`start`, growing the buffers until the first build fits: (state, list,
        number of growths)."""
        for k in range(tries):
            st, dl = self.start(spec, state, positions, velocities, masses, types)
            if not bool(dl.did_buffer_overflow):
                return st, dl, k
            spec = self.grown_spec(spec, dl, np.asarray(state.cell, np.float64), growth)
        raise RuntimeError("the domain buffers kept overflowing at allocation")


def _local_rows(x) -> np.ndarray:
    """The rows of a sharded array held by this process, concatenated (numpy)."""
    if jax.process_count() == 1:
        return np.asarray(x)
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards])


def array_bytes(tree) -> int:
    """Bytes of the arrays of a pytree of one device's view (shapes × itemsize)."""
    return int(sum(np.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(tree)))


def bytes_sent_per_step(spec: DomainSpec, itemsize: int) -> int:
    """Bytes one device sends per step (no rebuild): per stage the positions of both strips
    [2H_a, 3] forward and the gradients of both received halos [2H_a, 3] back."""
    return 2 * (2 * sum(spec.halo) * 3 * itemsize)


def bytes_sent_per_rebuild(spec: DomainSpec, itemsize: int) -> int:
    """Extra bytes one device sends at a rebuild: per stage migration [2M, 10] floats +
    [2M, 5] int32 and mask [2M], halo types [2H_a] int32 + mask [2H_a], halo positions
    [2H_a, 3]."""
    m, h, stages = spec.migrate, sum(spec.halo), len(spec.axes)
    return stages * 2 * m * (10 * itemsize + 5 * 4 + 1) + 2 * h * (4 + 1 + 3 * itemsize)
