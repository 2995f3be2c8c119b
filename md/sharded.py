"""Chunks of MD steps on one device or with atoms sharded across devices (``shard_map``).

Layout: atoms (padded to a multiple of the device count D) are split into D contiguous
blocks along a mesh axis ``"atoms"``. What is sharded and what is replicated:

* **sharded** (each device holds only its block, N/D rows): positions, velocities, forces,
  masses of the state, and *its own neighbour rows* [N/D, J] (global atom indices, integer
  image shifts). The rows are built per shard on the host (:mod:`md.neighbors`: a cell list
  over all atoms, then the pairs of that shard's central atoms only, chunk by chunk) and
  placed shard by shard (:meth:`Engine.put_neighbors`), so no global [N, J] list exists on
  any host; the force evaluation runs over 8192-atom chunks of the block
  (:func:`md.energy.local_energy_forces_virial`), so no [N/D, J, 3] float temporaries either.
* **replicated**: per step every device all-gathers the positions (N×3 floats) and evaluates
  the site energies of its own atoms against them; ∂E/∂x is reduce-scattered back to the
  owners (``psum_scatter``, N×3 per device); energies, virials and kinetic tensors are
  ``psum``-ed; species, cell and thermostat state are replicated. The host keeps the full
  positions for the neighbour build and the outputs.

Why an atom decomposition with an all-gather rather than spatial domains: it is simple, its
numbers do not depend on D (the sharded run equals the single-device run to ~1e-15 Å, tested),
and it stays exact for any cell, including cells smaller than the cutoff where a domain and
its halo would overlap themselves. Its cost is O(N) communication and O(N) position memory
per device per step, against O(N/D) work. A spatial-domain decomposition would give each
device a region of the cell plus a halo of width cutoff + skin, exchange only the halo
positions (and send back halo gradients) with its neighbouring domains each step, and
migrate atoms between domains at neighbour rebuilds: O(surface) communication and O(N/D)
memory, at the price of variable per-domain atom counts (padding, load balance) and domains
thicker than the reach. At 10⁶ atoms the all-gather is 24 MB per step, small next to the
force evaluation on CPU; it matters for many GPUs or ≫10⁷ atoms.

With D = 1 the collectives are identities and this is plain single-device MD, so one code
path serves both.

Multi-host: call ``jax.distributed.initialize()`` in every process before building the mesh;
``jax.devices()`` then lists all hosts' devices and :func:`make_mesh` spans them. Each process
builds and places the neighbour rows of its addressable shards only (capacity and shift dtype
agreed by an all-gather of the maxima); the other per-chunk arrays are placed with
``jax.device_put`` from the (replicated) host arrays. Not tested on several hosts here.

A chunk is one compiled ``lax.while_loop`` of at most ``n_steps`` steps that stops *before*
accepting a step after which the neighbour list could be stale (the core's
:func:`mtpjax.neighbors.needs_rebuild` bound: 2·max|Δx| + |S|·‖Δcell‖ > skin) or the energy is
not finite. Every force in the trajectory is therefore computed with a valid list; the host
rebuilds (and grows the buffer on overflow) and continues.
"""

from __future__ import annotations

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
from mtpjax.potential import Neighbors

AXIS = "atoms"


class Topology(NamedTuple):
    """Per-chunk constant arrays of a block (a pytree).

    types_all: int [N] species of all atoms (replicated); types: int [n] of the block;
    atom_mask: bool [n] real atoms; neighbors: rows [n, J] of the block;
    ref_positions: float [n, 3] and ref_cell [3, 3]: geometry at the last build;
    skin, shift_bound: floats () of the list (see :func:`mtpjax.neighbors.needs_rebuild`).
    """

    types_all: jax.Array
    types: jax.Array
    atom_mask: jax.Array
    neighbors: Neighbors
    ref_positions: jax.Array
    ref_cell: jax.Array
    skin: jax.Array
    shift_bound: jax.Array


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
    return Topology(types_all=rep, types=atoms, atom_mask=atoms,
                    neighbors=Neighbors(atoms, atoms, atoms), ref_positions=atoms,
                    ref_cell=rep, skin=rep, shift_bound=rep)


def make_force_fn(spec, params, comm: Comm):
    """``force_fn(positions, cell, topo) -> (E, F [n, 3], virial)`` for one block."""

    def force_fn(positions, cell, topo: Topology):
        pos_all = comm.gather(positions)
        e, g_all, g_cen, vir = local_energy_forces_virial(
            spec, params, pos_all, positions, cell, topo.types_all, topo.types,
            topo.neighbors, topo.atom_mask)
        forces = -(comm.scatter_sum(g_all) + g_cen)
        forces = jnp.where(topo.atom_mask[:, None], forces, 0.0)
        return comm.sum(e), forces, comm.sum(vir)

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
    if mesh is None:
        return jax.jit(fn)
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs))


class Engine:
    """Compiled functions of one run: initial forces, chunks per ensemble, observables.

    Args:
        spec, params: model (``params`` as jnp arrays of the run's dtype).
        mesh: from :func:`make_mesh` (``None``: one device).
    """

    def __init__(self, spec, params, mesh: Mesh | None = None):
        self.mesh = mesh
        self.comm = Comm(AXIS if mesh is not None else None)
        self.force_fn = make_force_fn(spec, params, self.comm)
        self._chunks: dict = {}
        self._obs: dict = {}
        st, tp = state_specs(), topology_specs()

        def forces(state: MDState, topo: Topology) -> MDState:
            e, f, vir = self.force_fn(state.positions, state.cell, topo)
            return state._replace(forces=f, energy=e, virial=vir)

        self.init_forces = _wrap(forces, mesh, (st, tp), st)
        self._state_spec, self._topo_spec = st, tp

    @property
    def n_devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    def chunk_fn(self, ens: EnsembleSpec):
        """``chunk(state, topo, n_steps, schedule) -> (state, steps_done, stale, bad_energy)``."""
        if ens in self._chunks:
            return self._chunks[ens]
        comm = self.comm
        step = make_step(ens, self.force_fn, comm)

        def chunk(state: MDState, topo: Topology, n_steps, schedule: Schedule):
            def cond(carry):
                i, stale, bad, _ = carry
                return (i < n_steps) & ~stale & ~bad

            def body(carry):
                i, _, _, s = carry
                new = step(s, topo, targets_at(schedule, s.step))
                disp = jnp.linalg.norm(new.positions - topo.ref_positions, axis=-1)
                disp = comm.max(jnp.max(jnp.where(topo.atom_mask, disp, 0.0), initial=0.0))
                dcell = jnp.linalg.norm(new.cell - topo.ref_cell, ord=2)
                stale = 2.0 * disp + topo.shift_bound * dcell > topo.skin
                bad = ~jnp.isfinite(new.energy)
                reject = stale | bad
                s = jax.tree.map(lambda a, b: jnp.where(reject, a, b), s, new)
                return i + jnp.where(reject, 0, 1), stale, bad, s

            zero = jnp.zeros((), bool)
            i, stale, bad, state = lax.while_loop(
                cond, body, (jnp.zeros((), jnp.int32), zero, zero, state))
            return state, i, stale, bad

        rep = P()
        sched = Schedule(*(rep,) * 6)
        fn = _wrap(chunk, self.mesh, (self._state_spec, self._topo_spec, rep, sched),
                   (self._state_spec, rep, rep, rep))
        self._chunks[ens] = fn
        return fn

    def observables_fn(self, ens: EnsembleSpec):
        if ens in self._obs:
            return self._obs[ens]
        comm = self.comm

        def obs(state: MDState, schedule: Schedule) -> Observables:
            return observables(ens, state, targets_at(schedule, state.step - 1), comm)

        fn = _wrap(obs, self.mesh, (self._state_spec, Schedule(*(P(),) * 6)),
                   Observables(*(P(),) * 8))
        self._obs[ens] = fn
        return fn

    # ------------------------------------------------------------------ host <-> device
    def shard(self, tree, specs):
        """Place a pytree of host arrays with the given PartitionSpecs (or on the device)."""
        if self.mesh is None:
            return jax.tree.map(jnp.asarray, tree)
        leaves, treedef = jax.tree.flatten(tree)
        spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))
        placed = [jax.device_put(np.asarray(a), NamedSharding(self.mesh, s))
                  for a, s in zip(leaves, spec_leaves, strict=True)]
        return jax.tree.unflatten(treedef, placed)

    def local_shards(self) -> list[int]:
        """Indices along the atom axis of the shards this process feeds (all on one host)."""
        if self.mesh is None:
            return [0]
        me = jax.process_index()
        return [d for d, dev in enumerate(self.mesh.devices.flat) if dev.process_index == me]

    def put_neighbors(self, shard_rows) -> Neighbors:
        """Place per-shard neighbour rows: ``shard_rows(d)`` gives numpy (idx, shifts, mask)
        of shard d; each is built, copied to its device and dropped in turn, so the host never
        holds the global ``[N, J]`` arrays. Returns global arrays sharded along ``"atoms"``."""
        if self.mesh is None:
            return Neighbors(*(jnp.asarray(a) for a in shard_rows(0)))
        devices = list(self.mesh.devices.flat)
        pieces: list[list] = [[], [], []]
        shape = None
        for d in self.local_shards():
            arrays = shard_rows(d)
            shape = [a.shape for a in arrays]
            for k, a in enumerate(arrays):
                pieces[k].append(jax.device_put(a, devices[d]))
            del arrays
        sharding = NamedSharding(self.mesh, P(AXIS))
        n = len(devices)
        return Neighbors(*(jax.make_array_from_single_device_arrays(
            (n * sh[0],) + sh[1:], sharding, piece) for sh, piece in zip(shape, pieces,
                                                                          strict=True)))

    def put_state(self, state: MDState) -> MDState:
        return self.shard(state, self._state_spec)

    def put_topology(self, topo: Topology) -> Topology:
        """Place a topology of host arrays; ``topo.neighbors`` may already be placed
        (:meth:`put_neighbors`) and is then kept as is."""
        if isinstance(topo.neighbors.idx, jax.Array):
            placed = self.shard(topo._replace(neighbors=None),
                                self._topo_spec._replace(neighbors=None))
            return placed._replace(neighbors=topo.neighbors)
        return self.shard(topo, self._topo_spec)


def padded_size(n_atoms: int, n_devices: int) -> int:
    return -(-n_atoms // n_devices) * n_devices


def pad_rows(a, n_total: int, fill=0):
    """Pad a host array along axis 0 to ``n_total`` rows with ``fill``."""
    a = np.asarray(a)
    if len(a) == n_total:
        return a
    pad = np.full((n_total - len(a),) + a.shape[1:], fill, dtype=a.dtype)
    return np.concatenate([a, pad])


def pad_neighbors(nbrs: Neighbors, n_total: int) -> Neighbors:
    """Padding rows point at themselves and are masked out."""
    idx = np.asarray(nbrs.idx)
    n, j = idx.shape
    if n == n_total:
        return Neighbors(idx, np.asarray(nbrs.shifts), np.asarray(nbrs.mask))
    extra = np.repeat(np.arange(n, n_total, dtype=idx.dtype)[:, None], j, axis=1)
    return Neighbors(np.concatenate([idx, extra]), pad_rows(nbrs.shifts, n_total),
                     pad_rows(nbrs.mask, n_total, False))
