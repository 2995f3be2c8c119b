"""Chunks of MD steps on one device or with atoms sharded across devices (``shard_map``),
neighbour lists built and rebuilt on the device inside the step loop.

Layout: atoms (padded to a multiple of the device count D) are split into D contiguous
blocks along a mesh axis ``"atoms"``. What is sharded and what is replicated:

* **sharded** (each device holds only its block, N/D rows): positions, velocities, forces,
  masses of the state, and *its own neighbour rows* [N/D, J] (global atom indices, int8
  image shifts) with their reference fractional coordinates — a
  :class:`mtpjax.cell_list.CellList` per device, built on the device.
* **replicated**: per step every device all-gathers the positions (N×3 floats), evaluates the
  site energies of its own atoms against them and, when the list is stale, rebuilds its own
  rows from the gathered positions (a cell list over all atoms: O(N) work per device, O(N/D)
  rows); ∂E/∂x is reduce-scattered back to the owners (``psum_scatter``); energies, virials,
  kinetic tensors and the list's overflow flags are reduced; species, cell and thermostat
  state are replicated. Spatial domains with halos (O(N/D) memory and O(surface) traffic)
  are :mod:`md.domain`; the runner uses this path when the domains would be too thin.

With D = 1 the collectives are identities and this is plain single-device MD, so one code
path serves both; the trajectory does not depend on D (tested to 1e-8 Å).

A chunk is one compiled ``lax.while_loop`` of ``n_steps`` steps. Inside a step, after the
drift and before the force evaluation, :func:`mtpjax.cell_list.is_stale` decides (from
displacements in scaled coordinates and the cell deformation since the last build) whether
the rows must be rebuilt; the rebuild (``lax.cond``) wraps the positions into the cell and
builds new rows, so every force is computed with an exact list and no host round trip
happens between thermo outputs. The thermo observables are recorded on the device every
``record_every`` steps into a buffer returned with the chunk. If a rebuild needed more room
than the static buffers (row capacity J, bin capacity B, or a cell deformed beyond the bin
grid), the chunk stops with ``did_buffer_overflow``; the host grows the buffers
(:func:`mtpjax.cell_list.grow`, one recompile) and re-runs the chunk from its saved start
state, so no neighbour is ever dropped and the trajectory equals one run with large buffers.

Multi-host: call ``jax.distributed.initialize()`` in every process before building the mesh
(``md.cli.init_distributed``); ``jax.devices()`` then lists all hosts' devices and
:func:`make_mesh` spans them (tested with 2 processes on spatial domains, md/domain.py).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from md.energy import local_energy_forces_virial
from md.ensembles import (
    Comm,
    EnsembleSpec,
    MDState,
    Observables,
    Targets,
    make_step,
    observables,
)
from md.units import EV_A3_TO_GPA, KB
from mtpjax import cell_list
from mtpjax.cell_list import CellList, CellListSpec
from mtpjax.precision import highest_precision

AXIS = "atoms"


class Topology(NamedTuple):
    """Per-run constant arrays of a block (a pytree).

    types_all: int [N] species of all atoms (replicated); types: int [n] of the block;
    atom_mask: bool [n] real atoms (False: padding); atom_ids: optional int [n] global atom
    indices (Langevin noise per atom; default: contiguous blocks).
    """

    types_all: jax.Array
    types: jax.Array
    atom_mask: jax.Array
    atom_ids: jax.Array | None = None


class Schedule(NamedTuple):
    """Linear ramps of T (K) and P (GPa) from ``start`` over ``length`` steps (all arrays ())."""

    start: jax.Array
    length: jax.Array
    T0: jax.Array
    T1: jax.Array
    P0: jax.Array
    P1: jax.Array


def targets_at(schedule: Schedule, step) -> Targets:
    """kT (eV) and P (eV/Å³) for the step that starts at ``step`` (value at its end)."""
    f = jnp.clip((step + 1 - schedule.start) / jnp.maximum(schedule.length, 1), 0.0, 1.0)
    temp = schedule.T0 + f * (schedule.T1 - schedule.T0)
    pres = schedule.P0 + f * (schedule.P1 - schedule.P0)
    return Targets(kT=KB * temp, pressure=pres / EV_A3_TO_GPA)


def state_specs() -> MDState:
    atoms, rep = P(AXIS), P()
    return MDState(positions=atoms, velocities=atoms, forces=atoms, masses=atoms, cell=rep,
                   energy=rep, virial=rep, chain_xi=rep, chain_v=rep, key=rep, bath=rep,
                   step=rep)


def topology_specs() -> Topology:
    atoms, rep = P(AXIS), P()
    return Topology(types_all=rep, types=atoms, atom_mask=atoms)


def cell_list_specs(spec: CellListSpec) -> CellList:
    atoms, rep = P(AXIS), P()
    return CellList(idx=atoms, shifts=atoms, mask=atoms, frac_ref=atoms, cell_ref=rep,
                    max_count=rep, max_bin_count=rep, did_buffer_overflow=rep, rebuilds=rep,
                    spec=spec)


def make_force_fn(spec, params, comm: Comm, n_real: int):
    """``force_fn(positions, cell, topo, nl) -> (positions, E, F [n, 3], virial, nl)``.

    Rebuilds this block's rows first when the list is stale (positions are then wrapped into
    the cell, hence returned); ``n_real``: number of real atoms (the rest are padding).
    """

    def rebuild(pos_all, cell, nl: CellList, n: int):
        frac = pos_all @ jnp.linalg.inv(cell)
        pos_all = pos_all - jnp.floor(frac) @ cell
        new = cell_list.build(nl.spec, pos_all, cell, comm.index() * n, n, nl.rebuilds + 1,
                              n_real)
        return pos_all, new

    def force_fn(positions, cell, topo: Topology, nl: CellList, force_rebuild=False):
        n = positions.shape[0]
        pos_all = comm.gather(positions)
        if force_rebuild:
            pos_all, nl = rebuild(pos_all, cell, nl, n)
        else:
            stale = cell_list.is_stale(nl, positions, cell, max_displacement=comm.max)
            pos_all, nl = lax.cond(stale, lambda: rebuild(pos_all, cell, nl, n),
                                   lambda: (pos_all, nl))
        nl = dataclasses.replace(
            nl, max_count=comm.max(nl.max_count), max_bin_count=comm.max(nl.max_bin_count),
            did_buffer_overflow=comm.max(nl.did_buffer_overflow.astype(jnp.int32)) > 0)
        positions = lax.dynamic_slice_in_dim(pos_all, comm.index() * n, n, 0)
        e, g_all, g_cen, vir = local_energy_forces_virial(
            spec, params, pos_all, positions, cell, topo.types_all, topo.types,
            nl.neighbors, topo.atom_mask)
        forces = -(comm.scatter_sum(g_all) + g_cen)
        forces = jnp.where(topo.atom_mask[:, None], forces, 0.0)
        return positions, comm.sum(e), forces, comm.sum(vir), nl

    return force_fn


def make_mesh(n_devices: int | None = None) -> Mesh | None:
    """A 1-D mesh over the first ``n_devices`` devices (``None``: all); ``None`` for 1 device."""
    devices = jax.devices()
    n = len(devices) if n_devices is None else int(n_devices)
    if n < 1 or n > len(devices):
        raise ValueError(f"asked for {n} devices but {len(devices)} are available")
    if n == 1:
        return None
    return Mesh(np.asarray(devices[:n]), (AXIS,))


def _wrap(fn, mesh: Mesh | None, in_specs, out_specs):
    fn = highest_precision(fn)  # no TF32 in float32 MD on GPUs (mtpjax.precision)
    if mesh is None:
        return jax.jit(fn)
    # check_vma off: the list's counters are pmax-ed (replicated) but come out of a lax.cond
    # whose rebuild branch computes them per device
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                                 check_vma=False))


class ChunkResult(NamedTuple):
    """What one compiled chunk returns (device arrays; nothing is read until needed).

    state, nl: after the chunk; steps: steps done; bad: a non-finite energy stopped it;
    records: :class:`Observables` stacked [R] at the steps ``record_steps`` [R] (−1: unused).
    """

    state: MDState
    nl: CellList
    steps: jax.Array
    bad: jax.Array
    records: Observables
    record_steps: jax.Array


def make_chunk_loop(ens: EnsembleSpec, comm: Comm, max_records: int):
    """``loop(advance, state, nl, n_steps, record_every, schedule) -> ChunkResult``: the
    body of a compiled chunk (one ``lax.while_loop``), shared by the replicated and the
    domain-decomposed engines. ``advance(state, nl, targets) -> (state, nl, ok)`` takes one
    step (``ok`` False: the step was rejected and must be re-done, state unchanged); the loop
    counts accepted steps up to ``n_steps``, stops early on a buffer overflow
    (``nl.did_buffer_overflow``) or a non-finite energy, and records the observables after
    every accepted step whose index is a multiple of ``record_every`` (at most
    ``max_records``)."""

    def loop(advance, state: MDState, nl, n_steps, record_every, schedule: Schedule):
        blank = observables(ens, state, targets_at(schedule, state.step), comm)
        records = jax.tree.map(lambda a: jnp.zeros((max_records,) + a.shape, a.dtype), blank)
        rec_steps = jnp.full((max_records,), -1, jnp.int32)

        def cond(carry):
            i, s, nl, bad, _, _, _ = carry
            return (i < n_steps) & ~bad & ~nl.did_buffer_overflow

        def body(carry):
            i, s, nl, _, recs, rsteps, k = carry
            s, nl, ok = advance(s, nl, targets_at(schedule, s.step))
            bad = ok & ~jnp.isfinite(s.energy)
            obs = observables(ens, s, targets_at(schedule, s.step - 1), comm)
            take = ok & (s.step % record_every == 0) & (k < max_records)
            slot = jnp.minimum(k, max_records - 1)
            recs = jax.tree.map(lambda r, o: r.at[slot].set(jnp.where(take, o, r[slot])),
                                recs, obs)
            rsteps = rsteps.at[slot].set(jnp.where(take, s.step, rsteps[slot]))
            return (i + ok.astype(jnp.int32), s, nl, bad, recs, rsteps,
                    k + take.astype(jnp.int32))

        zero = jnp.zeros((), jnp.int32)
        i, state, nl, bad, records, rec_steps, _ = lax.while_loop(
            cond, body, (zero, state, nl, jnp.zeros((), bool), records, rec_steps, zero))
        return ChunkResult(state, nl, i, bad, records, rec_steps)

    return loop


class Engine:
    """Compiled functions of one run: the first list and forces, chunks per ensemble.

    Args:
        spec, params: model (``params`` as jnp arrays of the run's dtype).
        mesh: from :func:`make_mesh` (``None``: one device). n_real: real atoms.
    """

    def __init__(self, spec, params, mesh: Mesh | None = None, n_real: int | None = None):
        self.mesh = mesh
        self.comm = Comm(AXIS if mesh is not None else None)
        self.model_spec, self.params = spec, params
        self.n_real = n_real
        self.force_fn = make_force_fn(spec, params, self.comm, n_real)
        self._chunks: dict = {}
        self._inits: dict = {}
        self._state_spec, self._topo_spec = state_specs(), topology_specs()

    @property
    def n_devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    def init_fn(self, nl_spec: CellListSpec):
        """``init(state, topo, nl) -> (state, nl)``: build the rows (wrapping the positions)
        and evaluate the first forces; ``nl`` only supplies the static shape."""
        if nl_spec in self._inits:
            return self._inits[nl_spec]
        st, tp, ns = self._state_spec, self._topo_spec, cell_list_specs(nl_spec)

        def init(state: MDState, topo: Topology, nl: CellList):
            x, e, f, vir, nl = self.force_fn(state.positions, state.cell, topo, nl,
                                             force_rebuild=True)
            nl = dataclasses.replace(nl, rebuilds=jnp.zeros((), jnp.int32))
            return state._replace(positions=x, forces=f, energy=e, virial=vir), nl

        fn = _wrap(init, self.mesh, (st, tp, ns), (st, ns))
        self._inits[nl_spec] = fn
        return fn

    def empty_list(self, nl_spec: CellListSpec, n_pad: int, dtype) -> CellList:
        """A placeholder list of the right shapes (filled by :meth:`init_fn`)."""
        z = np.zeros
        nl = CellList(idx=z((n_pad, nl_spec.capacity), np.int32),
                      shifts=z((n_pad, nl_spec.capacity, 3), np.int8),
                      mask=z((n_pad, nl_spec.capacity), bool), frac_ref=z((n_pad, 3), dtype),
                      cell_ref=np.eye(3, dtype=dtype), max_count=np.int32(0),
                      max_bin_count=np.int32(0), did_buffer_overflow=np.bool_(False),
                      rebuilds=np.int32(0), spec=nl_spec)
        return self.shard(nl, cell_list_specs(nl_spec))

    def chunk_fn(self, ens: EnsembleSpec, nl_spec: CellListSpec, max_records: int):
        """``chunk(state, nl, topo, n_steps, record_every, schedule) -> ChunkResult``.

        Runs ``n_steps`` steps (fewer only if a rebuild overflowed its buffers — check
        ``nl.did_buffer_overflow`` — or the energy became non-finite) and records the
        observables after every step whose index is a multiple of ``record_every`` (at most
        ``max_records`` of them).
        """
        key = (ens, nl_spec, max_records)
        if key in self._chunks:
            return self._chunks[key]
        step = make_step(ens, self.force_fn, self.comm)
        loop = make_chunk_loop(ens, self.comm, max_records)

        def chunk(state: MDState, nl: CellList, topo: Topology, n_steps, record_every,
                  schedule: Schedule):
            def advance(s, nl, targets):
                s, nl = step(s, topo, targets, nl)
                return s, nl, jnp.ones((), bool)

            return loop(advance, state, nl, n_steps, record_every, schedule)

        rep = P()
        st, tp, ns = self._state_spec, self._topo_spec, cell_list_specs(nl_spec)
        out = ChunkResult(st, ns, rep, rep, Observables(*(rep,) * 8), rep)
        fn = _wrap(chunk, self.mesh, (st, ns, tp, rep, rep, Schedule(*(rep,) * 6)), out)
        self._chunks[key] = fn
        return fn

    def observables_fn(self, ens: EnsembleSpec):
        """``obs(state, schedule) -> Observables`` (the record of the current step)."""
        key = ("obs", ens)
        if key in self._chunks:
            return self._chunks[key]
        comm = self.comm

        def obs(state: MDState, schedule: Schedule) -> Observables:
            return observables(ens, state, targets_at(schedule, state.step - 1), comm)

        fn = _wrap(obs, self.mesh, (self._state_spec, Schedule(*(P(),) * 6)),
                   Observables(*(P(),) * 8))
        self._chunks[key] = fn
        return fn

    # ------------------------------------------------------------------ host <-> device
    def shard(self, tree, specs):
        """Place a pytree of host arrays with the given PartitionSpecs (or on the device)."""
        if self.mesh is None:
            return jax.tree.map(jnp.asarray, tree)
        return place(tree, specs, self.mesh)

    def put_state(self, state: MDState) -> MDState:
        return self.shard(state, self._state_spec)

    def put_topology(self, topo: Topology) -> Topology:
        return self.shard(topo, self._topo_spec)

    def repad(self, nl: CellList, nl_spec: CellListSpec) -> CellList:
        """``nl`` copied into the larger buffers of ``nl_spec`` (same rows)."""
        if self.mesh is None:
            return jax.jit(cell_list.repad, static_argnums=1)(nl, nl_spec)
        fn = _wrap(lambda x: cell_list.repad(x, nl_spec), self.mesh,
                   (cell_list_specs(nl.spec),), cell_list_specs(nl_spec))
        return fn(nl)


def place(tree, specs, mesh: Mesh):
    """Global arrays of a pytree of host arrays with the given PartitionSpecs; each process
    creates only its addressable shards (``jax.make_array_from_callback``), so this also
    works across processes (every process passes the same host arrays)."""
    leaves, treedef = jax.tree.flatten(tree)
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))
    placed = [jax.make_array_from_callback(
        np.shape(a), NamedSharding(mesh, s), lambda idx, a=np.asarray(a): a[idx])
        for a, s in zip(leaves, spec_leaves, strict=True)]
    return jax.tree.unflatten(treedef, placed)


def padded_size(n_atoms: int, n_devices: int) -> int:
    return -(-n_atoms // n_devices) * n_devices


def pad_rows(a, n_total: int, fill=0):
    """Pad a host array along axis 0 to ``n_total`` rows with ``fill``."""
    a = np.asarray(a)
    if len(a) == n_total:
        return a
    pad = np.full((n_total - len(a),) + a.shape[1:], fill, dtype=a.dtype)
    return np.concatenate([a, pad])
