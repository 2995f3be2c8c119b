"""One-command GPU check: L16 energy+forces throughput, 10⁶-atom MD and a fitting step.

Run from the repository root on a fresh GPU machine (no network needed)::

    python benchmarks/gpu_check.py            # ≈ 8 min wall at most, compilation included
    python benchmarks/gpu_check.py --small    # the same code paths on CPU in about a minute

(``--small``: level 8, 10³/4·10³ atoms, a 1728-atom MD, a one-configuration fit, compiled
with ``jax_disable_most_optimizations`` unless ``--optimize``: a smoke test of the code
paths, not a benchmark.)

0. ``parity``: every shared ``mlp`` 2.1.2 case (``tests/data/parity``: levels 8, 16, 20 and
   two species, 34 configurations each) evaluated on the device in float64; the largest
   deviations of energy per atom (eV/atom), forces (eV/Å) and virial (eV) from ``mlp calc-efs``,
   and whether they are within the parity test's tolerances (1e-9, 2e-6, 2e-5).

Measures, each in its own try/except (an OOM or failure becomes an ``error`` entry and the
rest still runs), under a total wall-time budget (items that no longer fit are recorded as
``skipped`` with the reason):

1. ``energy_forces``: level-16 energy + forces + virial (``md.energy.energy_forces_virial``,
   jitted) of rattled diamond Si (``benchmarks/systems.py: crystal_si``) at ≈ 10⁴, 10⁵, 10⁶
   atoms, float64 and float32; neighbour list built on the device (``mtpjax.cell_list``,
   skin 0). Compile time (``lower().compile()``), median seconds per call (≥ 5 calls after a
   warm-up, ``jax.block_until_ready``), atom-steps/s.
2. ``md``: ≈ 10⁶-atom level-16 Langevin NVT of liquid Si at 3000 K
   (``benchmarks/systems.py: liquid_si``; ``md.runner.Simulation``, skin 1 Å, on-device
   rebuilds): setup and warm-up (compile) times, then a timed stage sized to a time budget
   from a 10-step probe: steps/s, atom-steps/s, rebuilds and reallocations in the timed stage.
   float32 first, float64 if time allows.
3. ``fit``: one level-16 L-BFGS iteration (``mtpjax.fit.trainer.Trainer``) on
   ``data/si_mlearn/train.xyz`` starting from the parity potential's coefficients: compile
   time and median seconds per loss+gradient evaluation and per optimiser iteration.

Writes ``benchmarks/results/gpu_check_<device>.json`` (``--small``:
``gpu_check_small_<device>.json``; ``--out`` overrides) after every item, with the command,
device, versions, host load, the measurements, and the issue's ``targets`` with ``met``
computed from the measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PARITY = ROOT / "tests" / "data" / "parity"
TRAIN_DATA = ROOT / "data" / "si_mlearn" / "train.xyz"

#: the issue's targets (one H100/H200)
EF_TARGET = 2e7  # L16 energy+forces atom-steps/s at ≥ 1e5 atoms
EF_TARGET_MIN_ATOMS = 100_000
MD_TARGET = 20.0  # L16 MD steps/s at ≥ 1e6 atoms, rebuilds included
MD_TARGET_MIN_ATOMS = 1_000_000

FULL = {
    "level": 16,
    "ef_sizes": [10_000, 100_000, 1_000_000],
    "ef_min_total_s": 1.0,  # timed calls: ≥ 5, and more (≤ 20) until this long
    "md_atoms": 1_000_000,  # 8·50³ (liquid_si: a 1000-atom melt tiled 10³ times)
    "melt_steps": 1000,
    "md_chunk": 50,
    "md_probe_steps": 10,
    "md_time_s": 30.0,
    "md_max_steps": 5000,
    "fit_configs": None,  # all
    "fit_iters": 4,
    "md64": True,
    "parity_cases": None,  # all
    "budget_s": 450.0,
    # remaining wall time an item needs to be started (compile included, a guess)
    "need_ef_s": 30.0, "need_md_s": 180.0, "need_fit_s": 90.0,
}
SMALL = {
    "level": 8,
    "ef_sizes": [1_000, 4_000],
    "ef_min_total_s": 0.0,
    "md_atoms": 2_000,  # 8·6³ = 1,728 (melted at that size)
    "melt_steps": 10,
    "md_chunk": 10,
    "md_probe_steps": 5,
    "md_time_s": 3.0,
    "md_max_steps": 20,
    "fit_configs": 1,
    "fit_iters": 2,
    "md64": False,  # float64 MD only in the full run (the melt already runs float64)
    "parity_cases": ["si_L08", "species2_L16"],  # the smallest level, and two species
    "budget_s": 240.0,
    "need_ef_s": 5.0, "need_md_s": 20.0, "need_fit_s": 10.0,
}


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true",
                   help="CPU-sized run of the same code paths (level 8, ~1e3 atoms)")
    p.add_argument("--out", type=Path, help="output JSON (default: benchmarks/results/"
                   "gpu_check[_small]_<device>.json)")
    p.add_argument("--budget", type=float, help="total wall-time budget in s (default: 450, "
                   "--small: 240); items that no longer fit are skipped")
    p.add_argument("--optimize", action="store_true",
                   help="--small: keep XLA's optimisations (default: jax_disable_most_"
                   "optimizations, a smoke test that compiles ~2x faster)")
    p.add_argument("--skip", nargs="*", default=[],
                   choices=["parity", "ef", "md32", "md64", "fit"],
                   help="items not to run")
    p.add_argument("--ef-sizes", type=int, nargs="+", metavar="N",
                   help="energy+forces system sizes (atoms, rounded to 8·k³; default: 1e4 1e5 "
                   "1e6, --small: 1e3 4e3)")
    p.add_argument("--md-atoms", type=int, metavar="N",
                   help="MD system size (default: 1e6, --small: 2e3)")
    p.add_argument("--chunk", type=int, metavar="N",
                   help="central atoms per evaluation chunk (md.energy.EVAL_CHUNK[_ACCELERATOR]; "
                   "default: 8,192)")
    p.add_argument("--xla-flags", default="", metavar="FLAGS",
                   help="appended to XLA_FLAGS before JAX starts, e.g. "
                   "'--xla_gpu_autotune_level=0'")
    p.add_argument("--item-timeout", type=float, metavar="S",
                   help="wall-time limit of each item, compilation included (default: 150 s, "
                   "MD 300 s; --small: 300 s); an item that overruns is killed and recorded")
    p.add_argument("--in-process", action="store_true",
                   help="run every item in this process (no per-item subprocess and limit)")
    p.add_argument("--summarize", type=Path, nargs="+", metavar="JSON",
                   help="write the summary tables of saved reports (to --out, a .md file, or "
                   "stdout) and exit; nothing is measured")
    p.add_argument("--only", help=argparse.SUPPRESS)  # one item, in a child process
    return p.parse_args(argv)


def sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "unknown"


def x64(dtype: str):
    """float64 runs need x64 enabled; float32 runs keep the default (32-bit) mode."""
    import jax

    return jax.enable_x64(True) if dtype == "float64" else nullcontext()


def nvidia_smi() -> str | None:
    try:
        res = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20)
        return res.stdout.strip() or None
    except Exception:
        return None


def memory_stats() -> dict | None:
    import jax

    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    if not stats:
        return None
    keep = ("bytes_in_use", "peak_bytes_in_use", "bytes_limit")
    return {k: int(stats[k]) for k in keep if k in stats}


def median(xs) -> float:
    xs = sorted(xs)
    n = len(xs)
    return float(xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2]))


def timed_calls(fn, min_calls: int = 5, max_calls: int = 20, min_total_s: float = 1.0):
    """Wall seconds of ≥ ``min_calls`` calls (more, up to ``max_calls``, while < min_total)."""
    import jax

    times = []
    while len(times) < min_calls or (sum(times) < min_total_s and len(times) < max_calls):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return times


class Budget:
    def __init__(self, total_s: float):
        self.t0 = time.perf_counter()
        self.total = total_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.total - self.elapsed()


# --------------------------------------------------------------------- 0. parity with mlp

#: tests/core/test_parity.py's tolerances: energy per atom (eV/atom), forces (eV/Å),
#: virial (eV, compared as mlp's PlusStress = stress × volume)
PARITY_TOL = {"energy_per_atom_eV": 1e-9, "forces_eV_A": 2e-6, "virial_eV": 2e-5}


def parity_case(case: str) -> dict:
    """Largest deviations from ``mlp calc-efs`` of one parity case, through the user's path
    (``mtpjax calc-efs``: ``MTPEvaluator`` + ``predict``, float64) on the default device."""
    import numpy as np

    from mtpjax.calculator import MTPEvaluator
    from mtpjax.commands.evaluate_cfg import predict
    from mtpjax.io.cfg import read_cfg

    folder = PARITY / case
    t0 = time.perf_counter()
    ours = predict(MTPEvaluator(folder / "pot.mtp", dtype="float64"),
                   read_cfg(folder / "configs.cfg"), progress=False)
    wall = time.perf_counter() - t0
    ref = read_cfg(folder / "efs.cfg")
    de = df = dv = 0.0
    for mine, theirs in zip(ours, ref, strict=True):
        de = max(de, abs(mine.energy - theirs.energy) / len(theirs.positions))
        df = max(df, float(np.abs(mine.forces - theirs.forces).max()))
        if theirs.plus_stress is not None:
            dv = max(dv, float(np.abs(mine.plus_stress - theirs.plus_stress).max()))
    dev = {"energy_per_atom_eV": de, "forces_eV_A": df, "virial_eV": dv}
    return {"item": "parity", "case": case, "configurations": len(ref),
            "compile_and_run_s": wall, "max_abs_deviation": dev,
            "within_tolerance": all(dev[k] <= PARITY_TOL[k] for k in PARITY_TOL)}


def run_parity(cases, budget: Budget, report: dict, save) -> None:
    """Parity items for ``cases`` (names under tests/data/parity; None: every case)."""
    if cases is None:
        cases = sorted(d.name for d in PARITY.iterdir() if (d / "efs.cfg").is_file())
    for case in cases:
        try:
            entry = parity_case(case)
            d = entry["max_abs_deviation"]
            log(f"parity {case}: max |dE|/N {d['energy_per_atom_eV']:.2e} eV/atom, |dF| "
                f"{d['forces_eV_A']:.2e} eV/Å, |dW| {d['virial_eV']:.2e} eV; within "
                f"tolerance: {entry['within_tolerance']} ({entry['compile_and_run_s']:.1f} s)")
        except Exception as exc:  # noqa: BLE001 - recorded, the check goes on
            entry = {"item": "parity", "case": case, **error_entry(exc)}
            log(f"parity {case}: ERROR {entry['error']}")
        report["parity"].append(entry)
        save()


# --------------------------------------------------------------------- 1. energy + forces


def build_neighbors(pos, cell, cutoff: float):
    """Device cell list (skin 0) of float64 positions; (Neighbors, info)."""
    import jax

    from mtpjax import cell_list

    with jax.enable_x64(True):
        t0 = time.perf_counter()
        spec = cell_list.plan(pos, cell, cutoff=cutoff, skin=0.0)
        t_plan = time.perf_counter() - t0
        t0 = time.perf_counter()
        nl = jax.block_until_ready(cell_list.allocate(spec, pos, cell))
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        nl = jax.block_until_ready(cell_list.allocate(spec, pos, cell))
        t_build = time.perf_counter() - t0
        if bool(nl.did_buffer_overflow):
            raise RuntimeError("cell list overflow at allocation")
        info = {"capacity": int(spec.capacity), "max_neighbors": int(nl.max_count),
                "bins": list(spec.nb), "bin_capacity": int(spec.bin_capacity),
                "plan_s": t_plan, "build_first_s": t_first, "build_s": t_build}
    return nl.neighbors, info


def ef_case(model_spec, params_np, atoms, nb, dtype: str, min_total_s: float = 1.0) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from md.energy import energy_forces_virial

    n = len(atoms)
    with x64(dtype):
        dt = jnp.float64 if dtype == "float64" else jnp.float32
        params = {k: jnp.asarray(v, dt) for k, v in params_np.items()}
        pos = jnp.asarray(np.asarray(atoms.positions), dt)
        cell = jnp.asarray(np.asarray(atoms.cell.array), dt)
        types = jnp.zeros(n, jnp.int32)

        def efv(p, x, c, t, b):
            return energy_forces_virial(model_spec, p, x, c, t, b)

        t0 = time.perf_counter()
        compiled = jax.jit(efv).lower(params, pos, cell, types, nb).compile()
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        e, f, v = jax.block_until_ready(compiled(params, pos, cell, types, nb))
        first_s = time.perf_counter() - t0
        times = timed_calls(lambda: compiled(params, pos, cell, types, nb),
                            min_total_s=min_total_s)
        step = median(times)
        e_atom = float(e) / n
        fmax = float(jnp.max(jnp.abs(f)))
        if not (np.isfinite(e_atom) and np.isfinite(fmax)):
            raise FloatingPointError(f"non-finite energy/forces ({e_atom}, {fmax})")
        return {"compile_s": compile_s, "first_call_s": first_s, "calls": len(times),
                "step_s_median": step, "step_s_min": min(times),
                "atom_steps_per_s": n / step, "energy_per_atom_eV": e_atom,
                "max_abs_force_eV_A": fmax}


def run_energy_forces(cfg, pot_path: Path, budget: Budget, report: dict, save,
                      dtypes=("float64", "float32")) -> None:
    import numpy as np

    from benchmarks.systems import crystal_si
    from md.energy import load_model

    _, model_spec, params_np = load_model(pot_path)
    for n_target in cfg["ef_sizes"]:
        base = {"item": "energy_forces", "level": cfg["level"], "n_target": n_target}
        if budget.left() < cfg["need_ef_s"]:
            for dtype in dtypes:
                report["energy_forces"].append({**base, "dtype": dtype, "skipped":
                                                f"wall budget: {budget.left():.0f} s left"})
            save()
            continue
        try:
            t0 = time.perf_counter()
            atoms = crystal_si(n_target)
            t_sys = time.perf_counter() - t0
            nb, nl_info = build_neighbors(np.asarray(atoms.positions),
                                          np.asarray(atoms.cell.array), model_spec.max_dist)
            log(f"energy_forces: {len(atoms)} atoms, J = {nl_info['capacity']}, "
                f"neighbour build {nl_info['build_s']:.3f} s (first {nl_info['build_first_s']:.1f}"
                f" s)")
        except Exception as exc:  # noqa: BLE001 — recorded, the rest still runs
            for dtype in dtypes:
                report["energy_forces"].append({**base, "dtype": dtype, **error_entry(exc)})
            save()
            continue
        for dtype in dtypes:
            entry = {**base, "dtype": dtype, "atoms": len(atoms), "system_s": t_sys,
                     "neighbor_list": nl_info}
            if budget.left() < cfg["need_ef_s"]:
                entry["skipped"] = f"wall budget: {budget.left():.0f} s left"
            else:
                try:
                    entry.update(ef_case(model_spec, params_np, atoms, nb, dtype,
                                         cfg["ef_min_total_s"]))
                    log(f"  {dtype}: compile {entry['compile_s']:.1f} s, "
                        f"{1e3 * entry['step_s_median']:.2f} ms/call, "
                        f"{entry['atom_steps_per_s']:.3g} atom-steps/s")
                except Exception as exc:  # noqa: BLE001
                    entry.update(error_entry(exc))
                    log(f"  {dtype}: ERROR {entry['error']}")
            entry["memory"] = memory_stats()
            report["energy_forces"].append(entry)
            save()
        del nb


def error_entry(exc: BaseException) -> dict:
    return {"error": f"{type(exc).__name__}: {exc}"[:2000],
            "traceback": traceback.format_exc()[-4000:]}


# --------------------------------------------------------------------- 2. MD


def prepare_liquid(cfg, pot_path: Path, report: dict):
    from benchmarks import systems

    t0 = time.perf_counter()
    atoms = systems.liquid_si(cfg["md_atoms"], str(pot_path), temperature_K=3000.0,
                              steps=cfg["melt_steps"])
    seed = None
    if hasattr(systems, "repeats"):
        seed = 8 * systems.repeats(cfg["md_atoms"])[1] ** 3
    report["liquid"] = {"atoms": len(atoms), "seed_atoms": seed,
                        "melt_steps": cfg["melt_steps"], "temperature_K": 3000.0,
                        "prepare_s": time.perf_counter() - t0}
    log(f"liquid Si: {len(atoms)} atoms prepared in {report['liquid']['prepare_s']:.1f} s")
    return atoms


def md_case(cfg, pot_path: Path, atoms, dtype: str, budget: Budget) -> dict:
    from md.config import StageConfig
    from md.runner import Simulation

    chunk = cfg["md_chunk"]

    def stage(name, steps):
        return StageConfig(name, "nvt", int(steps), 3000.0, 3000.0, thermostat="langevin",
                           tau_t_fs=100.0)

    out = {"atoms": len(atoms), "dtype": dtype, "chunk_steps": chunk, "skin_A": 1.0,
           "timestep_fs": 1.0, "thermostat": "langevin", "temperature_K": 3000.0}
    t0 = time.perf_counter()
    sim = Simulation(str(pot_path), atoms, timestep_fs=1.0, temperature_K=None, skin_A=1.0,
                     chunk_steps=chunk, thermo_every=chunk, dtype=dtype)
    out["setup_s"] = time.perf_counter() - t0
    log(f"  md {dtype}: setup {out['setup_s']:.1f} s")
    t0 = time.perf_counter()
    sim.run_stage(stage("warmup", chunk))
    out["warmup_steps"] = chunk
    out["warmup_s"] = time.perf_counter() - t0
    log(f"  md {dtype}: warm-up {chunk} steps (compile) {out['warmup_s']:.1f} s")
    # probe: a few timed steps to size the timed stage
    t0 = time.perf_counter()
    sim.run_stage(stage("probe", cfg["md_probe_steps"]))
    probe_s = time.perf_counter() - t0
    out["probe_steps"], out["probe_s"] = cfg["md_probe_steps"], probe_s
    per_step = probe_s / cfg["md_probe_steps"]
    window = min(cfg["md_time_s"], max(budget.left() - 30.0, 2.0))
    steps = int(window / max(per_step, 1e-6))
    steps = max(cfg["md_probe_steps"], min(cfg["md_max_steps"], steps))
    if steps > chunk:
        steps = steps // chunk * chunk
    rebuilds0, realloc0, reruns0 = (sim.stats[k] for k in ("rebuilds", "reallocations",
                                                            "reruns"))
    log(f"  md {dtype}: probe {per_step * 1e3:.1f} ms/step; timing {steps} steps")
    t0 = time.perf_counter()
    sim.run_stage(stage("timed", steps))
    wall = time.perf_counter() - t0
    last = sim.history[-1] if sim.history else {}
    out.update({
        "timed_steps": steps, "timed_s": wall, "steps_per_s": steps / wall,
        "atom_steps_per_s": steps * len(atoms) / wall,
        "rebuilds_timed": sim.stats["rebuilds"] - rebuilds0,
        "reallocations_timed": sim.stats["reallocations"] - realloc0,
        "reruns_timed": sim.stats["reruns"] - reruns0,
        "rebuilds_total": sim.stats["rebuilds"], "reallocations_total":
            sim.stats["reallocations"],
        "neighbor_capacity": int(sim.nl.spec.capacity),
        "final_T_K": last.get("T_K"), "final_E_pot_per_atom_eV":
            None if last.get("E_pot") is None else last["E_pot"] / len(atoms),
    })
    sim.close()
    return out


def run_md(cfg, pot_path: Path, dtype: str, budget: Budget, report: dict, save) -> None:
    """One MD item; the liquid is prepared in the item (deterministic, seed 0), so every MD
    item (each its own process) runs the same system."""
    entry = {"item": "md", "level": cfg["level"], "dtype": dtype, "n_target": cfg["md_atoms"]}
    if budget.left() < cfg["need_md_s"]:
        entry["skipped"] = f"wall budget: {budget.left():.0f} s left"
        report["md"].append(entry)
        save()
        return
    try:
        liquid = prepare_liquid(cfg, pot_path, report)
        entry.update(md_case(cfg, pot_path, liquid, dtype, budget))
        log(f"  md {dtype}: {entry['steps_per_s']:.3g} steps/s, "
            f"{entry['atom_steps_per_s']:.3g} atom-steps/s, {entry['rebuilds_timed']} "
            f"rebuilds in {entry['timed_steps']} steps")
    except Exception as exc:  # noqa: BLE001
        entry.update(error_entry(exc))
        log(f"  md {dtype}: ERROR {entry['error']}")
    entry["memory"] = memory_stats()
    report["md"].append(entry)
    save()


# --------------------------------------------------------------------- 3. fitting step


def fit_case(cfg, pot_path: Path) -> dict:
    import jax
    import jax.numpy as jnp

    from mtpjax.fit.data import check_samples, precompute_neighbors, read_samples
    from mtpjax.fit.trainer import FitConfig, Trainer
    from mtpjax.io.mtp_file import read_mtp

    with jax.enable_x64(True):
        pot = read_mtp(pot_path)
        t0 = time.perf_counter()
        # load_dataset's steps (read → check → neighbours), on the configurations used only
        samples = read_samples(TRAIN_DATA, species=["Si"], species_count=1)
        if cfg["fit_configs"]:
            samples = samples[: cfg["fit_configs"]]
        check_samples(samples, force_weight=0.1, species_count=1)
        precompute_neighbors(samples, pot.max_dist)
        load_s = time.perf_counter() - t0
        fc = FitConfig(optimizer="lbfgs", max_iter=cfg["fit_iters"], init_params="same",
                       force_weight=0.1, stress_weight=0.0, precondition=False,
                       lstsq_polish=False, checkpoint_every=0, eval_every=10**6)
        t0 = time.perf_counter()
        trainer = Trainer(pot, samples, None, fc, mesh=None)
        setup_s = time.perf_counter() - t0
        params = {k: jnp.asarray(v, jnp.float64) for k, v in pot.params().items()}
        out = {"level": cfg["level"], "configurations": len(samples),
               "atoms": int(sum(len(s) for s in samples)), "optimizer": "lbfgs",
               "dtype": "float64", "start": "coefficients of " + str(pot_path.relative_to(ROOT)),
               "load_s": load_s, "trainer_setup_s": setup_s,
               "buckets": len(trainer.train_batches),
               "weights": {"energy": 1.0, "forces": 0.1, "stress": 0.0,
                           "weighting": fc.weighting}}
        # loss + gradient over the whole training set
        vg = jax.jit(jax.value_and_grad(trainer.loss_fn))
        batches = trainer.train_batches
        t0 = time.perf_counter()
        compiled = vg.lower(params, batches).compile()
        out["loss_grad_compile_s"] = time.perf_counter() - t0
        jax.block_until_ready(compiled(params, batches))
        times = timed_calls(lambda: compiled(params, batches), min_calls=5, max_calls=10,
                            min_total_s=0.0)
        out["loss_grad_s_median"] = median(times)
        out["loss_grad_calls"] = len(times)
        # the trainer's own L-BFGS step (value, gradient, zoom line search, update)
        try:
            out.update(lbfgs_iterations(trainer, pot, params, batches, cfg["fit_iters"]))
        except Exception as exc:  # noqa: BLE001 — keep the loss+gradient numbers
            out["iteration_error"] = error_entry(exc)["error"]
        return out


def lbfgs_iterations(trainer, pot, params, batches, iters: int) -> dict:
    """Time ``iters`` iterations of the trainer's jitted L-BFGS step after a first one."""
    import jax
    import jax.numpy as jnp

    from mtpjax.fit.optim import Scaling

    out = {}
    _, step = trainer._make_lbfgs(None)
    st = trainer._fresh_state(params, Scaling.identity(dict(pot.params())))
    # strong-typed initial state: optax's initial line-search info is weakly typed and
    # would otherwise make the second iteration compile the step again
    u, ostate = jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), (st["u"], st["opt"]))
    iter_times = []
    for k in range(iters + 1):
        t0 = time.perf_counter()
        u, ostate, value, gnorm = jax.block_until_ready(step(u, ostate, st["scales"], batches))
        if k == 0:
            out["iteration_first_s"] = time.perf_counter() - t0  # compile + one iteration
        else:
            iter_times.append(time.perf_counter() - t0)
    out["iteration_compiles"] = int(step._cache_size()) if hasattr(step, "_cache_size") \
        else None
    out["iteration_s_median"] = median(iter_times)
    out["iterations_timed"] = len(iter_times)
    out["iteration_compile_s"] = max(out["iteration_first_s"] - out["iteration_s_median"], 0.0)
    out["loss_after"] = float(value)
    out["grad_norm_after"] = float(gnorm)
    return out


def run_fit(cfg, pot_path: Path, budget: Budget, report: dict, save) -> None:
    entry = {"item": "fit"}
    if budget.left() < cfg["need_fit_s"]:
        entry["skipped"] = f"wall budget: {budget.left():.0f} s left"
    else:
        try:
            entry.update(fit_case(cfg, pot_path))
            log(f"fit: {entry['configurations']} configurations ({entry['atoms']} atoms), "
                f"loss+grad compile {entry['loss_grad_compile_s']:.1f} s, "
                f"{entry['loss_grad_s_median']:.4g} s/eval; L-BFGS iteration: "
                + (f"{entry['iteration_s_median']:.4g} s (first {entry['iteration_first_s']:.1f}"
                   " s)" if "iteration_s_median" in entry
                   else f"ERROR {entry.get('iteration_error')}"))
        except Exception as exc:  # noqa: BLE001
            entry.update(error_entry(exc))
            log(f"fit: ERROR {entry['error']}")
    entry["memory"] = memory_stats()
    report["fit"] = entry
    save()


# --------------------------------------------------------------------- targets and summary


def targets(report: dict) -> dict:
    kind = report["device"]["kind"]
    on_target_device = bool(re.search(r"H100|H200", kind))
    ef = {}
    for dtype in ("float32", "float64"):
        rates = [e["atom_steps_per_s"] for e in report["energy_forces"]
                 if e.get("dtype") == dtype and e.get("level") == 16
                 and e.get("atoms", 0) >= EF_TARGET_MIN_ATOMS and "atom_steps_per_s" in e]
        best = max(rates) if rates else None
        ef[dtype] = {"best_atom_steps_per_s": best,
                     "met": best is not None and best >= EF_TARGET}
    md = {}
    for dtype in ("float32", "float64"):
        rates = [e["steps_per_s"] for e in report["md"]
                 if e.get("dtype") == dtype and e.get("level") == 16
                 and e.get("atoms", 0) >= MD_TARGET_MIN_ATOMS and "steps_per_s" in e]
        best = max(rates) if rates else None
        md[dtype] = {"best_steps_per_s": best, "met": best is not None and best >= MD_TARGET}
    checked = [e for e in report.get("parity", []) if "within_tolerance" in e]
    parity = {
        "target": "every shared mlp 2.1.2 case within the parity test's tolerances "
                  "(float64 on this device)",
        "tolerances": PARITY_TOL,
        "cases_checked": [e["case"] for e in checked],
        "met": bool(checked) and len(checked) == len(report.get("parity", []))
        and all(e["within_tolerance"] for e in checked),
    }
    return {
        "device_is_h100_or_h200": on_target_device,
        "parity": parity,
        "energy_forces": {
            "target": f"≥ {EF_TARGET:.0e} atom-steps/s, L16 energy+forces, ≥ "
                      f"{EF_TARGET_MIN_ATOMS} atoms, one H100/H200",
            "threshold_atom_steps_per_s": EF_TARGET, "min_atoms": EF_TARGET_MIN_ATOMS,
            "by_precision": ef,
            "met": any(v["met"] for v in ef.values()),
            "met_precisions": [k for k, v in ef.items() if v["met"]],
        },
        "md": {
            "target": f"≥ {MD_TARGET:g} steps/s, L16 NVT MD of ≥ {MD_TARGET_MIN_ATOMS} atoms "
                      "including neighbour rebuilds, one H100/H200",
            "threshold_steps_per_s": MD_TARGET, "min_atoms": MD_TARGET_MIN_ATOMS,
            "by_precision": md,
            "met": any(v["met"] for v in md.values()),
            "met_precisions": [k for k, v in md.items() if v["met"]],
        },
    }


def _status(e: dict) -> str:
    if "error" in e:
        return "ERROR " + e["error"].splitlines()[0][:60]
    if "skipped" in e:
        return "skipped (" + e["skipped"] + ")"
    if "iteration_error" in e:
        return "iteration ERROR " + e["iteration_error"].splitlines()[0][:50]
    return "ok"


def _f(e: dict, key: str, spec: str, width: int, scale=None) -> str:
    v = e.get(key)
    if v is None:
        return f"{'-':>{width}}"
    if scale == "inverse":
        v = 1.0 / v
    return f"{v:>{width}{spec}}"


def summary(report: dict) -> str:
    lines = [f"gpu_check on {report['device']['kind']} ({report['device']['platform']}), "
             f"jax {report['versions']['jax']}, total {report.get('wall_s', 0):.0f} s", "",
             f"{'item':<10} {'dtype':<8} {'atoms':>9} {'compile s':>10} {'s/step':>10} "
             f"{'atom-steps/s':>13} {'steps/s':>8}  status",
             "-" * 90]

    def head(label, e):
        level = e.get("level")
        atoms = e.get("atoms", e.get("n_target"))
        return (f"{label + ('' if level is None else f' L{level}'):<10} "
                f"{e.get('dtype', ''):<8} {'-' if atoms is None else atoms:>9} ")

    for e in report.get("parity", []):
        d = e.get("max_abs_deviation")
        dev = (f"max |dE|/N {d['energy_per_atom_eV']:.1e} eV, |dF| {d['forces_eV_A']:.1e} "
               f"eV/Å, |dW| {d['virial_eV']:.1e} eV; within tolerance "
               f"{e['within_tolerance']}" if d else _status(e))
        lines.append(f"{'parity':<10} {e.get('case', ''):<13} {dev}")
    for e in report["energy_forces"]:
        lines.append(head("E+F", e) + " ".join([
            _f(e, "compile_s", ".1f", 10), _f(e, "step_s_median", ".4g", 10),
            _f(e, "atom_steps_per_s", ".3g", 13), f"{'':>8}"]) + "  " + _status(e)
            + (f"; E/N {e['energy_per_atom_eV']:.10f} eV" if "energy_per_atom_eV" in e else ""))
    for e in report["md"]:
        extra = (f"; {e['rebuilds_timed']} rebuilds / {e['timed_steps']} steps"
                 if "steps_per_s" in e else "")
        lines.append(head("MD", e) + " ".join([
            _f(e, "warmup_s", ".1f", 10), _f(e, "steps_per_s", ".4g", 10, "inverse"),
            _f(e, "atom_steps_per_s", ".3g", 13), _f(e, "steps_per_s", ".3g", 8)])
            + "  " + _status(e) + extra)
    f = report.get("fit")
    if f:
        extra = (f"; loss+grad {f['loss_grad_s_median']:.4g} s (compile "
                 f"{f['loss_grad_compile_s']:.1f} s)" if "loss_grad_s_median" in f else "")
        lines.append(head("fit", f) + " ".join([
            _f(f, "iteration_compile_s", ".1f", 10), _f(f, "iteration_s_median", ".4g", 10),
            f"{'':>13}", f"{'':>8}"]) + "  " + _status(f) + extra)
    t = report.get("targets")
    if t:
        lines.append(f"target parity: {t['parity']['target']}: met = {t['parity']['met']}")
        for key, label in (("energy_forces", "E+F"), ("md", "MD")):
            lines.append(f"target {label}: {t[key]['target']}: met = {t[key]['met']} "
                         f"{t[key]['met_precisions']}")
    return "\n".join(lines)


# --------------------------------------------------------------------- main


#: environment variables that change what JAX/XLA do, recorded with the results
ENV_KEYS = ("XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
            "XLA_PYTHON_CLIENT_ALLOCATOR", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES")

def item_plan(cfg) -> list[tuple[str, str]]:
    """Items in running order: (name in --skip, --only spec)."""
    plan = [("parity", "parity")]
    plan += [("ef", f"ef:{n}:{dtype}") for n in cfg["ef_sizes"]
             for dtype in ("float64", "float32")]
    return plan + [("md32", "md:float32"), ("fit", "fit"), ("md64", "md:float64")]


def skipped_entry(spec: str, cfg, reason: str) -> tuple[str, dict]:
    """(report key, entry) recording item ``spec`` as skipped."""
    kind, *rest = spec.split(":")
    if kind == "parity":
        return "parity", {"item": "parity", "skipped": reason}
    if kind == "ef":
        return "energy_forces", {"item": "energy_forces", "level": cfg["level"],
                                 "n_target": int(rest[0]), "dtype": rest[1], "skipped": reason}
    if kind == "md":
        return "md", {"item": "md", "level": cfg["level"], "dtype": rest[0],
                      "n_target": cfg["md_atoms"], "skipped": reason}
    return "fit", {"item": "fit", "skipped": reason}


def add_entry(report: dict, key: str, entry: dict) -> None:
    if key == "fit":
        report["fit"] = entry
    else:
        report[key].append(entry)


def run_item(spec: str, cfg, pot_path: Path, budget: Budget, report: dict, save) -> None:
    """Run one item (``parity``, ``ef:N:DTYPE``, ``md:DTYPE``, ``fit``) into ``report``."""
    kind, *rest = spec.split(":")
    if kind == "parity":
        run_parity(cfg["parity_cases"], budget, report, save)
    elif kind == "ef":
        run_energy_forces({**cfg, "ef_sizes": [int(rest[0])]}, pot_path, budget, report, save,
                          dtypes=(rest[1],))
    elif kind == "md":
        run_md(cfg, pot_path, rest[0], budget, report, save)
    else:
        run_fit(cfg, pot_path, budget, report, save)


def run_isolated(spec: str, args, limit: float, part: Path) -> dict | str:
    """Run item ``spec`` in a child process (output passed through) killed after ``limit`` s;
    its report, or the reason it has none."""
    import signal

    cmd = [sys.executable, str(Path(__file__).resolve()), "--only", spec, "--out", str(part),
           "--budget", f"{limit:.1f}"]
    for flag, value in (("--small", args.small), ("--optimize", args.optimize)):
        if value:
            cmd.append(flag)
    if args.chunk:
        cmd += ["--chunk", str(args.chunk)]
    if args.md_atoms:
        cmd += ["--md-atoms", str(args.md_atoms)]
    part.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, start_new_session=True)  # XLA_FLAGS inherited (set in main)
    try:
        rc = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return f"killed after the item's {limit:.3g} s wall-time limit (compilation included)"
    if not part.exists():
        return f"child process exited with status {rc} and no report"
    return json.loads(part.read_text())


def start_report(args, cfg, budget: Budget, pot_path: Path, fast_compile: bool) -> dict:
    import jax
    import jaxlib

    dev = jax.devices()[0]
    return {
        "command": "python " + " ".join(shlex.quote(a) for a in
                                        ["benchmarks/gpu_check.py", *args.argv_list]),
        "mode": "small" if args.small else "full",
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "device": {"kind": dev.device_kind, "name": str(dev), "platform": dev.platform,
                   "count": jax.device_count(), "sanitized": sanitize(dev.device_kind),
                   "nvidia_smi": nvidia_smi() if dev.platform == "gpu" else None},
        "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                     "python": platform.python_version()},
        "environment": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
        "host": {"cpu_count": os.cpu_count(),
                 "cpu_affinity": len(os.sched_getaffinity(0))
                 if hasattr(os, "sched_getaffinity") else None,
                 "processor": platform.processor() or platform.machine(),
                 "load_before": [round(x, 2) for x in os.getloadavg()]},
        "settings": {**cfg, "jax_disable_most_optimizations": fast_compile,
                     "eval_chunk": args.chunk, "isolated_items": not args.in_process,
                     "item_timeout_s": args.item_timeout},
        "potential": str(pot_path.relative_to(ROOT)),
        "budget_s": budget.total,
        "parity": [], "energy_forces": [], "md": [], "fit": None,
    }


def summarize(paths: list[Path], command: str) -> str:
    """Markdown: each saved report's provenance and summary table (``--summarize``)."""
    parts = [f"# gpu_check reports\n\nWritten by `{command}` from the saved JSON reports; "
             "each table is that run's own summary.\n"]
    for path in paths:
        r = json.loads(path.read_text())
        host = r["host"]
        parts += [f"## {path.name}\n",
                  f"- command: `{r['command']}`",
                  f"- date: {r['date']}; device: {r['device']['kind']} "
                  f"({r['device'].get('nvidia_smi') or r['device']['platform']}); "
                  f"jax {r['versions']['jax']}, Python {r['versions']['python']}",
                  f"- environment: {r.get('environment', 'not recorded (before it was)')}",
                  f"- host load (1/5/15 min) before {host.get('load_before')}, last "
                  f"{host.get('load_now')}; wall {r.get('wall_s', 0):.0f} s of a "
                  f"{r['budget_s']:.0f} s budget", "", "```", summary(r), "```", ""]
        errors = [e for e in r.get("parity", []) + r["energy_forces"] + r["md"]
                  + [r.get("fit") or {}] if "error" in e]
        for e in errors:
            parts.append(f"- error in {e.get('item')} {e.get('dtype', e.get('case', ''))} "
                         f"{e.get('atoms', e.get('n_target', ''))}: {e['error'][:400]}")
        parts.append("")
    return "\n".join(parts)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.argv_list = list(sys.argv[1:] if argv is None else argv)
    if args.summarize:
        text = summarize(args.summarize, "python " + " ".join(
            shlex.quote(a) for a in ["benchmarks/gpu_check.py", *args.argv_list]))
        if args.out:
            args.out.write_text(text)
        else:
            print(text)
        return 0
    cfg = dict(SMALL if args.small else FULL)
    if args.ef_sizes:
        cfg["ef_sizes"] = list(args.ef_sizes)
    if args.md_atoms:
        cfg["md_atoms"] = args.md_atoms
    budget = Budget(args.budget if args.budget is not None else cfg["budget_s"])
    if args.xla_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    log("importing jax")
    import jax

    fast_compile = args.small and not args.optimize
    if fast_compile:
        jax.config.update("jax_disable_most_optimizations", True)
    if args.chunk:
        import md.energy

        md.energy.EVAL_CHUNK = md.energy.EVAL_CHUNK_ACCELERATOR = args.chunk
    name = sanitize(jax.devices()[0].device_kind)
    default = ROOT / "benchmarks" / "results" / (
        f"gpu_check_small_{name}.json" if args.small else f"gpu_check_{name}.json")
    out = args.out if args.out is not None else default
    pot_path = PARITY / f"si_L{cfg['level']:02d}" / "pot.mtp"
    report = start_report(args, cfg, budget, pot_path, fast_compile)

    def save():
        report["wall_s"] = budget.elapsed()
        report["host"]["load_now"] = [round(x, 2) for x in os.getloadavg()]
        report["targets"] = targets(report)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1, default=str))
        tmp.replace(out)

    if args.only:  # a child: one item (the parent checked the budget), its report to --out
        cfg.update(need_ef_s=0.0, need_md_s=0.0, need_fit_s=0.0)
        run_item(args.only, cfg, pot_path, budget, report, save)
        save()
        return 0
    kind = report["device"]["kind"]
    log(f"device {kind} x{report['device']['count']} ({report['device']['platform']}), jax "
        f"{jax.__version__}; writing {out}")
    save()
    limit_default = args.item_timeout or (300.0 if args.small else 150.0)
    part = out.with_name(out.name + ".item.json")
    for skip_name, spec in item_plan(cfg):
        key, skipped = skipped_entry(spec, cfg, "")
        need = cfg["need_md_s" if spec.startswith("md") else "need_fit_s" if spec == "fit"
                   else "need_ef_s"]
        if skip_name in args.skip:
            skipped["skipped"] = f"--skip {skip_name}"
            add_entry(report, key, skipped)
        elif skip_name == "md64" and not cfg["md64"]:
            skipped["skipped"] = "--small: float32 MD only"
            add_entry(report, key, skipped)
        elif budget.left() < need:
            skipped["skipped"] = f"wall budget: {budget.left():.0f} s left"
            add_entry(report, key, skipped)
        elif args.in_process:
            log(f"item {spec}")
            run_item(spec, cfg, pot_path, budget, report, save)
        else:
            limit = min(args.item_timeout or (2 * limit_default if spec.startswith("md")
                                              else limit_default), budget.left())
            log(f"item {spec} (child process, limit {limit:.0f} s)")
            res = run_isolated(spec, args, limit, part)
            if isinstance(res, str):
                log(f"item {spec}: {res}")
                skipped.pop("skipped")
                add_entry(report, key, {**skipped, "error": res})
            else:
                for k in ("parity", "energy_forces", "md"):
                    report[k] += res[k]
                if res.get("fit"):
                    report["fit"] = res["fit"]
                if res.get("liquid"):
                    report["liquid"] = res["liquid"]
        save()
    part.unlink(missing_ok=True)
    report["host"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    save()
    print(summary(report), flush=True)
    log(f"wrote {out} ({budget.elapsed():.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
