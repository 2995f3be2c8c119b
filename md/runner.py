"""The MD run loop (Python API) and the run of a validated config.

:class:`Simulation` holds the device state and the on-device neighbour list
(:class:`mtpjax.cell_list.CellList`). ``run_stage`` advances in compiled chunks
(:class:`md.sharded.Engine`) in which the list is rebuilt on the device whenever it goes
stale and the thermo observables are recorded on the device; the host dispatches the next
chunk before reading the previous one's records (no device idle time between chunks), writes
the thermo log, trajectory frames and restart files on their step multiples, and updates a
tqdm bar with ns/day and atom-steps/s. A chunk whose rebuild overflowed the list's buffers
(e.g. as the cell shrinks under compression) is re-run from its start with larger buffers.

Example::

    from md.runner import Simulation
    from md.config import StageConfig
    sim = Simulation("pot.mtp", atoms, species=["Si"], timestep_fs=1.0, temperature_K=500)
    sim.run_stage(StageConfig("heat", "nvt", steps=1000, temperature_K=500,
                              temperature_end_K=500))
    sim.atoms()  # ASE Atoms of the current frame
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from tqdm.auto import tqdm

from md import io as mdio
from md.config import MDConfig, StageConfig
from md.energy import load_model
from md.ensembles import EnsembleSpec, MDState
from md.sharded import (
    Engine,
    Schedule,
    Topology,
    make_mesh,
    pad_rows,
    padded_size,
)
from md.structures import build_structure
from md.units import EV_A3_TO_GPA, FS_TO_NS, KB, MVV2E
from mtpjax import cell_list
from mtpjax.errors import InputError

THERMO_EXTRA = ("E_kin", "T_target_K", "P_target_GPa", "Pxx_GPa", "Pyy_GPa", "Pzz_GPa")


#: atoms whose rows size the first neighbour buffer (a denser spot elsewhere grows it)
PLAN_SAMPLE = 32768
#: most buffer growths in a row at allocation
MAX_GROWTH = 8

_MODELS: dict = {}
_ENGINES: dict = {}


def _cached_model(potential):
    """``load_model`` cached by file (path, mtime) so that compiled chunks are reused."""
    if not isinstance(potential, (str, Path)):
        return load_model(potential)
    path = Path(potential).resolve()
    key = (str(path), path.stat().st_mtime_ns if path.is_file() else None)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_model(path)
    return _MODELS[key]


def _cached_engine(spec, params, dtype: str, n_devices: int, n_atoms: int,
                   domain: bool = False):
    """One :class:`Engine` (or :class:`md.domain.DomainEngine` when ``domain``; its compiled
    functions) per model and coefficients, dtype, device count and number of atoms.

    The coefficients are part of the key: an engine's force function holds its ``params``,
    and potentials of the same template share one ``spec`` (``ModelSpec.from_potential``), so
    a key without them gave a second potential of the same level the first one's engine —
    the demo's M'_16 MD ran with M''_16's coefficients."""
    key = (id(spec), _params_digest(params), dtype, n_devices,
           tuple(d.id for d in jax.devices()[:n_devices]), n_atoms, domain)
    if key not in _ENGINES or _ENGINES[key][0] is not spec:
        dt = np.float64 if dtype == "float64" else np.float32
        p = {k: jnp.asarray(v, dt) for k, v in params.items()}
        if domain:
            from md.domain import DomainEngine

            engine = DomainEngine(spec, p, make_mesh(n_devices), n_real=n_atoms)
        else:
            engine = Engine(spec, p, make_mesh(n_devices), n_real=n_atoms)
        engine.params = p
        if len(_ENGINES) > 8:
            _ENGINES.clear()
        _ENGINES[key] = (spec, engine)
    return _ENGINES[key][1]


def _params_digest(params: dict) -> str:
    """sha256 of a model's coefficients (names, shapes and float64 values)."""
    h = hashlib.sha256()
    for name in sorted(params):
        a = np.ascontiguousarray(np.asarray(params[name], dtype=np.float64))
        h.update(f"{name}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def types_from_numbers(numbers, species) -> np.ndarray:
    """MLIP type of each atom, int [N] (``species[t]`` is the element of type t)."""
    from ase.data import atomic_numbers

    table = {atomic_numbers[s]: t for t, s in enumerate(species)}
    missing = sorted({int(z) for z in numbers} - set(table))
    if missing:
        from ase.data import chemical_symbols

        raise ValueError(f"element(s) {[chemical_symbols[z] for z in missing]} not in "
                         f"species {list(species)}")
    return np.asarray([table[int(z)] for z in numbers], dtype=np.int32)


def maxwell_boltzmann(masses, temperature_K: float, seed: int, dof: int | None = None):
    """Velocities [N, 3] (Å/fs) at exactly ``temperature_K`` with zero total momentum."""
    masses = np.asarray(masses, dtype=np.float64)
    n = len(masses)
    if temperature_K <= 0 or n < 2:
        return np.zeros((n, 3))
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3)) * np.sqrt(KB * temperature_K / (masses * MVV2E))[:, None]
    v -= (masses[:, None] * v).sum(0) / masses.sum()
    dof = 3 * n - 3 if dof is None else dof
    t_now = (masses[:, None] * v * v).sum() * MVV2E / (dof * KB)
    return v * np.sqrt(temperature_K / t_now)


def ensemble_spec(stage: StageConfig, dt_fs: float, n_atoms: int) -> EnsembleSpec:
    langevin = stage.ensemble != "nve" and stage.thermostat == "langevin"
    return EnsembleSpec(
        ensemble=stage.ensemble, dt_fs=float(dt_fs),
        dof=3 * n_atoms if langevin else 3 * n_atoms - 3,
        thermostat=stage.thermostat, barostat=stage.barostat, tau_t_fs=stage.tau_t_fs,
        tau_p_fs=stage.tau_p_fs, compressibility=stage.compressibility_per_GPa,
        chain_length=stage.chain_length)


def _refuse_to_overwrite(out: Path, thermo_format: str) -> None:
    """``FileExistsError`` on every process when process 0 finds MD output (a thermo log or
    a trajectory file, whole or per-process) in ``out``: process 0's verdict is broadcast
    (a collective all processes reach), so no process goes on to wait for it in the run's
    collectives."""
    from jax.experimental import multihost_utils

    found = jax.process_index() == 0 and (
        (out / f"thermo.{thermo_format}").exists()
        or bool(mdio.trajectory_files(out / "trajectory")))
    if int(multihost_utils.broadcast_one_to_all(np.int32(found))):
        raise FileExistsError(f"{out} already holds MD output; use resume or another "
                              "output_dir")


class Simulation:
    """MD of one periodic system with an MTP.

    Args:
        potential: :class:`~mtpjax.potential_data.MTPotential` or ``.mtp`` path.
        atoms: ASE Atoms (periodic cell; velocities used if ``temperature_K`` is None).
        species: ``species[t]`` is the element of MLIP type t.
        timestep_fs: time step (fs). temperature_K: initial Maxwell–Boltzmann temperature (K).
        skin_A: neighbour skin (Å). capacity_multiplier: spare neighbour slots at allocation
        (the buffers grow on overflow in any case).
        devices: number of devices to shard atoms over (int or ``"all"``).
        decomposition: with several devices, ``"auto"``/``"domain"``: spatial domains with
        halos (:mod:`md.domain`: slabs, or bricks from 8 devices, whichever has the smallest
        halo) unless every grid's domains would be thinner than cutoff + skin (then one
        warning line and replicated atoms); ``"replicated"``: :mod:`md.sharded`'s path.
        domain_grid: force the domain grid (px, py, pz) (product = devices; still checked
        against the halo width); ``None``: the smallest halo.
        dtype: ``"float64"`` or ``"float32"``. chunk_steps: most steps per compiled call.
        output_dir: where thermo/trajectory/restart files go (``None``: no files).
        thermo_every, trajectory_every, restart_every: output intervals in steps (0: never
        for trajectory/restart). progress: show a tqdm bar.
        per_process_output: each process writes only the atoms it holds, with their global
        ids (``trajectory.p{rank}.{fmt}``, ``restart.parts/p{rank}.npz``; :mod:`md.io`
        merges them), instead of process 0 writing the gathered system; ``None`` (default):
        on when the run spans several processes.
    """

    def __init__(self, potential, atoms: Atoms, species=("Si",), *, timestep_fs: float = 1.0,
                 temperature_K: float | None = 300.0, seed: int = 0, skin_A: float = 1.0,
                 capacity_multiplier: float = 1.25, devices: int | str = 1,
                 decomposition: str = "auto", domain_grid=None,
                 dtype: str = "float64", chunk_steps: int = 100, output_dir=None,
                 thermo_every: int = 10, thermo_format: str = "csv", trajectory_every: int = 0,
                 trajectory_formats=("extxyz",), restart_every: int = 0, progress: bool = False,
                 active_set=None, grade_every: int = 0, gamma_select: float | None = None,
                 gamma_break: float | None = None, selected_file=None,
                 per_process_output: bool | None = None,
                 _restart: tuple[dict, dict] | None = None):
        if timestep_fs <= 0:
            raise ValueError(f"timestep_fs must be > 0, got {timestep_fs}")
        if not np.all(atoms.pbc):
            raise ValueError("MD needs a cell periodic in all three directions")
        self.potential, self.spec, params = _cached_model(potential)
        self.species = list(species)
        self.dtype = dtype
        self.x64 = dtype == "float64"
        self.dt = float(timestep_fs)
        self.numbers = np.asarray(atoms.numbers)
        self.n_atoms = len(atoms)
        self.types = types_from_numbers(self.numbers, self.species)
        self.masses = np.asarray(atoms.get_masses(), dtype=np.float64)
        self.skin = float(skin_A)
        self.chunk_steps = int(chunk_steps)
        self.thermo_every = int(thermo_every)
        self.trajectory_every = int(trajectory_every)
        self.restart_every = int(restart_every)
        self.progress = progress
        self.capacity_multiplier = float(capacity_multiplier)
        self.stats = {"rebuilds": 0, "reallocations": 0, "steps": 0, "wall_s": 0.0,
                      "reruns": 0}
        self.history: list[dict] = []
        self.grade_every = int(grade_every)
        self.grader = _grader(active_set, self.potential) if self.grade_every else None
        self.grades: list[tuple[int, float]] = []  # (step, MaxVol grade γ)
        self.gamma_select, self.gamma_break = _gamma_thresholds(
            gamma_select, gamma_break, self.grade_every)
        self.selected: list = []  # configurations saved for γ > gamma_select (Configuration)
        self._selected_path = None if selected_file is None else Path(selected_file)
        n_dev = len(jax.devices()) if devices == "all" else int(devices)
        if decomposition not in ("auto", "domain", "replicated"):
            raise ValueError("decomposition must be 'auto', 'domain' or 'replicated', got "
                             f"{decomposition!r}")
        self.decomposition = decomposition if n_dev > 1 else "replicated"
        self._n_dev = n_dev
        self._domain_grid = None if domain_grid is None else tuple(int(p) for p in domain_grid)
        if output_dir is not None and _restart is None:  # before any computation
            _refuse_to_overwrite(Path(output_dir), thermo_format)
        with self._ctx():
            self._dt_np = np.float64 if self.x64 else np.float32
            self.engine = _cached_engine(self.spec, params, dtype, n_dev, self.n_atoms)
            self.params = self.engine.params
            self.n_pad = padded_size(self.n_atoms, self.engine.n_devices)
            cell = np.asarray(atoms.cell.array, dtype=np.float64)
            if _restart is not None:
                arrays, meta = _restart
                positions, velocities, cell = arrays["positions"], arrays["velocities"], \
                    arrays["cell"]
                extra = (arrays["chain_xi"], arrays["chain_v"], arrays["key"],
                         float(arrays["bath"]), int(meta["step"]))
            else:
                positions = np.asarray(atoms.positions, dtype=np.float64)
                if temperature_K is None:
                    from ase.units import fs

                    velocities = np.asarray(atoms.get_velocities()) * fs
                else:
                    velocities = maxwell_boltzmann(self.masses, temperature_K, seed)
                extra = (np.zeros(3), np.zeros(3), np.asarray(jax.random.PRNGKey(seed)), 0.0, 0)
            self.step = extra[4]
            self.topo = None
            self.state, self.nl = self._initial_state(positions, velocities, cell, *extra)
        self._out = None
        self.per_process = (jax.process_count() > 1 if per_process_output is None
                            else bool(per_process_output))
        if output_dir is not None:
            self._open_outputs(Path(output_dir), thermo_format, trajectory_formats,
                               resume=_restart is not None)

    # ------------------------------------------------------------------ construction
    def _ctx(self):
        return jax.enable_x64(True) if self.x64 else nullcontext()

    @staticmethod
    def _wrap(positions, cell):
        frac = positions @ np.linalg.inv(cell)
        return (frac - np.floor(frac)) @ cell

    def _initial_state(self, positions, velocities, cell, chain_xi, chain_v, key, bath, step,
                       grid=None):
        """Device state with wrapped positions and first forces, and the neighbour list
        (sized by :func:`mtpjax.cell_list.plan`; grown here if the first build overflows);
        ``grid``: the domain grid (default: the run's ``domain_grid`` or the planner's)."""
        dt = self._dt_np
        n = self.n_pad
        # J from the rows of a sample of atoms; a denser spot elsewhere overflows and grows
        spec = cell_list.plan(positions, cell, self.spec.max_dist, self.skin,
                              capacity_multiplier=self.capacity_multiplier,
                              centers=min(self.n_atoms, PLAN_SAMPLE))
        if self.decomposition != "replicated":
            started = self._start_domains(spec, positions, velocities, cell, chain_xi,
                                          chain_v, key, bath, step, grid)
            if started is not None:
                return started
        self.topo = self.engine.put_topology(Topology(
            types_all=pad_rows(self.types, n).astype(np.int32),
            types=pad_rows(self.types, n).astype(np.int32),
            atom_mask=pad_rows(np.ones(self.n_atoms, bool), n, False)))
        state = self.engine.put_state(MDState(
            positions=pad_rows(positions, n).astype(dt),
            velocities=pad_rows(velocities, n).astype(dt),
            forces=np.zeros((n, 3), dt),
            masses=pad_rows(self.masses, n, 1.0).astype(dt),
            cell=np.asarray(cell, dt),
            energy=np.asarray(0.0, dt),
            virial=np.zeros((3, 3), dt),
            chain_xi=np.asarray(chain_xi, dt),
            chain_v=np.asarray(chain_v, dt),
            key=np.asarray(key, np.uint32),
            bath=np.asarray(bath, dt),
            step=np.asarray(step, np.int32),
        ))
        for _ in range(MAX_GROWTH):
            nl = self.engine.empty_list(spec, n, dt)
            new_state, nl = self.engine.init_fn(spec)(state, self.topo, nl)
            if not bool(nl.did_buffer_overflow):
                return new_state, nl
            spec = self._grown(spec, nl, cell)
        raise RuntimeError("the neighbour list kept overflowing at allocation")

    def _start_domains(self, spec, positions, velocities, cell, chain_xi, chain_v, key, bath,
                       step, grid=None):
        """(state, list) on spatial domains (:mod:`md.domain`), or None (one warning line)
        when every domain grid would be thinner than cutoff + skin; the engine is switched."""
        from md.domain import plan_domains

        dspec, why = plan_domains(positions, cell, self._n_dev, spec,
                                  self._domain_grid if grid is None else grid)
        if dspec is None:
            logging.getLogger("md").warning(why)
            self.decomposition = "replicated"
            return None
        self.decomposition = "domain"
        self.engine = _cached_engine(self.spec, self.params, self.dtype, self._n_dev,
                                     self.n_atoms, domain=True)
        self.params = self.engine.params
        dt = self._dt_np
        host = MDState(positions=None, velocities=None, forces=None, masses=None,
                       cell=np.asarray(cell, dt), energy=np.asarray(0.0, dt),
                       virial=np.zeros((3, 3), dt), chain_xi=np.asarray(chain_xi, dt),
                       chain_v=np.asarray(chain_v, dt), key=np.asarray(key, np.uint32),
                       bath=np.asarray(bath, dt), step=np.asarray(step, np.int32))
        state, nl, grown = self.engine.start_fitting(dspec, host, positions, velocities,
                                                     self.masses, self.types,
                                                     max(self.capacity_multiplier, 1.1),
                                                     MAX_GROWTH)
        self.stats["reallocations"] += grown
        return state, nl

    def _regrow(self, state0, nl0, res):
        """(state, list) of a chunk start with buffers grown to fit the overflowing chunk
        result ``res`` (its list and cell); on spatial domains that the cell's compression
        made thinner than the halo, the chunk start laid out on another grid or on the
        replicated path (:meth:`_switch_decomposition`)."""
        cell = np.asarray(res.state.cell)
        if self.decomposition == "domain" and not bool(res.nl.geometry_ok):
            switched = self._switch_decomposition(state0, nl0, cell)
            if switched is not None:
                return switched
        if self.decomposition == "domain":
            self.stats["reallocations"] += 1
            return self.engine.regrow(state0, nl0, res.nl, cell,
                                      max(self.capacity_multiplier, 1.1))
        spec = self._grown(nl0.spec, res.nl, cell)
        return state0, self.engine.repad(nl0, spec)

    def _switch_decomposition(self, state0, nl0, cell):
        """(state, list) of the chunk start ``state0``/``nl0`` on the domain grid that is
        thick enough at ``cell`` (the compressed cell of a rebuild that found the domains
        thinner than the halo), or on the replicated path when none is; one warning line.
        None when the grid at ``cell`` is the current one (not a thickness problem)."""
        from md.domain import choose_grid

        reach = nl0.spec.reach
        grid, _ = choose_grid(cell, self._n_dev, reach)
        if grid == nl0.spec.grid:
            return None
        gather = partial(self.engine.gather, dl=nl0)
        positions, velocities = gather(state0.positions), gather(state0.velocities)
        host = jax.tree.map(np.asarray, state0._replace(positions=None, velocities=None,
                                                        forces=None, masses=None))
        to = "replicated atoms" if grid is None else "×".join(map(str, grid)) + " domains"
        logging.getLogger("md").warning(
            "domain decomposition: the %s domains became thinner than cutoff + skin = %.3g Å "
            "(the cell was compressed); step %d re-run on %s", "×".join(map(str, nl0.spec.grid)),
            reach, int(host.step), to)
        self.stats["reallocations"] += 1
        # the replicated engine; _start_domains switches to the domain engine on a grid
        self.engine = _cached_engine(self.spec, self.params, self.dtype, self._n_dev,
                                     self.n_atoms)
        self.params = self.engine.params
        self.decomposition = "replicated" if grid is None else "domain"
        state, nl = self._initial_state(positions, velocities, host.cell, host.chain_xi,
                                        host.chain_v, host.key, host.bath, int(host.step),
                                        grid=grid)
        return state, dataclasses.replace(nl, rebuilds=nl0.rebuilds)

    def _grown(self, spec, nl, cell):
        """A larger list spec after an overflow (counts as a reallocation)."""
        new = cell_list.grow(spec, nl, cell=np.asarray(cell, np.float64),
                             growth=max(self.capacity_multiplier, 1.1), n_atoms=self.n_atoms)
        if new == spec:
            raise RuntimeError(
                "neighbour list overflow that larger buffers cannot fix (image shifts beyond "
                "±127 cells?)")
        self.stats["reallocations"] += 1
        return new

    def _trim_for_resume(self, out: Path, thermo_format: str) -> None:
        """Drop what the output files hold past the restart step (thermo and grade rows,
        trajectory frames of every whole and per-process file). Process 0 trims; its verdict
        is broadcast (a collective every process reaches), so a file it cannot trim stops
        every process with an error instead of leaving the others waiting in the run's
        collectives. Raises :class:`InputError` naming the file."""
        error = None
        if jax.process_index() == 0:
            traj_stem = out / "trajectory"
            counts = getattr(self, "_resume_meta", {}).get("frames", {})
            jobs = [(out / f"thermo.{thermo_format}", mdio.truncate_thermo, self.step)]
            jobs += [(Path(f"{traj_stem}.{fmt}"), mdio.truncate_frames, int(n))
                     for fmt, n in counts.items()]
            # every whole and per-process file (from a run on any number of processes)
            jobs += [(path, mdio.truncate_frames_after, self.step)
                     for path in mdio.trajectory_files(traj_stem)]
            jobs += [(out / "grades.csv", mdio.truncate_thermo, self.step)]
            for path, trim, arg in jobs:
                try:
                    trim(path, arg)
                except Exception as e:  # noqa: BLE001 - any unreadable file: one error line
                    error = InputError(f"cannot trim it to step {self.step} for resuming "
                                       f"({type(e).__name__}: {e})", path)
                    break
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            if int(multihost_utils.broadcast_one_to_all(np.int32(error is not None))):
                error = error or InputError("process 0 could not trim the output files for "
                                            "resuming (see its error)", out)
        if error is not None:
            raise error

    def _open_outputs(self, out: Path, thermo_format, trajectory_formats, resume: bool):
        rank = jax.process_index()
        traj_stem = out / "trajectory"
        if resume:
            if rank == 0:
                out.mkdir(parents=True, exist_ok=True)
            self._trim_for_resume(out, thermo_format)
        if rank != 0:  # multi-process: process 0 writes the logs (and the gathered system)
            traj = None
            if self.per_process:
                out.mkdir(parents=True, exist_ok=True)
            if self.trajectory_every:
                traj = (mdio.TrajectoryWriter(traj_stem, trajectory_formats, part=rank)
                        if self.per_process else _NullWriter())
            self._out = {"dir": out, "grades": None, "thermo": _NullWriter(), "traj": traj,
                         "restart": out / mdio.RESTART_PARTS if self.per_process else None}
            return
        out.mkdir(parents=True, exist_ok=True)
        thermo_path = out / f"thermo.{thermo_format}"
        grades_path = out / "grades.csv"
        if self._selected_path is None and self.gamma_select is not None:
            self._selected_path = out / SELECTED_FILE
        elif self._selected_path is not None and not self._selected_path.is_absolute():
            self._selected_path = out / self._selected_path
        self._out = {
            "dir": out,
            "grades": _GradeLog(grades_path) if self.grade_every else None,
            "thermo": mdio.ThermoLog(thermo_path,
                                     THERMO_EXTRA + (("gamma",) if self.grade_every else ())),
            "traj": mdio.TrajectoryWriter(traj_stem, trajectory_formats,
                                          part=0 if self.per_process else None)
            if self.trajectory_every else None,
            "restart": out / (mdio.RESTART_PARTS if self.per_process else "restart.npz"),
        }

    @classmethod
    def from_restart(cls, path, potential, **kwargs) -> Simulation:
        """Resume from a restart file written by :meth:`write_restart`, or from a folder of
        per-process restart parts (``restart.parts``; any number of processes and devices)
        (same other arguments as the constructor; positions, velocities, cell and thermostat
        state come from the file; logs and trajectories in ``output_dir`` are cut back to the
        restart step)."""
        arrays, meta = mdio.load_restart(path)
        atoms = Atoms(numbers=arrays["numbers"], positions=arrays["positions"],
                      cell=arrays["cell"], pbc=True)
        obj = cls.__new__(cls)
        obj._resume_meta = meta
        cls.__init__(obj, potential, atoms, _restart=(arrays, meta), **kwargs)
        return obj

    # ------------------------------------------------------------------ accessors
    def _per_atom(self, x) -> np.ndarray:
        """Host copy [N, …] (float64) of a per-atom device array, in atom order."""
        if self.decomposition == "domain":
            return self.engine.gather(x, self.nl)
        if jax.process_count() > 1:  # replicated path over several processes
            from jax.experimental import multihost_utils

            x = multihost_utils.process_allgather(x, tiled=True)
        return np.asarray(x, dtype=np.float64)[: self.n_atoms]

    def _local_part(self) -> tuple[np.ndarray, dict]:
        """(global atom ids [n], {positions, velocities, forces: [n, 3] float64}) of the atoms
        whose rows this process holds (no communication; n ≈ N / processes)."""
        rows, data = _addressable_rows((self.state.positions, self.state.velocities,
                                        self.state.forces)
                                       + ((self.nl.ids,) if self.decomposition == "domain"
                                          else ()))
        if self.decomposition == "domain":
            ids = data[3].astype(np.int64)
            keep = ids >= 0
        else:  # replicated path: rows in atom order, padding at the end
            ids = rows
            keep = ids < self.n_atoms
        names = ("positions", "velocities", "forces")
        return ids[keep], {k: np.asarray(v, np.float64)[keep]
                           for k, v in zip(names, data[:3], strict=True)}

    def positions(self) -> np.ndarray:
        """Current positions [N, 3] (Å, unwrapped since the last neighbour rebuild)."""
        return self._per_atom(self.state.positions)

    def velocities(self) -> np.ndarray:
        return self._per_atom(self.state.velocities)

    def forces(self) -> np.ndarray:
        return self._per_atom(self.state.forces)

    def cell(self) -> np.ndarray:
        return np.asarray(self.state.cell, dtype=np.float64)

    def atoms(self) -> Atoms:
        from ase.units import fs

        a = Atoms(numbers=self.numbers, positions=self.positions(), cell=self.cell(), pbc=True)
        a.set_velocities(self.velocities() / fs)
        return a

    # ------------------------------------------------------------------ the loop
    def _schedule(self, stage: StageConfig, start: int) -> Schedule:
        dt = self._dt_np
        values = (start, stage.steps, stage.temperature_K, stage.temperature_end_K,
                  stage.pressure_GPa, stage.pressure_end_GPa)
        return Schedule(*(np.asarray(v, dt) for v in values))

    def run_stage(self, stage: StageConfig, start_step: int | None = None,
                  pbar: tqdm | None = None) -> None:
        """Run ``stage`` from ``start_step`` (default: the current step) to its end."""
        start = self.step if start_step is None else int(start_step)
        end = start + stage.steps
        ens = ensemble_spec(stage, self.dt, self.n_atoms)
        every = self.thermo_every if self.thermo_every else 2 ** 30
        max_records = self.chunk_steps // every + 1 if self.thermo_every else 1
        with self._ctx():
            sched = self._schedule(stage, start)
            if self.step == 0 and not self.history:
                obs = self.engine.observables_fn(ens)(self.state, sched)
                self._record(jax.device_get(obs), 0, sched)
            own_bar = pbar is None and self.progress
            bar = tqdm(total=end - self.step, unit="step", desc=stage.name) if own_bar else pbar
            t_start = time.perf_counter()
            step0 = self.step

            def dispatch(state, nl, first):
                n = self._chunk_length(first, end)
                fn = self.engine.chunk_fn(ens, nl.spec, max_records)
                return first, n, state, nl, fn(state, nl, self.topo, np.int32(n),
                                               np.int32(every), sched)

            current = dispatch(self.state, self.nl, self.step) if self.step < end else None
            while current is not None:
                first, n, state0, nl0, res = current
                # the next chunk is queued on the device before this one is read
                following = dispatch(res.state, res.nl, first + n) if first + n < end else None
                if bool(res.nl.did_buffer_overflow):
                    # re-run this chunk from its start with buffers that fit (one recompile)
                    self.stats["reruns"] += 1
                    current = dispatch(*self._regrow(state0, nl0, res), first)
                    continue
                if bool(res.bad):
                    self.state, self.nl = res.state, res.nl
                    self.step = first + int(res.steps)
                    raise FloatingPointError(
                        f"non-finite energy at step {self.step} (stage {stage.name}); "
                        "time step too large or atoms too close?")
                self.state, self.nl, self.step = res.state, res.nl, first + n
                self.stats["steps"] += n
                self.stats["rebuilds"] = int(res.nl.rebuilds)
                records, rec_steps = jax.device_get((res.records, res.record_steps))
                # γ first (a chunk ends on a grade step), so that its thermo row carries it
                gamma = (self._record_grade() if self.grade_every
                         and self.step % self.grade_every == 0 else None)
                for k in np.nonzero(rec_steps >= 0)[0]:
                    self._record(jax.tree.map(lambda a, k=k: a[k], records), int(rec_steps[k]),
                                 sched, gamma if int(rec_steps[k]) == self.step else None)
                if gamma is not None:
                    self._check_break(gamma)
                self._io_events()
                if bar is not None:
                    bar.update(n)
                    rate = (self.step - step0) / max(time.perf_counter() - t_start, 1e-9)
                    bar.set_postfix({
                        "ns/day": f"{rate * self.dt * FS_TO_NS * 86400:.3g}",
                        "atom-steps/s": f"{rate * self.n_atoms:.3g}",
                    })
                current = following
            self.stats["wall_s"] += time.perf_counter() - t_start
            if own_bar:
                bar.close()

    def _chunk_length(self, first: int, end: int) -> int:
        """Steps of the chunk starting at ``first``: up to the stage end, ``chunk_steps`` or
        the next trajectory/restart output (thermo rows are recorded inside chunks)."""
        stop = min(end, first + self.chunk_steps)
        for every in (self.trajectory_every, self.restart_every):
            if every and self._out is not None:
                stop = min(stop, (first // every + 1) * every)
        if self.grade_every:  # γ needs the positions at its steps: a chunk ends there
            stop = min(stop, (first // self.grade_every + 1) * self.grade_every)
        return stop - first

    def _io_events(self) -> None:
        s = self.step
        if self._out is None:
            return
        if self.trajectory_every and s % self.trajectory_every == 0 and self._out["traj"]:
            if self.per_process:
                self._out["traj"].write(*self._frame_part())
            else:
                self._out["traj"].write(self._frame())
        if self.restart_every and s % self.restart_every == 0:
            self.write_restart(self._out["restart"])

    def _record_grade(self) -> float:
        """MaxVol extrapolation grade γ of the current positions (as ``mlp calc-grade``),
        appended to :attr:`grades` and ``grades.csv``."""
        from mtpjax.grade import _AtomsView

        view = _AtomsView(self.positions(), self.types, self.cell(), np.ones(3, bool))
        gamma = float(self.grader.grade([view])[0])
        self.grades.append((int(self.step), gamma))
        if self._out is not None and self._out.get("grades") is not None:
            self._out["grades"].write(int(self.step), gamma)
        if self.gamma_select is not None and gamma > self.gamma_select:
            self._save_selected(gamma)
        return gamma

    def _check_break(self, gamma: float) -> None:
        """Stop the run (:class:`ExtrapolationBreak`) when ``gamma`` exceeds gamma_break."""
        if self.gamma_break is not None and gamma > self.gamma_break:
            raise ExtrapolationBreak(int(self.step), gamma, self.gamma_break,
                                     len(self.selected), self._selected_path)

    def _save_selected(self, gamma: float) -> None:
        """Keep the current configuration (MTP energy, forces, stress; ``Feature MV_grade``)
        in :attr:`selected` and append it to the selected file, as MLIP's LAMMPS interface
        does with ``select:save-selected``."""
        from mtpjax.grade import format_grade
        from mtpjax.io.cfg import Configuration, format_configuration

        # the state's virial is stress × volume (eV); MLIP's PlusStress is its negative
        virial = np.asarray(self.state.virial, dtype=np.float64)
        cfg = Configuration(
            positions=self._wrap(self.positions(), self.cell()), types=self.types.copy(),
            cell=self.cell(), pbc=np.ones(3, bool), energy=float(self.state.energy),
            forces=self.forces(),
            plus_stress=-np.array([virial[0, 0], virial[1, 1], virial[2, 2], virial[1, 2],
                                   virial[0, 2], virial[0, 1]]),
            features={"MV_grade": format_grade(gamma), "MD_step": str(int(self.step))})
        self.selected.append(cfg)
        if self._selected_path is not None:
            self._selected_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._selected_path, "a") as fh:
                fh.write(format_configuration(cfg) + "\n")

    def _record(self, obs, step: int, sched, gamma: float | None = None) -> dict:
        """Append the thermo row of ``obs`` (host :class:`~md.ensembles.Observables`) at
        ``step`` to the history and the thermo file; with grading on (``grade_every``), its
        ``gamma`` column is γ at ``step`` when that step is graded, NaN otherwise."""
        p_t = np.asarray(obs.pressure_tensor_GPa)
        f = np.clip((step - float(sched.start)) / max(float(sched.length), 1), 0, 1)
        row = {
            "step": int(step), "time_fs": step * self.dt, "T_K": float(obs.T_K),
            "P_GPa": float(obs.P_GPa), "V_A3": float(obs.V_A3), "E_pot": float(obs.E_pot),
            "E_tot": float(obs.E_tot), "conserved": float(obs.conserved),
            "E_kin": float(obs.E_kin),
            "T_target_K": float(sched.T0 + f * (sched.T1 - sched.T0)),
            "P_target_GPa": float(sched.P0 + f * (sched.P1 - sched.P0)),
            "Pxx_GPa": float(p_t[0, 0]), "Pyy_GPa": float(p_t[1, 1]),
            "Pzz_GPa": float(p_t[2, 2]),
        }
        if self.grade_every:
            row["gamma"] = float("nan") if gamma is None else float(gamma)
        self.history.append(row)
        if self._out is not None:
            self._out["thermo"].write(row)
        return row

    def _frame_info(self) -> tuple[dict, np.ndarray]:
        """(frame info, ASE stress Voigt [6] eV/Å³) of the current step."""
        row = self.history[-1] if self.history and self.history[-1]["step"] == self.step \
            else None
        vol = abs(np.linalg.det(self.cell()))
        virial = np.asarray(self.state.virial, dtype=np.float64)
        s = virial / vol
        info = {"step": int(self.step), "time_fs": self.step * self.dt}
        if row is not None:
            info.update(pressure_GPa=row["P_GPa"], T_K=row["T_K"])
        else:
            info["pressure_GPa"] = float(-np.trace(s) / 3 * EV_A3_TO_GPA)
        return info, np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])

    def _frame(self) -> Atoms:
        info, stress = self._frame_info()
        return mdio.frame_atoms(
            self._wrap(self.positions(), self.cell()), self.cell(), self.numbers,
            velocities=self.velocities(), energy=float(self.state.energy),
            forces=self.forces(), stress_voigt=stress, info=info)

    def _frame_part(self) -> tuple[Atoms, np.ndarray]:
        """(this process's part of the current frame, its global atom ids): the atoms it
        holds, with the system's energy and stress and ``n_atoms``, ``part``, ``n_parts`` in
        ``info``."""
        info, stress = self._frame_info()
        info.update(n_atoms=self.n_atoms, part=jax.process_index(),
                    n_parts=jax.process_count())
        ids, a = self._local_part()
        return mdio.frame_atoms(
            self._wrap(a["positions"], self.cell()), self.cell(), self.numbers[ids],
            velocities=a["velocities"], energy=float(self.state.energy), forces=a["forces"],
            stress_voigt=stress, info=info), ids

    def write_restart(self, path) -> None:
        """Atomic restart file: state, step and the frame counts of the trajectory files.
        In a multi-process run every process calls this; with per-process output each
        process writes the atoms it holds to ``path/p{rank}.npz`` (``path``: the
        ``restart.parts`` folder), otherwise the per-atom arrays are gathered and process 0
        (``path`` not None) writes."""
        st = self.state
        replicated = {
            "cell": self.cell(), "chain_xi": np.asarray(st.chain_xi, np.float64),
            "chain_v": np.asarray(st.chain_v, np.float64), "key": np.asarray(st.key),
            "bath": np.asarray(st.bath, np.float64)}
        if self.per_process:
            if path is None:
                return
            ids, a = self._local_part()
            mdio.save_restart_part(
                path, jax.process_index(), jax.process_count(), ids,
                {"positions": a["positions"], "velocities": a["velocities"],
                 "numbers": self.numbers[ids], **replicated},
                {"step": int(self.step), "timestep_fs": self.dt, "n_atoms": self.n_atoms})
            return
        arrays = {"positions": self.positions(), "velocities": self.velocities(),
                  "numbers": self.numbers, **replicated}
        if path is None:
            return
        frames = {}
        if self._out is not None and self._out["traj"] is not None:
            frames = self._out["traj"].frame_counts()
        mdio.save_restart(path, arrays, {"step": int(self.step), "frames": frames,
                                         "timestep_fs": self.dt})

    def close(self) -> None:
        if self._out is not None:
            self._out["thermo"].close()
            if self._out.get("grades") is not None:
                self._out["grades"].close()


#: name of the file of configurations with γ > gamma_select in ``output_dir``
SELECTED_FILE = "preselected.cfg"


class ExtrapolationBreak(RuntimeError):
    """The MaxVol grade γ exceeded ``gamma_break``: the run stopped (as MLIP's LAMMPS
    interface stops at ``select:threshold-break``). ``step``, ``gamma``, ``threshold``,
    ``saved`` (configurations with γ > gamma_select so far) and ``path`` (their file)."""

    def __init__(self, step: int, gamma: float, threshold: float, saved: int, path):
        self.step, self.gamma, self.threshold, self.saved, self.path = (
            step, gamma, threshold, saved, path)
        where = (f"{saved} configuration(s) with γ > gamma_select saved to {path}"
                 if path is not None else f"{saved} configuration(s) with γ > gamma_select kept "
                 "in Simulation.selected (no output_dir)")
        super().__init__(f"extrapolation: γ = {gamma:.6g} at step {step} exceeds gamma_break "
                         f"= {threshold:g}; MD stopped; {where}")


def _gamma_thresholds(gamma_select, gamma_break, grade_every):
    """Validated (gamma_select, gamma_break): None or > 0; they need ``grade_every``;
    ``gamma_select`` defaults to ``gamma_break`` when only the latter is given (so that the
    configuration that stops the run is saved)."""
    for name, v in (("gamma_select", gamma_select), ("gamma_break", gamma_break)):
        if v is not None and not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a number > 0, got {v}")
    if (gamma_select is not None or gamma_break is not None) and not grade_every:
        raise ValueError("gamma_select / gamma_break need grade_every > 0 (γ is computed every "
                         "grade_every steps)")
    if gamma_select is not None and gamma_break is not None and gamma_select > gamma_break:
        raise ValueError(f"gamma_select = {gamma_select} must not exceed gamma_break = "
                         f"{gamma_break}")
    if gamma_select is None and gamma_break is not None:
        gamma_select = gamma_break
    return (None if gamma_select is None else float(gamma_select),
            None if gamma_break is None else float(gamma_break))


def _grader(active_set, potential):
    """The :class:`mtpjax.grade.Grader` of ``active_set`` (a Grader or a saved state path),
    checked to belong to ``potential``."""
    from mtpjax.grade import Grader

    if active_set is None:
        raise ValueError("grade_every needs an active_set (a state saved by mtpjax calc-grade "
                         "--als-filename, or a mtpjax.grade.Grader)")
    grader = active_set if isinstance(active_set, Grader) else Grader.load(active_set)
    mine, theirs = potential.params(), grader.potential.params()
    if any(not np.array_equal(mine[k], theirs[k]) for k in mine):
        raise ValueError("the active set was selected with a different potential")
    return grader


def _addressable_rows(arrays) -> tuple[np.ndarray, list[np.ndarray]]:
    """(global row indices [n], [rows [n, …] of each array]) of the rows of row-sharded
    arrays (all sharded alike) that this process holds, each row once (numpy; no
    communication)."""
    blocks: dict[int, list] = {}
    for k, x in enumerate(arrays):
        for sh in x.addressable_shards:
            start = (sh.index[0].start or 0) if sh.index else 0
            if k == 0:
                blocks.setdefault(start, [None] * len(arrays))
            if start in blocks and blocks[start][k] is None:
                blocks[start][k] = np.asarray(sh.data)
    starts = sorted(blocks)
    rows = np.concatenate([start + np.arange(len(blocks[start][0])) for start in starts])
    return rows, [np.concatenate([blocks[start][k] for start in starts])
                  for k in range(len(arrays))]


class _NullWriter:
    """Stands in for the thermo log and trajectory writer on processes other than 0."""

    def write(self, *_):
        pass

    def frame_counts(self) -> dict:
        return {}

    def close(self) -> None:
        pass


class _GradeLog:
    """``grades.csv``: ``step,gamma`` rows, appended and flushed per row."""

    def __init__(self, path: Path):
        new = not path.exists() or path.stat().st_size == 0
        self._fh = open(path, "a")
        if new:
            self._fh.write("step,gamma\n")
            self._fh.flush()

    def write(self, step: int, gamma: float) -> None:
        self._fh.write(f"{step},{gamma:.10g}\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def grade_kwargs(cfg: MDConfig, gamma_select=None, gamma_break=None) -> dict:
    """:class:`Simulation` arguments of the config's ``[grade]`` section (thresholds
    overridden where given)."""
    gamma_select = cfg.gamma_select if gamma_select is None else gamma_select
    gamma_break = cfg.gamma_break if gamma_break is None else gamma_break
    if cfg.active_set is None:
        if gamma_select is not None or gamma_break is not None:
            raise ValueError("gamma_select / gamma_break need an active set ([grade] "
                             "active_set in the config)")
        return {}
    return dict(active_set=cfg.active_set, grade_every=cfg.grade_every,
                gamma_select=gamma_select, gamma_break=gamma_break,
                selected_file=cfg.selected_file)


def run_config(cfg: MDConfig, resume: bool = False, progress: bool | None = None,
               devices=None, output_dir=None, decomposition=None, gamma_select=None,
               gamma_break=None) -> Simulation:
    """Run all stages of a validated config; ``resume`` continues from the newer of
    ``restart.npz`` and ``restart.parts/`` (:func:`md.io.latest_restart`);
    ``gamma_select``/``gamma_break`` override the config's ``[grade]`` thresholds. A γ above
    ``gamma_break`` raises :class:`ExtrapolationBreak` (the outputs are closed first)."""
    out = Path(output_dir) if output_dir is not None else cfg.output_dir
    atoms = build_structure(cfg)
    kwargs = dict(
        species=cfg.species, timestep_fs=cfg.timestep_fs, temperature_K=cfg.temperature_K,
        seed=cfg.seed, skin_A=cfg.skin_A, capacity_multiplier=cfg.capacity_multiplier,
        devices=cfg.devices if devices is None else devices, dtype=cfg.dtype,
        decomposition=cfg.decomposition if decomposition is None else decomposition,
        chunk_steps=cfg.chunk_steps, output_dir=out, thermo_every=cfg.thermo_every,
        thermo_format=cfg.thermo_format, trajectory_every=cfg.trajectory_every,
        trajectory_formats=cfg.trajectory_formats, restart_every=cfg.restart_every,
        progress=cfg.progress if progress is None else progress,
        per_process_output=cfg.per_process_output,
        **grade_kwargs(cfg, gamma_select, gamma_break))
    restart = mdio.latest_restart(out) if resume else None
    if restart is not None:
        sim = Simulation.from_restart(restart, cfg.potential_file, **kwargs)
    else:
        if resume:
            raise InputError(f"no restart file to resume from (neither restart.npz nor "
                             f"{mdio.RESTART_PARTS}/p0.npz)", out)
        sim = Simulation(cfg.potential_file, atoms, **kwargs)
    bar = tqdm(total=cfg.total_steps, initial=sim.step, unit="step",
               disable=not kwargs["progress"])
    start = 0
    try:
        for stage in cfg.stages:
            if sim.step < start + stage.steps:
                bar.set_description(stage.name)
                sim.run_stage(stage, start_step=start, pbar=bar)
            start += stage.steps
        if sim._out is not None:
            sim.write_restart(sim._out["restart"])
    finally:
        bar.close()
        sim.close()
    return sim
