"""Spatial domain decomposition of MD over D devices: each device owns a slab of the cell and
receives a halo of neighbouring atoms (``ppermute``), so memory and traffic per device scale
with N/D and the slab surface, not with N.

Geometry. The cell is cut into D slabs along the lattice vector ``axis`` (the one with the
largest face-to-face height h): device d owns the atoms whose wrapped scaled coordinate
s = (x·cell⁻¹)[axis] lies in [d/D, (d+1)/D). Every atom within ``reach = cutoff + skin`` of
a slab has s within w = reach/h of it (h is the perpendicular width, so this holds in any
triclinic cell), hence lies in the slab or in the w-strips of its two neighbours — if a slab
is at least w thick (2w for D = 2, where both neighbours are one device and a strip must not
arrive twice). Thinner slabs: :func:`plan_domains` declines and the caller keeps replicated
atoms (:mod:`md.sharded`). Under NPT the scaled coordinates do not change with the cell; the
slab thickness h/D shrinks with it and is re-checked at every rebuild (a run compressed below
it stops with a clear error).

What lives where (per device; C owned slots, H halo slots per side, M migration slots per
side, J list capacity; all static, grown on overflow):

* owned: positions, velocities, forces [C, 3], masses, species, global atom ids, valid [C];
  neighbour rows [C, J] (int32 indices into the local atoms, int8 image shifts, mask) and the
  rows' reference scaled coordinates — a :class:`mtpjax.cell_list.CellList` over the C + 2H
  local atoms;
* halo: the indices of the owned atoms sent down / up [H] (fixed between rebuilds) and the
  species of the received halo atoms [2H];
* replicated: cell, energy, virial, thermostat/barostat state, PRNG key, counters.

Per step (forward): the positions of the strip atoms are sent to both neighbours (2 ×
``ppermute`` of [H, 3]); each device evaluates the site energies of its own atoms only
(each site energy once, by its owner) and sends the gradients with respect to its halo
atoms back to their owners (reverse ``ppermute`` of [H, 3] per side), which add them to
their forces. The alternative — a halo of 2·reach and every pair computed twice, no reverse
traffic — sends about as many bytes (a strip twice as wide) and duplicates the site energies
of the whole inner strip: for the MTP, whose cost is the site energy, the reverse
communication is the cheaper choice (the benchmark reports both halo sizes).

Rebuilds. A step whose list is stale (:func:`mtpjax.cell_list.is_stale`, reduced over
devices) is *not* taken: the loop marks the list ``pending`` and, before re-doing that step,
migrates atoms to the domains of their wrapped positions (owned atoms move at most skin/2
between builds, so only to a neighbour: 2 × ``ppermute`` of [M, 10] floats + [M, 2] ints),
selects the new strips, exchanges the halo and builds the rows. The rejected step costs no
force evaluation (``lax.cond``), and since the Langevin noise of an atom depends only on
the key and the atom's global index (:func:`md.ensembles.atom_normal`) the re-done step
draws the same numbers, so the trajectory does not depend on D.

Overflow. A rebuild that needed more owned, halo, migration, row or bin slots than the
static buffers sets ``did_buffer_overflow`` (reduced over devices) and the chunk stops; the
runner grows the buffers (:meth:`DomainEngine.regrow`: one recompile) and re-runs the chunk
from its saved start state, as for the replicated list.

Units: Å, eV, eV/Å, amu, fs.
"""

from __future__ import annotations

import dataclasses
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
    place,
    state_specs,
    targets_at,
)
from mtpjax import cell_list
from mtpjax.cell_list import CellList, CellListSpec

#: slabs must be this much thicker than the halo width at setup (room for NPT compression)
SLACK = 0.05
#: spare owned / halo slots at allocation (×, +): atoms per slab fluctuate by ~√(N/D); the
#: buffers grow on overflow in any case
OWNED_SPARE = (1.05, 32)
HALO_SPARE = (1.1, 16)


@dataclass(frozen=True)
class DomainSpec:
    """Static shape of a domain decomposition (hashable: one compile per spec).

    n_domains: D slabs (one per device); axis: lattice vector cut; cells: the list spec of
    the local atoms; owned C, halo H (per side), migrate M (per side): slots per device.
    """

    n_domains: int
    axis: int
    cells: CellListSpec
    owned: int
    halo: int
    migrate: int

    @property
    def reach(self) -> float:
        return self.cells.reach

    @property
    def local(self) -> int:
        """Local atoms per device: owned + both halos."""
        return self.owned + 2 * self.halo

    @property
    def capacity(self) -> int:  # the runner reports the row capacity of its list
        return self.cells.capacity

    @property
    def bin_capacity(self) -> int:
        return self.cells.bin_capacity


@partial(jax.tree_util.register_dataclass,
         data_fields=["cells", "types", "ids", "valid", "send_dn", "send_up", "ok_dn", "ok_up",
                      "halo_types", "pending", "max_owned", "max_halo", "max_migrate",
                      "geometry_ok", "did_buffer_overflow", "rebuilds"],
         meta_fields=["spec"])
@dataclass(frozen=True)
class DomainList:
    """The local atoms of one device and its neighbour rows (a pytree; shapes per device).

    cells: rows [C, J] over the C + 2H local atoms; types, ids [C] int32 (ids −1: empty),
    valid [C] bool; send_dn, send_up [H] int32 owned atoms sent to the lower / upper
    neighbour, ok_dn, ok_up [H] bool; halo_types [2H] (from below, then from above);
    pending: a step found the rows stale (rebuild before the next step); max_owned,
    max_halo, max_migrate: largest counts at the last rebuild (over devices); geometry_ok:
    slabs thick enough and no atom jumped a whole slab; did_buffer_overflow: the last
    rebuild did not fit (rows unusable); rebuilds: builds since the first.
    """

    cells: CellList
    types: jax.Array
    ids: jax.Array
    valid: jax.Array
    send_dn: jax.Array
    send_up: jax.Array
    ok_dn: jax.Array
    ok_up: jax.Array
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
    return DomainList(cells=cells, types=a, ids=a, valid=a, send_dn=a, send_up=a, ok_dn=a,
                      ok_up=a, halo_types=a, pending=r, max_owned=r, max_halo=r,
                      max_migrate=r, geometry_ok=r, did_buffer_overflow=r, rebuilds=r,
                      spec=spec)


# ---------------------------------------------------------------------- host planning


def halo_width(cell, axis: int, reach: float) -> float:
    """Halo width in scaled coordinates along ``axis``: reach / (face-to-face height)."""
    return reach / float(cell_list.cell_heights(np.asarray(cell, np.float64))[axis])


def _thick_enough(n_domains: int, width: float, slack: float = 0.0) -> bool:
    need = (2.0 if n_domains == 2 else 1.0) * width * (1.0 + slack)
    return 1.0 / n_domains >= need


def _domains_of(positions, cell, axis: int, n_domains: int):
    frac = np.asarray(positions, np.float64) @ np.linalg.inv(np.asarray(cell, np.float64))
    s = (frac - np.floor(frac))[:, axis]
    return np.clip(np.floor(s * n_domains).astype(np.int64), 0, n_domains - 1), s


def plan_domains(positions, cell, n_domains: int,
                 cells: CellListSpec) -> tuple[DomainSpec | None, str]:
    """A :class:`DomainSpec` for ``positions`` [N, 3] / ``cell`` on ``n_domains`` devices, or
    (None, reason) when a slab would be thinner than the halo (host, numpy). ``cells``: the
    list spec (row capacity J etc.) planned for the whole system."""
    heights = cell_list.cell_heights(np.asarray(cell, np.float64))
    axis = int(np.argmax(heights))
    reach = cells.reach
    w = reach / heights[axis]
    if n_domains < 2:
        return None, "one device"
    if not _thick_enough(n_domains, w, SLACK):
        factor = "2 × " if n_domains == 2 else ""
        return None, (f"domain decomposition off: {n_domains} slabs of "
                      f"{heights[axis] / n_domains:.3g} Å (lattice vector {axis}) are thinner "
                      f"than {factor}(cutoff + skin) = {factor}{reach:.3g} Å (+{SLACK:.0%}); "
                      f"using replicated atoms on {n_domains} devices")
    dom, s = _domains_of(positions, cell, axis, n_domains)
    owned = np.bincount(dom, minlength=n_domains)
    lo = dom / n_domains
    strips = np.maximum(np.bincount(dom[s < lo + w], minlength=n_domains),
                        np.bincount(dom[s >= lo + 1.0 / n_domains - w], minlength=n_domains))
    c = int(math.ceil(owned.max() * OWNED_SPARE[0])) + OWNED_SPARE[1]
    h = int(math.ceil(strips.max() * HALO_SPARE[0])) + HALO_SPARE[1]
    m = int(math.ceil(0.25 * h)) + 8
    return DomainSpec(n_domains, axis, cells, c, h, m), ""


def layout(spec: DomainSpec, positions, velocities, masses, types, cell, dtype):
    """Host arrays [D·C, …] of the owned atoms of every domain (by wrapped position):
    positions, velocities, masses, types, ids, valid. Raises if a domain exceeds C."""
    d_count, c = spec.n_domains, spec.owned
    dom, _ = _domains_of(positions, cell, spec.axis, d_count)
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


def _shift(tree, s: int, n: int):
    """Send ``tree`` from device d to device d + s (mod n)."""
    perm = [(i, (i + s) % n) for i in range(n)]
    return jax.tree.map(lambda a: lax.ppermute(a, AXIS, perm), tree)


def _compact(sel, size: int):
    """Indices [size] of the first True entries of ``sel`` (0-filled), their mask, and the
    count (may exceed ``size``: an overflow)."""
    idx = jnp.nonzero(sel, size=size, fill_value=0)[0].astype(jnp.int32)
    count = jnp.sum(sel.astype(jnp.int32))
    return idx, jnp.arange(size) < count, count


def _migrate(spec: DomainSpec, state: MDState, dl: DomainList):
    """Wrap the owned atoms into the cell and move those now in a neighbouring slab to it.

    Returns (state with the new owned atoms, types, ids, valid, owned count, largest
    migration count, no atom jumped further than one slab)."""
    n_dom, c, m = spec.n_domains, spec.owned, spec.migrate
    d = lax.axis_index(AXIS)
    cell = state.cell
    frac = state.positions @ jnp.linalg.inv(cell)
    wrap = jnp.floor(frac)
    x = state.positions - wrap @ cell
    s = (frac - wrap)[:, spec.axis]
    dom = jnp.clip(jnp.floor(s * n_dom).astype(jnp.int32), 0, n_dom - 1)
    valid = dl.valid
    stay = valid & (dom == d)
    go_up = valid & ~stay & (dom == (d + 1) % n_dom)
    go_dn = valid & ~stay & ~go_up & (dom == (d - 1) % n_dom)
    jumped = jnp.any(valid & ~stay & ~go_up & ~go_dn)
    floats = jnp.concatenate([x, state.velocities, state.forces, state.masses[:, None]], 1)
    ints = jnp.stack([dl.types, dl.ids], 1)

    def pack(sel):
        idx, ok, count = _compact(sel, m)
        return (floats[idx], ints[idx], ok), count

    up, n_up = pack(go_up)
    dn, n_dn = pack(go_dn)
    from_lo = _shift(up, 1, n_dom)
    from_hi = _shift(dn, -1, n_dom)
    all_f = jnp.concatenate([floats, from_lo[0], from_hi[0]])
    all_i = jnp.concatenate([ints, from_lo[1], from_hi[1]])
    keep = jnp.concatenate([stay, from_lo[2], from_hi[2]])
    idx, ok, n_own = _compact(keep, c)
    f = jnp.where(ok[:, None], all_f[idx], 0.0)
    i = all_i[idx]
    state = state._replace(positions=f[:, 0:3], velocities=f[:, 3:6], forces=f[:, 6:9],
                           masses=jnp.where(ok, f[:, 9], 1.0))
    types = jnp.where(ok, i[:, 0], 0)
    ids = jnp.where(ok, i[:, 1], -1)
    return state, types, ids, ok, n_own, jnp.maximum(n_up, n_dn), ~jumped


def _halo(spec: DomainSpec, x, valid, cell):
    """Strip atoms to send down / up: (send_dn, ok_dn, send_up, ok_up, largest strip count,
    slabs thick enough)."""
    n_dom, h = spec.n_domains, spec.halo
    d = lax.axis_index(AXIS)
    heights = cell_list.cell_heights(cell)
    w = spec.reach / heights[spec.axis] * (1.0 + 1e-9)
    s = (x @ jnp.linalg.inv(cell))[:, spec.axis]
    lo = d.astype(x.dtype) / n_dom
    to_dn = valid & (s < lo + w)
    to_up = valid & (s >= lo + 1.0 / n_dom - w)
    send_dn, ok_dn, n_dn = _compact(to_dn, h)
    send_up, ok_up, n_up = _compact(to_up, h)
    thick = 1.0 / n_dom >= (2.0 if n_dom == 2 else 1.0) * w
    return send_dn, ok_dn, send_up, ok_up, jnp.maximum(n_dn, n_up), thick


def _forward(spec: DomainSpec, x, dl: DomainList):
    """Halo positions [2H, 3] (from below, from above) for the owned positions ``x`` [C, 3]."""
    n = spec.n_domains
    from_lo = _shift(x[dl.send_up], 1, n)
    from_hi = _shift(x[dl.send_dn], -1, n)
    return jnp.concatenate([from_lo, from_hi])


def rebuild(spec: DomainSpec, state: MDState, dl: DomainList):
    """Migrate, exchange the halo and build the rows (inside ``shard_map``)."""
    n_dom, h = spec.n_domains, spec.halo
    state, types, ids, valid, n_own, n_mig, no_jump = _migrate(spec, state, dl)
    x, cell = state.positions, state.cell
    send_dn, ok_dn, send_up, ok_up, n_halo, thick = _halo(spec, x, valid, cell)
    halo_types = jnp.concatenate([_shift(types[send_up], 1, n_dom),
                                  _shift(types[send_dn], -1, n_dom)])
    halo_ok = jnp.concatenate([_shift(ok_up, 1, n_dom), _shift(ok_dn, -1, n_dom)])
    dl = dataclasses.replace(dl, send_dn=send_dn, send_up=send_up, ok_dn=ok_dn, ok_up=ok_up)
    local = jnp.concatenate([x, _forward(spec, x, dl)])
    cells = cell_list.build(spec.cells, local, cell, 0, spec.owned, dl.rebuilds + 1,
                            valid=jnp.concatenate([valid, halo_ok]))
    pmax = partial(lax.pmax, axis_name=AXIS)
    geometry_ok = pmax((~(thick & no_jump)).astype(jnp.int32)) == 0
    max_owned, max_halo, max_mig = pmax(n_own), pmax(n_halo), pmax(n_mig)
    overflow = cells.did_buffer_overflow | (n_own > spec.owned) | (n_halo > h) \
        | (n_mig > spec.migrate)
    overflow = (pmax(overflow.astype(jnp.int32)) > 0) | ~geometry_ok
    cells = dataclasses.replace(cells, max_count=pmax(cells.max_count),
                                max_bin_count=pmax(cells.max_bin_count),
                                did_buffer_overflow=overflow)
    dl = dataclasses.replace(
        dl, cells=cells, types=types, ids=ids, valid=valid, halo_types=halo_types,
        pending=jnp.zeros((), bool), max_owned=max_owned, max_halo=max_halo,
        max_migrate=max_mig, geometry_ok=geometry_ok, did_buffer_overflow=overflow,
        rebuilds=dl.rebuilds + 1)
    return state, dl


def _topology(dl: DomainList) -> Topology:
    return Topology(types_all=dl.types, types=dl.types, atom_mask=dl.valid, atom_ids=dl.ids)


def make_force_fn(model_spec, params, spec: DomainSpec):
    """``force_fn(x [C, 3], cell, topo, dl) -> (x, E, F [C, 3], virial, dl)`` for
    :func:`md.ensembles.make_step`; when the rows are stale it evaluates nothing and returns
    ``dl`` with ``pending`` set (the step is then re-done after a rebuild)."""
    n_dom, c, h = spec.n_domains, spec.owned, spec.halo

    def evaluate(x, cell, dl: DomainList):
        local = jnp.concatenate([x, _forward(spec, x, dl)])
        types = jnp.concatenate([dl.types, dl.halo_types])
        e, g_all, g_cen, vir = local_energy_forces_virial(
            model_spec, params, local, x, cell, types, dl.types, dl.cells.neighbors, dl.valid)
        g = g_all[:c] + g_cen
        # gradients on halo atoms go back to their owners (the reverse of _forward)
        back_from_up = _shift(g_all[c:c + h], -1, n_dom)  # for my send_up atoms
        back_from_dn = _shift(g_all[c + h:], 1, n_dom)  # for my send_dn atoms
        g = g.at[dl.send_up].add(jnp.where(dl.ok_up[:, None], back_from_up, 0.0))
        g = g.at[dl.send_dn].add(jnp.where(dl.ok_dn[:, None], back_from_dn, 0.0))
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
        comm = self.comm
        step = make_step(ens, make_force_fn(self.model_spec, self.params, spec), comm)

        def chunk(state: MDState, dl: DomainList, n_steps, record_every, schedule: Schedule):
            blank = observables(ens, state, targets_at(schedule, state.step), comm)
            records = jax.tree.map(lambda a: jnp.zeros((max_records,) + a.shape, a.dtype),
                                   blank)
            rec_steps = jnp.full((max_records,), -1, jnp.int32)

            def cond(carry):
                i, s, dl, bad, _, _, _ = carry
                return (i < n_steps) & ~bad & ~dl.did_buffer_overflow

            def body(carry):
                i, s, dl, _, recs, rsteps, k = carry
                was_pending = dl.pending
                s, dl = lax.cond(dl.pending, lambda: rebuild(spec, s, dl), lambda: (s, dl))
                s1, dl1 = step(s, _topology(dl), targets_at(schedule, s.step), dl)
                ok = ~dl1.pending & ~dl.did_buffer_overflow
                # stale right after a rebuild: the skin is smaller than one step's motion
                stuck = dl1.pending & was_pending
                dl = dataclasses.replace(
                    dl, pending=dl1.pending,
                    geometry_ok=dl.geometry_ok & ~stuck,
                    did_buffer_overflow=dl.did_buffer_overflow | stuck)
                s = jax.tree.map(lambda a, b: jnp.where(ok, a, b), s1, s)
                bad = ok & ~jnp.isfinite(s.energy)
                obs = observables(ens, s, targets_at(schedule, s.step - 1), comm)
                take = ok & (s.step % record_every == 0) & (k < max_records)
                slot = jnp.minimum(k, max_records - 1)
                recs = jax.tree.map(lambda r, o: r.at[slot].set(jnp.where(take, o, r[slot])),
                                    recs, obs)
                rsteps = rsteps.at[slot].set(jnp.where(take, s.step, rsteps[slot]))
                return (i + ok.astype(jnp.int32), s, dl, bad, recs, rsteps,
                        k + take.astype(jnp.int32))

            zero = jnp.zeros((), jnp.int32)
            i, state, dl, bad, records, rec_steps, _ = lax.while_loop(
                cond, body, (zero, state, dl, jnp.zeros((), bool), records, rec_steps, zero))
            return ChunkResult(state, dl, i, bad, records, rec_steps)

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
        d, c, h, j = spec.n_domains, spec.owned, spec.halo, spec.cells.capacity
        z = np.zeros
        cells = CellList(idx=z((d * c, j), np.int32), shifts=z((d * c, j, 3), np.int8),
                         mask=z((d * c, j), bool), frac_ref=z((d * c, 3), dtype),
                         cell_ref=np.eye(3, dtype=dtype), max_count=np.int32(0),
                         max_bin_count=np.int32(0), did_buffer_overflow=np.bool_(False),
                         rebuilds=np.int32(0), spec=spec.cells)
        zi = z(d * h, np.int32)
        zb = z(d * h, bool)
        return DomainList(cells=cells, types=a["types"], ids=a["ids"], valid=a["valid"],
                          send_dn=zi, send_up=zi, ok_dn=zb, ok_up=zb,
                          halo_types=z(2 * d * h, np.int32), pending=np.bool_(False),
                          max_owned=np.int32(0), max_halo=np.int32(0),
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
        if the slabs became too thin (an NPT compression) or the skin is too small."""
        if not bool(bad.geometry_ok):
            raise RuntimeError(
                "domain decomposition: a slab became thinner than cutoff + skin (the cell was "
                "compressed), an atom moved more than a slab, or the list went stale within "
                "one step; run on fewer devices or with decomposition = 'replicated'")
        cells = cell_list.grow(spec.cells, bad.cells, cell=cell, growth=growth,
                               n_atoms=self.n_real)
        new = dataclasses.replace(
            spec, cells=cells,
            owned=max(spec.owned, math.ceil(int(bad.max_owned) * growth)),
            halo=max(spec.halo, math.ceil(int(bad.max_halo) * growth)),
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
    """Bytes one device sends per step (no rebuild): positions of both strips [2H, 3]
    forward and the gradients of both received halos [2H, 3] back."""
    return 2 * (2 * spec.halo * 3 * itemsize)


def bytes_sent_per_rebuild(spec: DomainSpec, itemsize: int) -> int:
    """Extra bytes one device sends at a rebuild: migration [2M, 10] floats + [2M, 2] int32
    and mask [2M], halo types [2H] int32 + mask [2H], halo positions [2H, 3]."""
    m, h = spec.migrate, spec.halo
    return 2 * m * (10 * itemsize + 2 * 4 + 1) + 2 * h * (4 + 1 + 3 * itemsize)
