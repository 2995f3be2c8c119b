"""Energy + forces + stress throughput of mtpjax MTPs (atom-steps/s), optionally against `mlp`.

Cases: rattled diamond Si (a = 5.431 Å, Gaussian rattle 0.1 Å, seed 0) of 216/1000/4096 atoms
at levels 8/16/20 (the parity potentials tests/data/parity/si_LXX/pot.mtp), float64 and
float32. Per case: neighbour-list build time, compile time (first call minus a steady step),
steady step time (wall and CPU; best of ``--steps`` calls with moved positions), and whether
moving the positions recompiled anything (jit cache size). ``--threads 1`` (default) pins the
process to one core and runs XLA single-threaded, so "per core" = atoms / CPU-seconds per step.

Also in the same run:
* ``--autodiff``: the generic path (jax.grad of ``total_energy``, what MD/fitting code
  differentiates) next to the explicit-reverse ``energy_forces_virial``;
* ``--baseline-src DIR``: the same cases with an older mtpjax source tree (subprocess with
  ``PYTHONPATH=DIR``), e.g. ``git archive 9525f79 mtpjax | tar -x -C /tmp/base``;
* ``MLP_BIN=/path/to/mlp``: ``mlp calc-efs`` on the same cells (1 and 1+R copies in one .cfg,
  throughput from the difference, so start-up and file reading cancel), with the ratio;
* ``--calculator``: the ASE path as MD drives it, ``MTPCalculator`` with
  ``get_potential_energy``/``get_forces``/``get_stress`` after every move of the atoms
  vibrating about their sites as at 300 K (``--calc-steps`` calls after a first one),
  counting XLA compiles and jit traces after the first call (jax monitoring events; should be
  0), neighbour-list rebuilds and repacks; best, median and amortised (all calls, rebuilds
  included) CPU time per call;
* ``--sizes 1000 ... 1000000``: level-16 size sweep with chunked evaluation
  (:mod:`mtpjax.evaluate`), each size in its own process to record its peak RSS.
MOTEP is benchmarked only when ``motep`` is importable (it is not a dependency).

Writes ``<out>.json``, ``<out>.md`` and (with ``--sizes``) ``<out>.png``, with the exact command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import versions as package_versions  # noqa: E402

PARITY = ROOT / "tests" / "data" / "parity"
MLP_REFERENCE = 2.3e4  # SPEC §5: mlp calc-efs, level 16, one core of the 2-core machine


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", type=int, nargs="*", default=[8, 16, 20])
    p.add_argument("--atoms", type=int, nargs="+", default=[216, 1000, 4096],
                   help="8·n³ atoms (n = 3, 5, 8 conventional cells per side)")
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    p.add_argument("--steps", type=int, default=5, help="timed steps per case")
    p.add_argument("--threads", type=int, default=1, help="1: one core, single-threaded XLA")
    p.add_argument("--autodiff", action="store_true", help="also time jax.grad(total_energy)")
    p.add_argument("--calculator", action="store_true",
                   help="also time the ASE calculator path (MTPCalculator, as MD calls it)")
    p.add_argument("--calc-steps", type=int, default=60, help="timed calculator calls per case")
    p.add_argument("--baseline-src", type=Path, help="older mtpjax source tree to compare")
    p.add_argument("--sizes", type=int, nargs="*", default=[],
                   help="level-16 size sweep (atoms, rounded to 8·n³), e.g. 1000 ... 1000000")
    p.add_argument("--chunk", type=int, default=8192, help="central atoms per chunk (sweep)")
    p.add_argument("--mlp-copies", type=int, default=8, help="R extra copies for mlp timing")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_efs")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one case as JSON
    return p.parse_args(argv)


def configure_threads(threads: int):
    """Must run before jax is imported."""
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
        try:
            cpus = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {cpus[-1]})
        except (AttributeError, OSError):
            pass


def rattled_diamond(n_atoms: int, rattle: float = 0.1, seed: int = 0):
    import numpy as np
    from ase.build import bulk

    reps = max(1, round((n_atoms / 8) ** (1 / 3)))
    atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(reps)
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
    return atoms


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _timed_calls(fn, args_for_step, steps):
    import jax

    walls, cpus = [], []
    for k in range(steps):
        args = args_for_step(k + 1)
        c0, t0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(fn(*args))
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return walls, cpus


#: jax monitoring events of a jit trace (cache miss) and of an XLA compile (eager ops included)
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/backend_compile_duration")


class CompileCounter:
    """Counts jit traces and XLA compiles (jax.monitoring events) while active."""

    def __init__(self):
        self.events: list[str] = []

    def _listener(self, event, duration, **kwargs):
        if event in COMPILE_EVENTS:
            self.events.append(event)

    def __enter__(self):
        import jax

        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        import jax

        jax.monitoring.unregister_event_duration_listener(self._listener)

    @property
    def compiles(self) -> int:
        return self.events.count(COMPILE_EVENTS[1])

    @property
    def traces(self) -> int:
        return self.events.count(COMPILE_EVENTS[0])


#: vibration of the atoms in the calculator loop: amplitude per Cartesian component (Å, drawn
#: from N(0, σ²)) and period (steps); Si at 300 K has a thermal displacement of ~0.045 Å per
#: component and optical phonons of ~15 THz (~65 fs), so with 1 fs steps this moves atoms a
#: little faster (5e-3 Å per step per component at most) and as far as a 300 K run does
VIBRATION_A, VIBRATION_PERIOD = 0.05, 60


def run_calculator(level: int, n_atoms: int, dtype_name: str, steps: int) -> dict:
    """The ASE calculator path as an MD loop drives it: energy, forces and stress through
    ``MTPCalculator`` (get_potential_energy, get_forces, get_stress) after every move.

    The atoms of the rattled cell vibrate about their sites, x_i(k) = x_i + a_i sin(2πk/T + φ_i)
    (a_i ~ N(0, :data:`VIBRATION_A`²) per component, random phases, T =
    :data:`VIBRATION_PERIOD` steps; same cell), so the calculator's skin list is rebuilt and
    its packed list repacked as in such a run; both are counted, and the CPU time of all
    `steps` calls after the first ("amortised", rebuilds included) is reported next to the
    best and median call. One extra call with all atoms moved 0.3 Å (beyond the skin) times a
    rebuild on its own.
    """
    import numpy as np

    from mtpjax.calculator import MTPCalculator

    atoms = rattled_diamond(n_atoms)
    n = len(atoms)
    calc = MTPCalculator(PARITY / f"si_L{level:02d}" / "pot.mtp", species=["Si"],
                         dtype=dtype_name)
    ev = calc.evaluator
    atoms.calc = calc
    pos0 = atoms.positions.copy()
    rng = np.random.default_rng(1)
    amplitude = VIBRATION_A * rng.standard_normal(pos0.shape)
    phase = rng.uniform(0.0, 2.0 * np.pi, pos0.shape)

    def at_step(k):
        return pos0 + amplitude * np.sin(2.0 * np.pi * k / VIBRATION_PERIOD + phase)

    def efs():
        return (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())

    atoms.positions = at_step(0)
    with CompileCounter() as first_counter:
        t0 = time.perf_counter()
        efs()
        first = time.perf_counter() - t0
    walls, cpus, rebuilds, repacks = [], [], 0, 0
    with CompileCounter() as counter:
        for k in range(1, steps + 1):
            atoms.positions = at_step(k)
            nl_before, packed_before = ev._nl, ev._nbrs_dev
            c0, t0 = time.process_time(), time.perf_counter()
            efs()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            rebuilds += ev._nl is not nl_before
            repacks += ev._nbrs_dev is not packed_before
        # one rebuild step: every atom moved 0.3 Å (more than skin/2), same pairs
        atoms.positions = atoms.positions + 0.3
        nl_before = ev._nl
        c0, t0 = time.process_time(), time.perf_counter()
        efs()
        rebuild_wall, rebuild_cpu = time.perf_counter() - t0, time.process_time() - c0
        rebuilt = ev._nl is not nl_before
    atoms.positions = pos0  # the core row's geometry: the two paths must agree
    energy = float(atoms.get_potential_energy())
    cpu_total = float(sum(cpus))
    return {
        "first_call_s": first, "first_call_compiles": first_counter.compiles,
        "steps": steps, "vibration_amplitude_A": VIBRATION_A,
        "vibration_period_steps": VIBRATION_PERIOD, "skin_A": ev.skin,
        "packed_neighbors_J": int(ev._nbrs_dev[4].idx.shape[1]),
        "compiles_after_first_call": counter.compiles,
        "traces_after_first_call": counter.traces,
        "rebuilds_in_loop": rebuilds, "repacks_in_loop": repacks,
        "step_wall_s_best": min(walls), "step_wall_s_median": float(np.median(walls)),
        "step_cpu_s_best": min(cpus), "step_cpu_s_median": float(np.median(cpus)),
        "step_cpu_s_amortised": cpu_total / steps,
        "atom_steps_per_cpu_s": n / max(min(cpus), 1e-9),
        "atom_steps_per_cpu_s_amortised": n * steps / max(cpu_total, 1e-9),
        "atom_steps_per_s_wall": n / min(walls),
        "rebuild_step_wall_s": rebuild_wall, "rebuild_step_cpu_s": rebuild_cpu,
        "rebuild_happened": bool(rebuilt),
        "energy_eV": float(energy),
    }


def run_case(level: int, n_atoms: int, dtype_name: str, steps: int, autodiff: bool,
             calculator: bool = False, calc_steps: int = 60) -> dict:
    """One (level, size, dtype) case in this process."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from mtpjax.io.mtp_file import read_mtp
    from mtpjax.model import ModelSpec
    from mtpjax.neighbors import allocate
    from mtpjax.potential import energy_forces_virial, total_energy

    dtype = jnp.dtype(dtype_name)
    pot = read_mtp(PARITY / f"si_L{level:02d}" / "pot.mtp")
    spec = ModelSpec.from_potential(pot)
    params = {k: jnp.asarray(v, dtype) for k, v in pot.params().items()}
    atoms = rattled_diamond(n_atoms)
    n = len(atoms)
    t0 = time.perf_counter()
    nl = allocate(atoms.positions, atoms.cell[:], True, pot.max_dist)
    t_nl = time.perf_counter() - t0
    pos0 = np.asarray(atoms.positions)
    cell = jnp.asarray(atoms.cell[:], dtype)
    types = jnp.zeros(n, jnp.int32)
    nb = nl.neighbors._replace(shifts=nl.neighbors.shifts.astype(dtype))
    rng = np.random.default_rng(1)

    def moved(k):  # new positions (same neighbour list), as an MD step would give
        return jnp.asarray(pos0 + 1e-3 * k * rng.standard_normal(pos0.shape), dtype)

    def explicit(p, x, c, t, b):
        return energy_forces_virial(spec, p, x, c, t, b)

    variants = {"explicit": jax.jit(explicit)}
    if autodiff:
        def ad(p, x, c, t, b):
            def fn(pos, eps):
                return total_energy(spec, p, pos, c, t, b, 0.5 * (eps + eps.T))
            e, (gx, ge) = jax.value_and_grad(fn, argnums=(0, 1))(x, jnp.zeros((3, 3), dtype))
            return e, -gx, ge
        variants["autodiff"] = jax.jit(ad)
    out = {"level": level, "atoms": n, "dtype": dtype_name, "neighbors": int(nl.capacity),
           "neighbor_list_s": t_nl}
    for name, f in variants.items():
        t0 = time.perf_counter()
        e, forces, virial = jax.block_until_ready(f(params, moved(0), cell, types, nb))
        first = time.perf_counter() - t0
        size_before = f._cache_size()
        walls, cpus = _timed_calls(f, lambda k: (params, moved(k), cell, types, nb), steps)
        recompiled = f._cache_size() != size_before
        step = float(np.median(walls))
        out[name] = {
            "compile_s": max(first - step, 0.0),
            "step_wall_s_best": min(walls), "step_wall_s_median": step,
            "step_cpu_s_best": min(cpus), "step_cpu_s_median": float(np.median(cpus)),
            "atom_steps_per_s_wall": n / min(walls),
            "atom_steps_per_cpu_s": n / max(min(cpus), 1e-9),
            "recompiled_when_positions_change": bool(recompiled),
            "energy_eV": float(e),
        }
    if autodiff:  # the two paths must agree
        out["autodiff_vs_explicit_max_dF"] = float(jnp.max(jnp.abs(
            variants["explicit"](params, moved(0), cell, types, nb)[1]
            - variants["autodiff"](params, moved(0), cell, types, nb)[1])))
    if dtype != jnp.float64:  # accuracy of the reduced precision against float64
        p64 = {k: jnp.asarray(v, jnp.float64) for k, v in pot.params().items()}
        x64 = jnp.asarray(np.asarray(moved(0)), jnp.float64)
        nb64 = nl.neighbors._replace(shifts=nl.neighbors.shifts.astype(jnp.float64))
        e64, f64, v64 = explicit(p64, x64, jnp.asarray(atoms.cell[:]), types, nb64)
        e32, f32, v32 = variants["explicit"](params, moved(0), cell, types, nb)
        out["vs_float64"] = {
            "abs_dE_per_atom_eV": abs(float(e32) - float(e64)) / n,
            "max_abs_dF_eV_A": float(jnp.max(jnp.abs(f32.astype(jnp.float64) - f64))),
            "max_abs_dvirial_eV": float(jnp.max(jnp.abs(v32.astype(jnp.float64) - v64))),
        }
    if calculator:
        out["calculator"] = run_calculator(level, n_atoms, dtype_name, calc_steps)
        out["calculator"]["vs_explicit_dE_eV"] = abs(out["calculator"]["energy_eV"]
                                                      - out["explicit"]["energy_eV"])
    out["peak_rss_gib"] = peak_rss_gib()
    return out


def run_size(n_atoms: int, chunk: int) -> dict:
    """Level-16 float64 chunked evaluation of one large cell (its own process)."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from mtpjax.evaluate import _chunk_step, balanced_chunk, build_pairs, pack_chunk
    from mtpjax.io.mtp_file import read_mtp
    from mtpjax.model import ModelSpec

    pot = read_mtp(PARITY / "si_L16" / "pot.mtp")
    spec = ModelSpec.from_potential(pot)
    params = {k: jnp.asarray(v) for k, v in pot.params().items()}
    atoms = rattled_diamond(n_atoms)
    n = len(atoms)
    rss_atoms = peak_rss_gib()
    t0 = time.perf_counter()
    pairs = build_pairs(atoms.positions, atoms.cell[:], True, pot.max_dist)
    t_pairs = time.perf_counter() - t0
    chunk = balanced_chunk(n, chunk)
    pos = jnp.asarray(atoms.positions)
    cell = jnp.asarray(atoms.cell[:])
    types = jnp.zeros(n, jnp.int32)
    acc = (jnp.zeros(()), jnp.zeros((n, 3)), jnp.zeros((3, 3)))
    walls, cpus = [], []
    n_chunks = -(-n // chunk)
    passes = 2 if n_chunks == 1 else 1  # a single chunk: time a second pass after compiling
    for _ in range(passes):
        acc = (jnp.zeros(()), jnp.zeros((n, 3)), jnp.zeros((3, 3)))  # one full evaluation
        for start in range(0, n, chunk):
            c0, w0 = time.process_time(), time.perf_counter()
            args = pack_chunk(pairs, start, chunk)
            acc = jax.block_until_ready(
                _chunk_step(spec, params, acc, pos, cell, types, jnp.asarray(start), *args))
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    compile_s = walls[0] - (walls[1] if len(walls) > 1 else 0.0)
    steady_w, steady_c = walls[1:], cpus[1:]
    atoms_timed = n if n_chunks == 1 else n - chunk  # all but the first (compiling) chunk
    mem = None
    try:
        args = pack_chunk(pairs, 0, chunk)
        compiled = _chunk_step.lower(spec, params, acc, pos, cell, types, jnp.asarray(0),
                                     *args).compile()
        ma = compiled.memory_analysis()
        mem = int(ma.temp_size_in_bytes) if ma is not None else None
    except Exception:  # memory analysis is best-effort on CPU backends
        mem = None
    energy, forces, virial = acc
    return {
        "atoms": n, "chunk": chunk, "chunks": n_chunks, "pairs": int(pairs.starts[-1]),
        "neighbor_build_s": t_pairs, "compile_s": compile_s,
        "eval_wall_s": float(sum(steady_w)), "eval_cpu_s": float(sum(steady_c)),
        "atom_steps_per_s_wall": atoms_timed / max(sum(steady_w), 1e-9),
        "atom_steps_per_cpu_s": atoms_timed / max(sum(steady_c), 1e-9),
        "energy_per_atom_eV": float(energy) / n,
        "max_force_eV_A": float(jnp.max(jnp.abs(forces))),
        "virial_trace_eV": float(jnp.trace(virial)),
        "chunk_temp_bytes": mem,
        "chunk_temp_bytes_per_atom": None if mem is None else mem / chunk,
        "peak_rss_gib": peak_rss_gib(), "rss_after_structure_gib": rss_atoms,
    }


def run_mlp(mlp_bin: str, level: int, n_atoms: int, copies: int) -> dict:
    """Time `mlp calc-efs` on 1 and 1+copies copies of the cell; throughput from the difference."""
    from mtpjax.io.cfg import Configuration, write_cfg

    atoms = rattled_diamond(n_atoms)
    n = len(atoms)
    pot = PARITY / f"si_L{level:02d}" / "pot.mtp"
    conf = Configuration(positions=atoms.positions, types=[0] * n, cell=atoms.cell[:],
                         pbc=[True] * 3)
    times, cpu = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for count in (1, 1 + copies):
            cfg_in, cfg_out = Path(tmp) / f"in{count}.cfg", Path(tmp) / f"out{count}.cfg"
            write_cfg(cfg_in, [conf] * count)
            best, best_cpu = float("inf"), float("inf")
            for _ in range(3):
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                subprocess.run([mlp_bin, "calc-efs", str(pot), str(cfg_in), str(cfg_out)],
                               check=True, capture_output=True)
                best = min(best, time.perf_counter() - t0)
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                best_cpu = min(best_cpu, r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
            times[count], cpu[count] = best, best_cpu
        from mtpjax.io.cfg import read_cfg

        energy = read_cfg(cfg_out)[0].energy
    per_step = (times[1 + copies] - times[1]) / copies
    per_step_cpu = (cpu[1 + copies] - cpu[1]) / copies
    return {"level": level, "atoms": n, "mlp_step_s": per_step, "mlp_step_cpu_s": per_step_cpu,
            "mlp_atom_steps_per_s_wall": n / per_step,
            "mlp_atom_steps_per_s": n / per_step_cpu, "mlp_energy_eV": energy,
            "mlp_total_wall_s": times, "mlp_total_cpu_s": cpu}


def run_motep(level: int, n_atoms: int) -> dict | None:
    try:
        import motep  # noqa: F401
    except ImportError:
        return None
    return {"note": "motep importable but its engines are not wired into this benchmark"}


def _worker(spec: str, args) -> dict:
    kind, *rest = spec.split(":")
    if kind == "case":
        level, n, dtype = rest
        return run_case(int(level), int(n), dtype, args.steps, args.autodiff, args.calculator,
                        args.calc_steps)
    return run_size(int(rest[0]), args.chunk)


def _subprocess(worker: str, args, pythonpath: Path | None = None) -> dict:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--worker", worker, "--threads", str(args.threads),
           "--steps", str(args.steps), "--chunk", str(args.chunk)]
    if args.autodiff and pythonpath is None:
        cmd.append("--autodiff")
    if args.calculator and pythonpath is None:
        cmd += ["--calculator", "--calc-steps", str(args.calc_steps)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr[-2000:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def write_reports(report: dict, out: Path):
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = [f"# bench_efs — {report['date']}", "", f"Command: `{report['command']}`", "",
             f"Machine: {report['machine']}; load average before {report['load_before']}, "
             f"after {report.get('load_after', '(running)')} (shared machine: CPU-time "
             "throughput is the steadier number; wall time includes waiting for a core).", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items())
             + ".", "",
             "| level | atoms | dtype | J | compile s | step ms (cpu) | atom-steps/cpu-s | "
             "atom-steps/s wall | recompiled | baseline atom-steps/cpu-s | speed-up | "
             "mlp atom-steps/cpu-s | ratio vs mlp (cpu) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in report["cases"]:
        if "error" in c:
            lines.append(f"| error | {c['error'][-200:]!r} |")
            continue
        x = c["explicit"]
        base = c.get("baseline", {}).get("explicit")
        mlp = c.get("mlp")
        lines.append(
            f"| {c['level']} | {c['atoms']} | {c['dtype']} | {c['neighbors']} | "
            f"{x['compile_s']:.1f} | {1e3 * x['step_cpu_s_best']:.1f} | "
            f"{x['atom_steps_per_cpu_s']:.3g} | {x['atom_steps_per_s_wall']:.3g} | "
            f"{x['recompiled_when_positions_change']} | "
            + (f"{base['atom_steps_per_cpu_s']:.3g} | "
               f"{x['atom_steps_per_cpu_s'] / base['atom_steps_per_cpu_s']:.2f}× | "
               if base else "– | – | ")
            + (f"{mlp['mlp_atom_steps_per_s']:.3g} | "
               f"{x['atom_steps_per_cpu_s'] / mlp['mlp_atom_steps_per_s']:.2f} |"
               if mlp else "– | – |"))
    if any("autodiff" in c for c in report["cases"]):
        lines += ["", "Generic autodiff path (jax.grad of total_energy, as MD/fitting code uses):",
                  "", "| level | atoms | dtype | atom-steps/cpu-s autodiff | explicit | max |ΔF| |",
                  "|---|---|---|---|---|---|"]
        for c in report["cases"]:
            if "autodiff" in c:
                lines.append(f"| {c['level']} | {c['atoms']} | {c['dtype']} | "
                             f"{c['autodiff']['atom_steps_per_cpu_s']:.3g} | "
                             f"{c['explicit']['atom_steps_per_cpu_s']:.3g} | "
                             f"{c['autodiff_vs_explicit_max_dF']:.1e} |")
    calc = [c for c in report["cases"] if "calculator" in c]
    if calc:
        lines += ["", "ASE calculator path (`MTPCalculator`: get_potential_energy + get_forces + "
                  "get_stress after every move of the atoms vibrating about their sites as at "
                  "300 K, same cell; same worker process as the core row above). Per "
                  "CPU-second; \"best\" = best call, as the core column; \"amortised\" = "
                  "all calls of the loop, skin-list rebuilds and repacks included:", "",
                  "| level | atoms | dtype | first call s | compiles / traces after first call | "
                  "calls | rebuilds / repacks | J | step ms cpu (best / median / amortised) | "
                  "atom-steps/cpu-s best | amortised | core atom-steps/cpu-s | "
                  "rebuild call ms cpu | mlp atom-steps/cpu-s | vs mlp best | vs mlp amortised |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in calc:
            k, x, mlp = c["calculator"], c["explicit"], c.get("mlp")
            lines.append(
                f"| {c['level']} | {c['atoms']} | {c['dtype']} | {k['first_call_s']:.1f} | "
                f"{k['compiles_after_first_call']} / {k['traces_after_first_call']} | "
                f"{k['steps']} | {k['rebuilds_in_loop']} / {k['repacks_in_loop']} | "
                f"{k['packed_neighbors_J']} | {1e3 * k['step_cpu_s_best']:.1f} / "
                f"{1e3 * k['step_cpu_s_median']:.1f} / {1e3 * k['step_cpu_s_amortised']:.1f} | "
                f"{k['atom_steps_per_cpu_s']:.3g} | {k['atom_steps_per_cpu_s_amortised']:.3g} | "
                f"{x['atom_steps_per_cpu_s']:.3g} | {1e3 * k['rebuild_step_cpu_s']:.1f} | "
                + (f"{mlp['mlp_atom_steps_per_s']:.3g} | "
                   f"{k['atom_steps_per_cpu_s'] / mlp['mlp_atom_steps_per_s']:.2f} | "
                   f"{k['atom_steps_per_cpu_s_amortised'] / mlp['mlp_atom_steps_per_s']:.2f} |"
                   if mlp else "– | – | – |"))
    low = [c for c in report["cases"] if "vs_float64" in c]
    if low:
        lines += ["", "Reduced precision against float64 (same cell, same call):", "",
                  "| level | atoms | dtype | abs dE/atom eV | max abs dF eV/Å | "
                  "max abs dvirial eV |",
                  "|---|---|---|---|---|---|"]
        for c in low:
            d = c["vs_float64"]
            lines.append(f"| {c['level']} | {c['atoms']} | {c['dtype']} | "
                         f"{d['abs_dE_per_atom_eV']:.1e} | {d['max_abs_dF_eV_A']:.1e} | "
                         f"{d['max_abs_dvirial_eV']:.1e} |")
    if report.get("sizes"):
        lines += ["", "Size sweep, level 16, float64, chunked (mtpjax.evaluate):", "",
                  "| atoms | chunk | neighbour build s | compile s | eval s (wall) | "
                  "atom-steps/cpu-s | atom-steps/s wall | chunk temp B/atom | peak RSS GiB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for s in report["sizes"]:
            if "error" in s:
                lines.append(f"| error | {s['error'][-200:]!r} |")
                continue
            per_atom = s["chunk_temp_bytes_per_atom"]
            lines.append(
                f"| {s['atoms']} | {s['chunk']} | {s['neighbor_build_s']:.1f} | "
                f"{s['compile_s']:.1f} | {s['eval_wall_s']:.1f} | "
                f"{s['atom_steps_per_cpu_s']:.3g} | {s['atom_steps_per_s_wall']:.3g} | "
                f"{'–' if per_atom is None else f'{per_atom:.3g}'} | {s['peak_rss_gib']:.2f} |")
    if report.get("motep") is None:
        lines += ["", "MOTEP: not installed, not benchmarked."]
    if not os.environ.get("MLP_BIN"):
        lines += ["", f"mlp: MLP_BIN not set; SPEC §5 reference ≈ {MLP_REFERENCE:.2g} "
                  "atom-steps/s per core at level 16."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    sizes = [s for s in report.get("sizes", []) if "error" not in s]
    if sizes:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([s["atoms"] for s in sizes], [s["atom_steps_per_cpu_s"] for s in sizes], "o-",
                label="mtpjax L16 float64, per CPU-second")
        ax.plot([s["atoms"] for s in sizes], [s["atom_steps_per_s_wall"] for s in sizes], "s--",
                label="mtpjax L16 float64, wall")
        ax.axhline(MLP_REFERENCE, color="gray", ls=":", label="mlp calc-efs (SPEC §5)")
        ax.set_xscale("log")
        ax.set_xlabel("atoms")
        ax.set_ylabel("atom-steps / s (one core)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        ax.set_title("energy+forces+stress throughput vs size")
        fig.tight_layout()
        fig.savefig(str(out.with_suffix(".png")), dpi=120)


def versions(mlp_bin: str | None) -> dict:
    """Python, the packages on the measured path and the git revision
    (`benchmarks.provenance.versions`), and the sha256 of the mlp binary."""
    import hashlib

    out = package_versions()
    if mlp_bin:
        out["mlp_sha256"] = hashlib.sha256(Path(mlp_bin).read_bytes()).hexdigest()
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_threads(args.threads)
    if args.worker:
        print(json.dumps(_worker(args.worker, args)))
        return 0
    import jax

    mlp_bin = os.environ.get("MLP_BIN")
    report = {
        "command": "python " + " ".join(shlex.quote(a) for a in [
            "benchmarks/bench_efs.py", *(argv if argv is not None else sys.argv[1:])])
        + (f"  (MLP_BIN={mlp_bin})" if mlp_bin else ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"jax {jax.__version__}, threads={args.threads}",
        "versions": versions(mlp_bin),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "cases": [], "sizes": [],
    }
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **_):
            return x
    cases = [(lv, n, dt) for lv in args.levels for n in args.atoms for dt in args.dtypes]
    for level, n, dtype in tqdm(cases, desc="cases"):
        res = _subprocess(f"case:{level}:{n}:{dtype}", args)
        if args.baseline_src is not None and "error" not in res:
            res["baseline"] = _subprocess(f"case:{level}:{n}:{dtype}", args, args.baseline_src)
        if mlp_bin and dtype == "float64" and "error" not in res:
            res["mlp"] = run_mlp(mlp_bin, level, n, args.mlp_copies)
        res["load_after_case"] = [round(x, 2) for x in os.getloadavg()]
        report["cases"].append(res)
        write_reports(report, args.out)
    for n in tqdm(args.sizes, desc="sizes"):
        report["sizes"].append(_subprocess(f"size:{n}", args))
        write_reports(report, args.out)
    report["motep"] = run_motep(16, 1000)
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    write_reports(report, args.out)
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
