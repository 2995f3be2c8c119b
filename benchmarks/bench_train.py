"""Training benchmark: `mtpjax train` against `mlp train` on the Si PBE data (mlearn), time to
accuracy.

Both programs are run by this script, as subprocesses, on the same files: the training and test
cells of ``data/si_mlearn`` written once as ``train.cfg`` / ``test.cfg`` (types 0 = Si, energies
and forces; no stresses), the same initial template (``tests/data/mlip_templates/LL.mtp`` with
min_dist 1.5 Å, max_dist 5.0 Å, radial_basis_size 8) and the same weights energy : force : stress
= 1 : 0.1 : 0, levels 8, 12, 16, 20 by default. Each run is pinned to one core
(``os.sched_setaffinity``; XLA single-threaded), runs one after the other, and is timed as a
whole process (start-up, data, neighbour lists, compilation, fit, writing the potential): wall
time and CPU time (the machine may be shared: CPU seconds are the steadier number; the load
averages around every run are recorded). `mtpjax train` runs ``--seeds`` seeds (default 3, its
``--seed``); `mlp train` (200 iterations) runs ``--mlp-seeds`` repetitions per level (default
3 / 3 / 2 / 1 at levels 8 / 12 / 16 / 20; it has no seed option: it draws its random radial
coefficients from ``std::random_device``, so the seed is a repetition index). Both programs'
trained potentials are then scored by the same code (`mtpjax calc-errors`' conventions, which
equal `mlp calc-errors`'): test energy MAE per atom (meV/atom) and force RMSE per component
(eV/Å).

Time to accuracy: every mtpjax run evaluates the test set after every iteration inside the run
(``--valid-cfgs``, monitoring only) and logs the wall clock and its CPU time, so each run has a
trajectory (test E-MAE, F-RMSE against the time since the process was launched); `mlp` cannot
report intermediate test errors, so for it the final point and its iteration log (stdout) are
recorded. Per level, the target is the median `mlp` run's final test E-MAE and F-RMSE; the
table gives the time each mtpjax run first reached both, their median, and its ratio to `mlp`'s
median time (goal ≤ ½), in wall and CPU seconds; ``train_time_to_accuracy.png`` plots error
against wall time (every mtpjax run, their median, every `mlp` final point and their median
with the min–max spread).

`mlp` runs only when ``MLP_BIN`` (or ``--mlp-bin``) names the binary. Its runs are recorded in a
cache file (default ``benchmarks/results/bench_train_mlp_cache.json``), keyed by level, seed,
options, the template and data hashes and the binary's hash, and reused by later invocations
(the result file marks each reused run, with the time it was recorded); ``--no-mlp-cache``
reruns them, ``--mlp-cache-only`` refuses to run any (a miss is an error); ``--only-seeds``
lets parallel invocations record different repetitions.
``--reuse-mtpjax JSON`` takes the mtpjax runs of an earlier result file of this script (same
data and settings; marked in the result). ``--compile-cache DIR``: the mtpjax runs share a
persistent compilation cache, filled first by one short warm-up run per level whose (cold)
wall and CPU time are recorded. ``--valid-fraction F --patience N [--refit-linear]``: every
mtpjax run holds out F of the training cells (split seeded by its seed), stops when their loss
has not improved for N iterations and returns the best-on-held-out potential (its linear
coefficients re-solved on all training cells with ``--refit-linear``); the test cells stay
monitor-only (``--monitor-cfgs``), the returned potential is the trajectory's last point.

Every file this script writes is written entirely by it: ``OUT.json`` (command line, versions,
host, load averages before and after, settings, every run with its trajectory, the summary,
the time-to-accuracy table), ``OUT.md`` (the same as tables) and the plot. ``--quick``: a tiny
smoke run (smallest cells, level 2, a few iterations, 2 seeds, no `mlp`) that the test suite
runs end to end. ``--accelerator``: the mtpjax runs compute on JAX's default device (a GPU
where there is one; the device is recorded), are not pinned and let XLA compile with all
threads; `mlp` (usually from the cache) stays the one-core reference — the GPU
time-to-accuracy of issue #14 (``scripts/train_gpu_device.sh``).

Usage:
    MLP_BIN=/path/to/mlp .venv/bin/python benchmarks/bench_train.py --levels 8 12 \\
        --compile-cache /tmp/jax_cache
    .venv/bin/python benchmarks/bench_train.py --quick --out /tmp/bench_train_quick.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import host, load, utc, versions  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WEIGHTS = {"energy": 1.0, "force": 0.1, "stress": 0.0}
QUICK = {"levels": [2], "seeds": 2, "max_iter": 5, "n_train": 6, "n_test": 3}
# settings older result files lack (their runs had these values)
DEFAULTS = {"valid_fraction": 0.0, "patience": 5, "valid_rtol": 0.0, "refit_linear": False,
            "refit_ridge_grid": []}
METRICS = ("test_energy_mae_meV", "test_force_rmse", "wall_s", "cpu_s", "train_loss")


# ---------------------------------------------------------------------------------- records

def sha256_bytes(*blobs: bytes) -> str:
    h = hashlib.sha256()
    for b in blobs:
        h.update(hashlib.sha256(b).digest())
    return h.hexdigest()


def stats(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {"n": len(values), "mean": round(statistics.fmean(values), 6),
            "median": round(statistics.median(values), 6), "min": min(values),
            "max": max(values)}


# ---------------------------------------------------------------------------------- inputs

def find_data() -> Path:
    for cand in (ROOT / "data" / "si_mlearn", ROOT.parent / "shared" / "data" / "si_mlearn"):
        if (cand / "train.xyz").exists():
            return cand
    raise SystemExit("si_mlearn data not found (data/si_mlearn or ../shared/data/si_mlearn)")


def template(level: int):
    from mtpjax.io.mtp_file import read_mtp

    pot = read_mtp(ROOT / "tests" / "data" / "mlip_templates" / f"{level:02d}.mtp")
    return dataclasses.replace(pot, min_dist=1.5, max_dist=5.0, radial_basis_size=8)


def write_data(data: Path, work: Path, n_train: int | None, n_test: int | None) -> dict:
    """train.cfg / test.cfg in `work` (all cells, or the `n` smallest of each file)."""
    from ase.io import read

    from mtpjax.io.cfg import Configuration, write_cfg

    info = {"source": str(data.relative_to(ROOT) if data.is_relative_to(ROOT) else data)}
    for name, n in (("train", n_train), ("test", n_test)):
        src = data / f"{name}.xyz"
        frames = read(src, ":")
        index = list(range(len(frames)))
        if n is not None:
            index = sorted(sorted(index, key=lambda i: (len(frames[i]), i))[:n])
        write_cfg(work / f"{name}.cfg", [
            Configuration(positions=a.positions, types=[0] * len(a), cell=a.cell.array,
                          pbc=a.pbc, energy=a.info["REF_energy"], forces=a.arrays["REF_forces"])
            for a in (frames[i] for i in index)])
        info[name] = {"file": f"{name}.xyz", "file_sha256": hashlib.sha256(
            src.read_bytes()).hexdigest(), "cells": len(index),
            "atoms": sum(len(frames[i]) for i in index),
            "selection": "all" if n is None else f"the {n} smallest cells"}
    info["cfg_sha256"] = sha256_bytes((work / "train.cfg").read_bytes(),
                                      (work / "test.cfg").read_bytes())
    return info


# ---------------------------------------------------------------------------------- runs

# pins itself to one core, then becomes the command (no fork from a multithreaded parent)
PIN = ("import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); "
       "os.execvp(sys.argv[2], sys.argv[2:])")


def run_pinned(cmd: list[str], cwd: Path, core: int | None, env: dict | None,
               log: Path) -> dict:
    """Run `cmd` pinned to `core` (None: not pinned); wall time, CPU time of the child and
    load around it."""
    before = load()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    launch = cmd if core is None else [sys.executable, "-c", PIN, str(core), *cmd]
    with open(log, "w") as fh:
        proc = subprocess.run(launch, cwd=cwd, env=env,
                              stdout=fh, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{shlex.join(cmd)} exited with {proc.returncode}:\n{tail}")
    return {"wall_s": round(wall, 2),
            "cpu_s": round((r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime), 2),
            "core": core, "load_before": before, "load_after": load(), "finished_at": utc()}


def mtpjax_env(compile_cache: str | None, accelerator: bool = False) -> dict:
    """Single-threaded XLA on one CPU core; with `accelerator`, JAX's default backend (a GPU
    where there is one) and XLA's own threading for compilation. No persistent compilation
    cache unless asked (--compile-cache)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    env["MTPJAX_COMPILE_CACHE"] = compile_cache or "off"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(":")
    if not accelerator:
        env.update(XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
                   OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


DEVICE_PROBE = ("import json, jax; d = jax.devices()[0]; print(json.dumps({'platform': "
                "d.platform, 'device_kind': d.device_kind, 'device_count': jax.device_count()}))")


def probe_device(env: dict) -> dict:
    """The device the mtpjax runs compute on: platform, kind, count (a child with their env)."""
    out = subprocess.run([sys.executable, "-c", DEVICE_PROBE], env=env, capture_output=True,
                         text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit_options(settings: dict) -> dict:
    """The ``fit.toml`` of every mtpjax run (FitConfig keys not given as flags)."""
    fit = {"select_on_valid": False, "checkpoint_every": 0,
           "eval_every": settings["monitor_every"], "memory_size": settings["memory_size"],
           "lstsq_atoms": settings["lstsq_atoms"],
           "relinearize_every": settings["relinearize_every"]}
    if settings["time_limit"]:
        fit["max_time"] = float(settings["time_limit"])
    if settings["lstsq_configs"]:
        fit["lstsq_configs"] = settings["lstsq_configs"]
    if settings.get("valid_fraction"):  # stop on held-out training cells (test: monitor only)
        fit.update(select_on_valid=True, valid_fraction=settings["valid_fraction"],
                   patience=settings["patience"], valid_rtol=settings["valid_rtol"],
                   refit_linear=settings["refit_linear"])
        if settings.get("refit_ridge_grid"):
            fit["refit_ridge_grid"] = [float(v) for v in settings["refit_ridge_grid"]]
    return fit


def run_mtpjax(level: int, seed: int, work: Path, args, tag: str | None = None,
               init: str | None = None) -> dict:
    """`mtpjax train` on train.cfg from init_LL.mtp (or from the trained potential ``init``,
    its coefficients as the start: ``--init-params=same``), one pinned core."""
    run_dir = work / f"mtpjax_L{level:02d}_{tag or f's{seed}'}"
    run_dir.mkdir()
    fit = fit_options(vars(args))
    (run_dir / "fit.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in fit.items()))
    cmd = [sys.executable, "-m", "mtpjax.cli", "train", init or f"../init_L{level:02d}.mtp",
           "../train.cfg", f"--energy-weight={WEIGHTS['energy']}",
           f"--force-weight={WEIGHTS['force']}", f"--stress-weight={WEIGHTS['stress']}",
           f"--max-iter={args.max_iter}", f"--seed={seed}", f"--optimizer={args.optimizer}",
           "--trained-pot-name=pot.mtp", "--workdir=run", "--config=fit.toml", "--no-resume",
           "--quiet"]
    held_out = bool(getattr(args, "valid_fraction", 0))
    if held_out:  # the split's seed follows the run's; valid_fraction etc. are in fit.toml
        cmd.append(f"--valid-seed={seed}")
    if args.monitor_every:  # the test cells: logged only (never selection or stopping)
        cmd.append("--monitor-cfgs=../test.cfg" if held_out else "--valid-cfgs=../test.cfg")
    test_key = "monitor" if held_out else "valid"
    if init:
        cmd.append("--init-params=same")
    launched = time.time()
    res = run_pinned(cmd, run_dir, None if args.accelerator else args.core,
                     mtpjax_env(args.compile_cache, args.accelerator), run_dir / "stdout.txt")
    log = [json.loads(line) for line in (run_dir / "run" / "log.jsonl").read_text().splitlines()]
    iters = [r for r in log if not r.get("final")]
    # the trajectory: test errors of the current coefficients, evaluated inside the run, against
    # the time since the process was launched (start-up included) and its CPU time so far
    curve = [{"iter": r["iter"], "time_s": r["time"],
              "wall_s": round(r["clock"] - launched, 3) if "clock" in r else None,
              "cpu_s": r.get("cpu"), "train_loss": r.get("loss"),
              **({"test_energy_mae_meV": round(1e3 * r[test_key]["energy_mae"], 4),
                  "test_force_rmse": round(r[test_key]["force_rmse"], 5)}
                 if test_key in r else {}),
              **({"valid_loss": r["valid"]["loss"]} if held_out and "valid" in r else {})}
             for r in iters if args.monitor_every and r["iter"] % args.monitor_every == 0]
    final = next((r for r in log if r.get("final")), {})
    if held_out and args.monitor_every and "clock" in final:
        # the potential the run returns (best on the held-out cells, linear part re-solved
        # on all training cells with --refit-linear): the last point of the trajectory
        curve.append({"iter": "final", "best_iter": final.get("best_iter"),
                      "time_s": final["time"], "wall_s": round(final["clock"] - launched, 3),
                      "cpu_s": final.get("cpu"), "train_loss": final.get("loss"),
                      "test_energy_mae_meV": round(1e3 * final[test_key]["energy_mae"], 4),
                      "test_force_rmse": round(final[test_key]["force_rmse"], 5)})
    return {"program": "mtpjax", "level": level, "seed": seed,
            "command": shlex.join(["mtpjax", *cmd[3:]]), **res,
            "iterations": max((r["iter"] for r in iters), default=0),
            "fit_s": final.get("time"), "final_train_loss": final.get("loss"),
            "stop_reason": final.get("stop_reason"), "best_iter": final.get("best_iter"),
            **({"refit_ridge": final["refit_ridge"]} if "refit_ridge" in final else {}),
            "fit_toml": fit, "curve": curve, "potential": str(run_dir / "pot.mtp")}


def mlp_command(mlp: str, level: int, max_iter: int) -> list[str]:
    return [mlp, "train", f"../init_L{level:02d}.mtp", "../train.cfg",
            f"--energy-weight={WEIGHTS['energy']}", f"--force-weight={WEIGHTS['force']}",
            f"--stress-weight={WEIGHTS['stress']}", f"--max-iter={max_iter}",
            "--trained-pot-name=pot.mtp"]


def mlp_calc_errors(mlp: str, run_dir: Path) -> dict:
    """`mlp calc-errors pot.mtp test.cfg` (a cross-check of the common scoring)."""
    out = subprocess.run([mlp, "calc-errors", "pot.mtp", "../test.cfg"], cwd=run_dir,
                         capture_output=True, text=True, check=False).stdout
    e = re.search(r"Energy per atom:.*?Average absolute difference = ([\d.eE+-]+)", out, re.S)
    f = re.search(r"Forces:.*?RMS absolute difference = ([\d.eE+-]+)", out, re.S)
    return {"test_energy_mae_meV": 1e3 * float(e.group(1)) if e else None,
            "test_force_rmse": float(f.group(1)) if f else None}


class MlpCache:
    """`mlp` runs recorded once and reused: {key hash: {"key", "run", "potential"}}."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries = {}
        if path is not None and path.is_file():
            self.entries = json.loads(path.read_text())["runs"]

    @staticmethod
    def key(**fields) -> str:
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, fields: dict, run: dict, potential: str) -> None:
        self.entries[key] = {"key": fields, "run": run, "potential": potential}
        if self.path is not None:
            if self.path.is_file():  # keep what concurrent invocations recorded meanwhile
                self.entries = {**json.loads(self.path.read_text())["runs"], **self.entries}
            doc = {"written_by": "benchmarks/bench_train.py",
                   "about": "mlp train runs recorded by bench_train.py and reused by later runs "
                            "with the same key (level, seed = repetition, options, template, "
                            "data and binary hashes); the potential is kept to score it again.",
                   "runs": self.entries}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
            os.replace(tmp, self.path)


def cached_mlp_binary(path: Path) -> str:
    """The sha256 of the one `mlp` binary whose runs `path` holds (--mlp-cache-only without
    the binary on this machine); an error if the cache is missing or mixes binaries."""
    if not path.is_file():
        raise SystemExit(f"--mlp-cache-only: no mlp cache at {path}")
    binaries = {entry["key"]["mlp_sha256"]
                for entry in json.loads(path.read_text())["runs"].values()}
    if len(binaries) != 1:
        raise SystemExit(f"--mlp-cache-only without MLP_BIN: {path} holds runs of "
                         f"{len(binaries)} mlp binaries; name the binary with --mlp-bin")
    return binaries.pop()


def run_mlp(level: int, seed: int, work: Path, mlp: str, args, cache: MlpCache,
            key_fields: dict) -> dict:
    run_dir = work / f"mlp_L{level:02d}_s{seed}"
    run_dir.mkdir()
    cmd = mlp_command(mlp, level, args.mlp_max_iter)
    fields = {**key_fields, "level": level, "seed": seed, "options": cmd[4:]}
    key = MlpCache.key(**fields)
    hit = cache.get(key) if args.mlp_cache_use else None
    if hit is None and args.mlp_cache_only:
        raise SystemExit(f"--mlp-cache-only: mlp level {level} repetition {seed} is not in "
                         f"the cache {cache.path} (key {key[:12]}…)")
    if hit is not None:
        (run_dir / "pot.mtp").write_text(hit["potential"])
        run = {**hit["run"], "cached": True}
    else:
        res = run_pinned(cmd, run_dir, args.core, None, run_dir / "stdout.txt")
        run = {"program": "mlp", "level": level, "seed": seed,
               "command": shlex.join(["mlp", *cmd[1:]]), **res,
               "mlp_calc_errors": mlp_calc_errors(mlp, run_dir), "recorded_at": utc(),
               "recorded_on": platform.node(),
               "stdout": (run_dir / "stdout.txt").read_text()[-200_000:]}
        cache.put(key, fields, run, (run_dir / "pot.mtp").read_text())
        run = {**run, "cached": False}
    return {**run, "cache_key": key, "potential": str(run_dir / "pot.mtp")}


def score(potential: str, test_cfg: Path) -> dict:
    """Test errors of a trained potential, the same code for both programs."""
    from mtpjax.calculator import MTPEvaluator
    from mtpjax.commands.evaluate_cfg import predict
    from mtpjax.errors_report import error_report
    from mtpjax.io.cfg import read_cfg

    reference = read_cfg(test_cfg)
    rep = error_report(predict(MTPEvaluator(potential), reference, progress=False), reference)
    return {"test_energy_mae_meV": round(1e3 * rep["energy_per_atom"]["mae"], 4),
            "test_energy_rmse_meV": round(1e3 * rep["energy_per_atom"]["rmse"], 4),
            "test_force_rmse": round(rep["forces"]["rmse"], 5),
            "test_force_mae": round(rep["forces"]["mae"], 5)}


_TRAIN_SAMPLES: dict = {}


def train_score(potential: str, train_cfg: Path) -> dict:
    """The training loss of a trained potential (the loss mtpjax minimises, ``mtpjax.fit.loss``,
    with this benchmark's weights) and its training errors, the same code for both programs:
    tells a worse optimum (higher loss) from worse generalisation (lower loss, worse test)."""
    import jax

    from mtpjax.fit.data import load_fit_data, pack_buckets
    from mtpjax.fit.loss import LossWeights, dataset_terms
    from mtpjax.fit.loss import summarize as loss_summary
    from mtpjax.io.mtp_file import read_mtp
    from mtpjax.model import ModelSpec
    from mtpjax.params import check_params

    with jax.enable_x64(True):
        pot = read_mtp(potential)
        key = (str(train_cfg), float(pot.max_dist), pot.species_count)
        if key not in _TRAIN_SAMPLES:
            samples, _ = load_fit_data(pot, train_cfg, None, energy_weight=WEIGHTS["energy"],
                                       force_weight=WEIGHTS["force"])
            _TRAIN_SAMPLES[key] = tuple(b.batch for b in pack_buckets(samples))
        batches = _TRAIN_SAMPLES[key]
        spec = ModelSpec.from_potential(pot)
        weights = LossWeights(WEIGHTS["energy"], WEIGHTS["force"], WEIGHTS["stress"])
        params = check_params(spec, pot.params())
        terms = jax.jit(lambda p, b: dataset_terms(spec, weights, p, b))(params, batches)
        m = loss_summary(terms)
    return {"train_loss": m["loss"], "train_energy_loss": float(terms["energy_loss"]),
            "train_force_loss": float(terms["force_loss"]),
            "train_energy_mae_meV": round(1e3 * m["energy_mae"], 4),
            "train_force_rmse": round(m["force_rmse"], 5)}


# ---------------------------------------------------------------------------------- report

def first_reach(curve: list[dict], e_target: float, f_target: float, clock: str):
    """``clock`` (wall_s or cpu_s) of the first trajectory point with test E-MAE ≤ e_target
    and F-RMSE ≤ f_target; None if the run never got there."""
    for pt in curve:
        e, f = pt.get("test_energy_mae_meV"), pt.get("test_force_rmse")
        if e is not None and f is not None and e <= e_target and f <= f_target:
            return pt.get(clock)
    return None


def _median_or_inf(values):
    vals = [math.inf if v is None else v for v in values]
    return statistics.median(vals) if vals else None


def time_to_accuracy(runs: list[dict], tolerances=(0.0, 0.005)) -> list[dict]:
    """Per level and tolerance t: the target is mlp's median final test errors × (1 + t); mlp's
    median wall/CPU time, and the time each mtpjax run first reached the target (median over
    seeds; a seed that never reached it counts as infinite). Goal met: median mtpjax ≤ ½ median
    mlp. t = 0 is the strict criterion; when both programs converge to the same minimum it is
    decided by the last digits, hence also t = 0.5 %."""
    out = []
    for level, tol in ((lv, t) for lv in sorted({r["level"] for r in runs})
                       for t in tolerances):
        mlp = [r for r in runs if r["level"] == level and r["program"] == "mlp"]
        mine = [r for r in runs if r["level"] == level and r["program"] == "mtpjax"]
        if not mlp or not mine:
            continue
        e_t = statistics.median(r["test_energy_mae_meV"] for r in mlp) * (1 + tol)
        f_t = statistics.median(r["test_force_rmse"] for r in mlp) * (1 + tol)
        row = {"level": level, "tolerance": tol, "mlp_runs": len(mlp), "mtpjax_runs": len(mine),
               "target_test_energy_mae_meV": e_t, "target_test_force_rmse": f_t}
        for clock in ("wall_s", "cpu_s"):
            ref = statistics.median(r[clock] for r in mlp)
            reach = [first_reach(r.get("curve", []), e_t, f_t, clock) for r in mine]
            med = _median_or_inf(reach)
            row[clock] = {"mlp_median": ref, "mtpjax_per_seed": reach,
                          "mtpjax_median": None if med == math.inf else med,
                          "ratio": None if med == math.inf else round(med / ref, 4),
                          "met": med <= 0.5 * ref}
        out.append(row)
    return out


def _step_median(curves: list[list[tuple]], grid):
    """Median over runs of each run's latest value at every grid time (None before a run's
    first point)."""
    out = []
    for t in grid:
        vals = []
        for c in curves:
            past = [v for (x, v) in c if x <= t]
            if past:
                vals.append(past[-1])
        out.append(statistics.median(vals) if len(vals) == len(curves) else None)
    return out


def plot(doc: dict, path: Path) -> None:
    """Test E-MAE and F-RMSE against wall time: every mtpjax run (thin), their median (thick,
    step-wise), every mlp run's final point and their median with the min–max spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({r["level"] for r in doc["runs"]})
    fig, axes = plt.subplots(len(levels), 2, figsize=(11, 3.6 * len(levels)), squeeze=False)
    for row, level in zip(axes, levels, strict=True):
        mine = [r for r in doc["runs"] if r["level"] == level and r["program"] == "mtpjax"]
        mlp = [r for r in doc["runs"] if r["level"] == level and r["program"] == "mlp"]
        for ax, key, label in ((row[0], "test_energy_mae_meV", "test energy MAE (meV/atom)"),
                               (row[1], "test_force_rmse", "test force RMSE (eV/Å)")):
            curves = [[(p["wall_s"], p[key]) for p in r.get("curve", [])
                       if p.get(key) is not None and p.get("wall_s") is not None] for r in mine]
            curves = [c for c in curves if c]
            for c in curves:
                ax.plot(*zip(*c, strict=True), color="tab:blue", alpha=0.3, lw=0.8,
                        drawstyle="steps-post")
            if curves:
                grid = sorted({x for c in curves for x, _ in c})
                med = _step_median(curves, grid)
                pts = [(t, m) for t, m in zip(grid, med, strict=True) if m is not None]
                if pts:
                    ax.plot(*zip(*pts, strict=True), color="tab:blue", lw=2,
                            drawstyle="steps-post",
                            label=f"mtpjax, median of {len(curves)} runs")
            if mlp:
                xs = [r["wall_s"] for r in mlp]
                ys = [r[key] for r in mlp]
                ax.scatter(xs, ys, color="tab:red", s=12, alpha=0.5)
                mx, my = statistics.median(xs), statistics.median(ys)
                ax.errorbar([mx], [my], xerr=[[mx - min(xs)], [max(xs) - mx]],
                            yerr=[[my - min(ys)], [max(ys) - my]], fmt="o", color="tab:red",
                            capsize=3, label=f"mlp final, median of {len(mlp)} runs (min–max)")
                ax.axhline(my, color="tab:red", ls=":", lw=0.8)
                ax.axvline(0.5 * mx, color="gray", ls="--", lw=0.8, label="½ mlp median wall")
            ax.set_yscale("log")
            ax.set_xlabel("wall time since launch (s)")
            ax.set_ylabel(label)
            ax.set_title(f"level {level}")
            ax.legend(fontsize=7)
    fig.suptitle(f"bench_train, load {doc['load_before']} → {doc['load_after']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

def summarize(runs: list[dict]) -> list[dict]:
    out = []
    for level in sorted({r["level"] for r in runs}):
        for program in ("mtpjax", "mlp"):
            mine = [r for r in runs if r["level"] == level and r["program"] == program]
            if mine:
                out.append({"level": level, "program": program, "seeds": [r["seed"] for r in mine],
                            "cached_runs": sum(bool(r.get("cached")) for r in mine),
                            **{m: stats([r.get(m) for r in mine]) for m in METRICS}})
    return out


def _cell(s: dict, fmt: str) -> str:
    if not s.get("n"):
        return "–"
    return f"{s['mean']:{fmt}} ({s['min']:{fmt}}–{s['max']:{fmt}})"


def _device_words(doc: dict) -> str:
    """'1 × NVIDIA H200 (gpu)' from the result's device probe."""
    d = doc.get("mtpjax_device") or {}
    if not d:
        return "an unrecorded device"
    return f"{d['device_count']} × {d['device_kind']} ({d['platform']})"


def render_md(doc: dict) -> str:
    s = doc["settings"]
    lines = [
        "# bench_train: `mtpjax train` vs `mlp train`, test errors vs DFT",
        "",
        f"Written by `benchmarks/bench_train.py` (every line of this file and of "
        f"`{Path(doc['out_json']).name}`). Command: `{doc['command']}`.",
        "",
        *([f"**Partial result**: the job stopped before its end; {len(doc['runs'])} finished "
           "runs, written after each (training-loss columns are filled only at the end).", ""]
          if doc.get("complete") is False else []),
        f"Started {doc['started_at']}, finished {doc['finished_at']} on `{doc['host']['hostname']}`"
        f" ({doc['host']['cpu_model']}, {doc['host']['cpus']} CPUs, "
        f"{doc['host']['memory_GiB']} GiB); load average (1/5/15 min) "
        f"{doc['load_before']} before, {doc['load_after']} after. Versions: "
        + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()) + ".",
        "",
        f"Data: {doc['data']['train']['cells']} training cells ({doc['data']['train']['atoms']} "
        f"atoms), {doc['data']['test']['cells']} test cells ({doc['data']['test']['atoms']} "
        f"atoms) of `{doc['data']['source']}` ({doc['data']['train']['selection']}). Weights "
        f"energy : force : stress = {WEIGHTS['energy']:g} : {WEIGHTS['force']:g} : "
        f"{WEIGHTS['stress']:g}. Template `tests/data/mlip_templates/LL.mtp`, min_dist 1.5 Å, "
        f"max_dist 5.0 Å, radial_basis_size 8. `mtpjax`: optimizer {s['optimizer']}, "
        f"max_iter {s['max_iter']}, time limit {s['time_limit'] or 'none'}, seeds "
        f"{s['seeds']}. `mlp`: "
        + (f"max_iter {s['mlp_max_iter']}, repetitions per level "
           + ", ".join(f"L{lv}: " + str(sum(r["program"] == "mlp" and r["level"] == lv
                                             for r in doc["runs"])) for lv in s["levels"])
           + " (no seed option: random start from std::random_device)." if doc["mlp"]["ran"] else
           f"not run ({doc['mlp']['why_not']}).")
        + (" Each run pinned to one core (column `core`), the runs of one invocation one after "
           "the other" if not s.get("accelerator") else
           f" **mtpjax on {_device_words(doc)}** (`--accelerator`: not pinned, XLA's own "
           "threads for compiling; column `core` then names the core `mlp` runs are pinned "
           "to), `mlp` on one pinned core, the runs of one invocation one after the other")
        + " (runs reused from another invocation may have shared the machine with it: "
        "see their load); wall and CPU time of the whole process. Test errors: both "
        "programs' potentials scored by the same code "
        "(`mtpjax calc-errors` conventions = `mlp calc-errors`'): energy MAE per atom, force "
        "RMSE per component. Training loss (columns `train loss`): the loss mtpjax minimises "
        "(`mtpjax.fit.loss`, these weights, `vibrations` convention = `mlp`'s: Σ over cells of "
        "w_E ΔE²/N + w_F Σ|ΔF|², eV²) of every final potential on the training cells, also "
        "evaluated by the same code for both programs; a lower training loss with worse test "
        "errors is worse generalisation, not a worse optimum.",
        "",
    ]
    if s.get("valid_fraction"):
        stops = [f"seed {r['seed']} (L{r['level']}): {r.get('stop_reason')} after "
                 f"{r['iterations']}, best iteration {r.get('best_iter')}"
                 + (f", ridge {r['refit_ridge']['ridge']:g}" if "refit_ridge" in r else "")
                 for r in doc["runs"] if r["program"] == "mtpjax"]
        lines += [f"**Stopping on held-out training cells** (mtpjax): {s['valid_fraction']:g} "
                  f"of the training cells are held out (`--valid-fraction`, split seeded by "
                  f"the run's seed), the fit stops when their loss has not improved (relative "
                  f"margin {s['valid_rtol']:g}) for {s['patience']} iterations and returns the "
                  f"best-on-held-out coefficients"
                  + (", their linear coefficients re-solved on all training cells "
                     "(`--refit-linear`)" if s["refit_linear"] else "")
                  + (" with the standardised ridge (species coefficients unpenalised) of "
                     f"{s['refit_ridge_grid']} that gave the lowest held-out loss when solved "
                     "on the other training cells (`--refit-ridge-grid`)"
                     if s.get("refit_ridge_grid") else "")
                  + ". The test cells are only monitored (`--monitor-cfgs`); the returned "
                  "potential is the last point (`final`) of each trajectory. Stops: "
                  + "; ".join(stops) + ".", ""]
    if s["compile_cache"]:
        lines += [f"The mtpjax runs shared a persistent compilation cache (`{s['compile_cache']}`"
                  "): their wall times are not start-up-inclusive timings.", ""]
    if doc["mlp"]["ran"]:
        cached = [r for r in doc["runs"] if r.get("cached")]
        lines += [f"`mlp` runs reused from the cache `{doc['mlp']['cache']}`: {len(cached)} of "
                  f"{sum(r['program'] == 'mlp' for r in doc['runs'])}"
                  + (" (recorded " + ", ".join(sorted({r['recorded_at'] for r in cached}))
                     + ")" if cached else "") + ".", ""]
    reused = sorted({r["reused_from"] for r in doc["runs"] if r.get("reused_from")})
    if reused:
        lines += ["The mtpjax runs were taken from " + ", ".join(f"`{x}`" for x in reused)
                  + " (an earlier invocation of this script on the same data and templates, "
                  "finished " + ", ".join(sorted({r["recorded_at"] for r in doc["runs"]
                                                  if r.get("reused_from")})) + ").", ""]
    if doc.get("warmups"):
        lines += ["Warm-up runs (one iteration; not in the tables): "
                  + ", ".join(f"level {w['level']}: {w['wall_s']:.1f} s wall, {w['cpu_s']:.1f} s "
                              f"CPU (load {w['load_before'][0]:.1f}; "
                              + ("cold" if w.get("cold", True) else "already filled")
                              + " compilation cache)" for w in doc["warmups"]) + ".", ""]
    if doc.get("time_to_accuracy"):
        lines += ["## Time to `mlp`'s accuracy", "",
                  "Target: the median `mlp` run's final test E-MAE **and** F-RMSE (× (1 + "
                  "tolerance); tolerance 0 is the strict criterion, 0.5 % the same minimum up "
                  "to its last digits); time: the "
                  "first point of each mtpjax run's trajectory (test set evaluated inside the "
                  "run after every iteration, time since the process was launched) at or below "
                  "both; median over the mtpjax seeds (a seed that never got there counts as "
                  "infinite). Goal: ≤ ½ of `mlp`'s median time.", "",
                  "| level | tolerance | target E MAE (meV/atom) | target F RMSE (eV/Å) | "
                  "mlp median wall (s)"
                  " | mtpjax wall per seed (s) | median / mlp | ≤ ½? | mlp median CPU (s) | "
                  "mtpjax CPU per seed (s) | median / mlp | ≤ ½? |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]

        def per_seed(v):
            return ", ".join("never" if x is None else f"{x:.1f}" for x in v)

        for t in doc["time_to_accuracy"]:
            w, c = t["wall_s"], t["cpu_s"]
            lines.append(
                f"| {t['level']} | {100 * t['tolerance']:g} % | "
                f"{t['target_test_energy_mae_meV']:.4f} | "
                f"{t['target_test_force_rmse']:.5f} | {w['mlp_median']:.1f} | "
                f"{per_seed(w['mtpjax_per_seed'])} | "
                f"{'–' if w['ratio'] is None else format(w['ratio'], '.3f')} | "
                f"{'yes' if w['met'] else 'no'} | {c['mlp_median']:.1f} | "
                f"{per_seed(c['mtpjax_per_seed'])} | "
                f"{'–' if c['ratio'] is None else format(c['ratio'], '.3f')} | "
                f"{'yes' if c['met'] else 'no'} |")
        lines += ["", f"Plot: `{Path(doc['plot']).name}` (error against wall time).", ""]
    lines += ["## Summary: mean (min–max) over runs", "",
              "| level | program | runs | test E MAE (meV/atom) | test F RMSE (eV/Å) | wall (s) "
              "| CPU (s) | train loss (eV²) |", "|---|---|---|---|---|---|---|---|"]
    for row in doc["summary"]:
        lines.append(f"| {row['level']} | {row['program']} | {row['wall_s']['n']} | "
                     f"{_cell(row['test_energy_mae_meV'], '.2f')} | "
                     f"{_cell(row['test_force_rmse'], '.4f')} | {_cell(row['wall_s'], '.1f')} | "
                     f"{_cell(row['cpu_s'], '.1f')} | "
                     f"{_cell(row.get('train_loss', {}), '.4f')} |")
    lines += ["", "## Runs", "",
              "| level | program | seed | iterations | test E MAE (meV/atom) | test F RMSE (eV/Å) "
              "| train loss (eV²) | train E MAE (meV/atom) | train F RMSE (eV/Å) "
              "| wall (s) | CPU (s) | core | load before → after | cached |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def num(x, fmt):
        return "–" if x is None else format(x, fmt)

    for r in doc["runs"]:
        lines.append(f"| {r['level']} | {r['program']} | {r['seed']} | "
                     f"{r.get('iterations', '–')} | {r['test_energy_mae_meV']:.2f} | "
                     f"{r['test_force_rmse']:.4f} | {num(r.get('train_loss'), '.4f')} | "
                     f"{num(r.get('train_energy_mae_meV'), '.3f')} | "
                     f"{num(r.get('train_force_rmse'), '.5f')} | "
                     f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                     f"{'all' if r['core'] is None else r['core']} | "
                     f"{r['load_before'][0]:.1f} → {r['load_after'][0]:.1f} | "
                     f"{'yes, ' + r['recorded_at'] if r.get('cached') else 'no'} |")
    if doc.get("continued_mlp"):
        lines += ["", "## `mlp`'s final potentials continued by mtpjax", "",
                  f"Each `mlp` run's final potential as the start of `mtpjax train "
                  f"--init-params=same --optimizer {s['optimizer']}` (same data, weights, "
                  "pinned core), run to its stopping rule: the training loss it ends at and "
                  "the test errors there.", "",
                  "| level | mlp repetition | mlp train loss (eV²) | iterations | train loss "
                  "(eV²) | test E MAE (meV/atom) | test F RMSE (eV/Å) | wall (s) | CPU (s) | "
                  "load before → after |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c in doc["continued_mlp"]:
            lines.append(f"| {c['level']} | {c['from_mlp_seed']} | "
                         f"{num(c.get('from_mlp_train_loss'), '.4f')} | {c['iterations']} | "
                         f"{c['train_loss']:.4f} | {c['test_energy_mae_meV']:.4f} | "
                         f"{c['test_force_rmse']:.5f} | {c['wall_s']:.1f} | {c['cpu_s']:.1f} | "
                         f"{c['load_before'][0]:.1f} → {c['load_after'][0]:.1f} |")
    if s["time_limit"]:
        timed_out = [str(r["seed"]) for r in doc["runs"] if r["program"] == "mtpjax"
                     and r.get("stop_reason") in ("max_time", "time_limit")]
        lines += ["", f"mtpjax time limit {s['time_limit']:g} s: "
                  + (f"seeds {', '.join(timed_out)} stopped there (then the least-squares "
                     "polish ran)." if timed_out else "no run reached it (stop reasons in "
                     "the runs' JSON).")]
    lines += ["", "Commands (run in a per-run folder next to `init_LL.mtp`, `train.cfg`, "
              "`test.cfg`):", ""]
    lines += [f"    {c}" for c in dict.fromkeys(r["command"] for r in doc["runs"]
                                               + doc.get("continued_mlp", []))]
    if "mtpjax" in s["programs"] or doc.get("continued_mlp"):
        lines += ["", "`fit.toml` of the mtpjax runs (written by the script): "
                  + ", ".join(f"`{k} = {json.dumps(v)}`" for k, v in fit_options(s).items())
                  + "."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", type=int, nargs="+", default=[8, 12, 16, 20])
    p.add_argument("--seeds", type=int, default=3, help="mtpjax runs per level (≥ 3)")
    p.add_argument("--mlp-seeds", default="8:3,12:3,16:2,20:1",
                   help="mlp runs per level, LEVEL:N,... (other levels: --seeds)")
    p.add_argument("--optimizer", default="varpro",
                   choices=["varpro", "lbfgs", "bfgs", "lm", "adam"])
    p.add_argument("--max-iter", type=int, default=1000, help="mtpjax iterations")
    p.add_argument("--mlp-max-iter", type=int, default=200, help="mlp BFGS iterations")
    p.add_argument("--time-limit", type=float, default=None,
                   help="mtpjax: seconds of iterations per run (then polish)")
    p.add_argument("--monitor-every", type=int, default=1,
                   help="record the test errors every N mtpjax iterations (the trajectory; "
                        "0: off)")
    p.add_argument("--memory-size", type=int, default=200, help="L-BFGS memory")
    p.add_argument("--lstsq-atoms", type=int, default=256)
    p.add_argument("--lstsq-configs", type=int, default=None)
    p.add_argument("--relinearize-every", type=int, default=0)
    p.add_argument("--valid-fraction", type=float, default=0.0,
                   help="mtpjax: hold out this fraction of the TRAINING cells (split seeded "
                        "by the run's seed) and stop on their loss (--patience), keeping the "
                        "best-on-held-out coefficients; the test cells stay monitor-only "
                        "(0: off, the default)")
    p.add_argument("--patience", type=int, default=5,
                   help="with --valid-fraction: iterations without a held-out improvement "
                        "before stopping")
    p.add_argument("--valid-rtol", type=float, default=0.0,
                   help="with --valid-fraction: relative margin of an improvement")
    p.add_argument("--refit-linear", action="store_true",
                   help="with --valid-fraction: re-solve the linear coefficients of the "
                        "selected potential on all training cells (held-out ones included)")
    p.add_argument("--refit-ridge-grid", type=float, nargs="+", default=[],
                   help="with --refit-linear: standardised ridge strengths for the linear "
                        "coefficients (mtpjax.fit.lstsq.ridge_solve); the one with the lowest "
                        "held-out loss (fitted on the other training cells) is used")
    p.add_argument("--core", type=int, default=None,
                   help="core every run is pinned to (default: the last one this process may use)")
    p.add_argument("--accelerator", action="store_true",
                   help="mtpjax runs on JAX's default device (a GPU where there is one), not "
                        "pinned, XLA's own threads; mlp stays on one pinned core")
    p.add_argument("--programs", nargs="+", default=["mtpjax", "mlp"], choices=["mtpjax", "mlp"])
    p.add_argument("--mlp-bin", default=None,
                   help="mlp binary (default: $MLP_BIN, except with --quick; without it mlp is "
                        "not run)")
    p.add_argument("--mlp-cache", default=str(RESULTS / "bench_train_mlp_cache.json"))
    p.add_argument("--no-mlp-cache", dest="mlp_cache_use", action="store_false",
                   help="rerun mlp even where the cache has the run (the cache is updated)")
    p.add_argument("--mlp-cache-only", action="store_true",
                   help="never run mlp: every mlp run must come from the cache (a miss is an "
                        "error)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 6 smallest training cells, 3 test cells, level 2, "
                        "5 iterations, 2 seeds, a shared compilation cache (timings not "
                        "comparable), no mlp unless --mlp-bin is given")
    p.add_argument("--compile-cache", default=None,
                   help="JAX persistent compilation cache for the mtpjax runs (default: none, "
                        "every run compiles; --quick: WORK/jax_cache). With it, one short "
                        "warm-up run per level fills the cache first (its cold start-up is "
                        "recorded)")
    p.add_argument("--only-seeds", type=int, nargs="+", default=None,
                   help="run only these seeds / repetitions (e.g. to record mlp runs in "
                        "parallel invocations sharing the cache)")
    p.add_argument("--reuse-mtpjax", metavar="JSON", nargs="+", default=None,
                   help="take the mtpjax runs (and warm-ups) from earlier result files of "
                        "this script (same data, optimizer, iterations; e.g. one per level) "
                        "instead of running them; marked in the result")
    p.add_argument("--continue-mlp", action="store_true",
                   help="after the runs, continue every mlp run's final potential with "
                        "mtpjax train (--optimizer, --init-params=same) to convergence: does "
                        "mlp's fit head for the minimum mtpjax finds? (a separate table)")
    p.add_argument("--plot", default=None,
                   help="error-vs-time plot (default benchmarks/results/"
                        "train_time_to_accuracy.png with the default --out, else OUT.png)")
    p.add_argument("--work", default=None, help="folder for the runs (default: a new temp dir)")
    p.add_argument("--render-md", metavar="JSON", default=None,
                   help="only write JSON's .md again from the JSON (after a change of the tables)")
    p.add_argument("--out", default=None,
                   help="result JSON (OUT.md next to it); default benchmarks/results/"
                        "bench_train.json (--quick: bench_train_quick.json)")
    args = p.parse_args(argv)
    args.n_train = args.n_test = None
    if args.quick:
        args.levels, args.seeds, args.max_iter = QUICK["levels"], QUICK["seeds"], QUICK["max_iter"]
        args.n_train, args.n_test = QUICK["n_train"], QUICK["n_test"]
    elif args.seeds < 3:
        p.error("--seeds: at least 3 per program (--quick runs 2)")
    args.mlp_seeds = {int(k): int(v) for k, v in
                      (item.split(":") for item in args.mlp_seeds.split(",") if item)}
    if args.quick:
        args.mlp_seeds = {}
    if args.mlp_bin is None and not args.quick:
        args.mlp_bin = os.environ.get("MLP_BIN") or None
    if args.core is None:
        args.core = max(os.sched_getaffinity(0))
    args.out = Path(args.out or RESULTS / ("bench_train_quick.json" if args.quick
                                           else "bench_train.json"))
    args.plot = Path(args.plot) if args.plot else (
        args.out.with_suffix(".png") if args.quick or args.out.name != "bench_train.json"
        else RESULTS / "train_time_to_accuracy.png")
    return args


def main(argv=None) -> int:
    import tempfile

    args = parse_args(argv)
    if args.render_md:
        path = Path(args.render_md)
        path.with_suffix(".md").write_text(render_md(json.loads(path.read_text())))
        print(f"wrote {path.with_suffix('.md')}")
        return 0
    command = shlex.join(["benchmarks/bench_train.py", *(sys.argv[1:] if argv is None
                                                        else argv)])
    started, load_before = utc(), load()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_train_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.quick and args.compile_cache is None:
        args.compile_cache = str(work / "jax_cache")
    data = write_data(find_data(), work, args.n_train, args.n_test)
    from mtpjax.io.mtp_file import format_mtp

    template_sha = {}
    for level in args.levels:
        text = format_mtp(template(level))
        (work / f"init_L{level:02d}.mtp").write_text(text)
        template_sha[level] = hashlib.sha256(text.encode()).hexdigest()
    mlp = args.mlp_bin if "mlp" in args.programs else None
    cached_binary = None
    if mlp is None and args.mlp_cache_only and "mlp" in args.programs:
        # a machine without the binary (a lent GPU): the cache's runs, of its one binary
        cached_binary = cached_mlp_binary(Path(args.mlp_cache))
        mlp = "mlp"
    cache = MlpCache(Path(args.mlp_cache) if mlp else None)
    mlp_info = {"ran": bool(mlp), "why_not": None if mlp else (
        "MLP_BIN not set" if "mlp" in args.programs else "--programs without mlp")}
    if mlp:
        mlp_info.update(
            binary=mlp if cached_binary is None else "not on this machine (--mlp-cache-only)",
            binary_sha256=cached_binary or hashlib.sha256(Path(mlp).read_bytes()).hexdigest(),
            cache=str(Path(args.mlp_cache).relative_to(ROOT))
            if Path(args.mlp_cache).resolve().is_relative_to(ROOT) else args.mlp_cache)
    runs, warmups = [], []
    reused = None
    mtpjax_device = probe_device(mtpjax_env(None, args.accelerator))
    if args.reuse_mtpjax:  # mtpjax runs of earlier invocations on the same data/templates
        caches = []
        for source in args.reuse_mtpjax:
            reused = json.loads(Path(source).read_text())
            if reused["data"]["cfg_sha256"] != data["cfg_sha256"]:
                raise SystemExit(f"{source}: recorded on other data")
            for key in ("optimizer", "max_iter", "time_limit", "monitor_every",
                        "valid_fraction", "patience", "valid_rtol", "refit_linear",
                        "refit_ridge_grid"):
                theirs = reused["settings"].get(key, DEFAULTS.get(key))
                if theirs != getattr(args, key):
                    raise SystemExit(f"{source}: other {key} ({theirs} ≠ {getattr(args, key)})")
            for r in reused["runs"]:
                if r["program"] == "mtpjax" and r["level"] in args.levels:
                    runs.append({**r, "reused_from": source,
                                 "recorded_at": reused["finished_at"]})
            warmups += [w for w in reused.get("warmups", []) if w["level"] in args.levels]
            caches.append(reused["settings"]["compile_cache"])
        args.programs = [p for p in args.programs if p != "mtpjax"]
        args.compile_cache = ", ".join(sorted({c for c in caches if c})) or None
    continued = []

    def progress() -> None:  # the result so far, in case the job is stopped
        write_result(args, command, started, load_before, data, mlp_info, mtpjax_device,
                     work, runs, warmups, continued, complete=False)

    for level in args.levels:
        if "mtpjax" in args.programs and args.compile_cache:
            print(f"L{level} mtpjax warm-up (fills the compilation cache)", flush=True)
            cache_dir = Path(args.compile_cache)
            cold = not (cache_dir.is_dir() and any(cache_dir.iterdir()))
            warm = argparse.Namespace(**{**vars(args), "max_iter": 1})
            w = run_mtpjax(level, 0, work, warm, tag="warmup")
            warmups.append({**{k: w[k] for k in ("level", "wall_s", "cpu_s", "load_before",
                                                 "load_after", "command")}, "cold": cold})
        for seed in range(max(args.seeds, args.mlp_seeds.get(level, args.seeds))):
            if args.only_seeds is not None and seed not in args.only_seeds:
                continue
            if "mtpjax" in args.programs and seed < args.seeds:
                where = mtpjax_device["device_kind"] if args.accelerator else f"core {args.core}"
                print(f"L{level} mtpjax seed {seed} ({where})", flush=True)
                runs.append(run_mtpjax(level, seed, work, args))
                runs[-1].update(score(runs[-1]["potential"], work / "test.cfg"))
                print(f"  {runs[-1]['wall_s']:.1f} s, E {runs[-1]['test_energy_mae_meV']:.2f} "
                      f"meV/atom, F {runs[-1]['test_force_rmse']:.4f} eV/Å", flush=True)
                progress()
            if mlp and seed < args.mlp_seeds.get(level, args.seeds):
                print(f"L{level} mlp repetition {seed} (core {args.core})", flush=True)
                key_fields = {"template_sha256": template_sha[level],
                              "data_sha256": data["cfg_sha256"],
                              "mlp_sha256": mlp_info["binary_sha256"]}
                runs.append(run_mlp(level, seed, work, mlp, args, cache, key_fields))
                runs[-1].update(score(runs[-1]["potential"], work / "test.cfg"))
                print(f"  {runs[-1]['wall_s']:.1f} s{' (cached)' if runs[-1]['cached'] else ''}"
                      f", E {runs[-1]['test_energy_mae_meV']:.2f} meV/atom, "
                      f"F {runs[-1]['test_force_rmse']:.4f} eV/Å", flush=True)
                progress()
    for r in runs:  # training loss and errors of every final potential, the same code
        if "train_loss" not in r and Path(r["potential"]).is_file():
            r.update(train_score(r["potential"], work / "train.cfg"))
    for r in runs if args.continue_mlp else ():  # mlp's final point, continued by mtpjax
        if r["program"] == "mlp":
            print(f"L{r['level']} mlp repetition {r['seed']} continued by mtpjax "
                  f"{args.optimizer} (core {args.core})", flush=True)
            c = run_mtpjax(r["level"], r["seed"], work, args, tag=f"from_mlp_s{r['seed']}",
                           init=str(Path(r["potential"]).resolve()))
            c.update(score(c["potential"], work / "test.cfg"))
            c.update(train_score(c["potential"], work / "train.cfg"))
            continued.append({**c, "program": "mlp+mtpjax", "from_mlp_seed": r["seed"],
                              "from_mlp_train_loss": r.get("train_loss")})
    write_result(args, command, started, load_before, data, mlp_info, mtpjax_device, work,
                 runs, warmups, continued, complete=True)
    args.out.with_suffix(".md").write_text(render_md(json.loads(args.out.read_text())))
    plot(json.loads(args.out.read_text()), args.plot)
    print(f"wrote {args.out}, {args.out.with_suffix('.md')} and {args.plot}")
    return 0


def write_result(args, command, started, load_before, data, mlp_info, mtpjax_device, work,
                 runs, warmups, continued, complete: bool) -> None:
    """OUT.json (atomically): after every run with ``complete: false`` (a run stopped by a
    time limit keeps what it measured; ``--render-md OUT.json`` renders it), at the end whole."""
    settings = {k: getattr(args, k) for k in (
        "levels", "seeds", "optimizer", "max_iter", "mlp_max_iter", "time_limit",
        "monitor_every", "memory_size", "lstsq_atoms", "lstsq_configs", "relinearize_every",
        "valid_fraction", "patience", "valid_rtol", "refit_linear", "refit_ridge_grid",
        "core", "programs", "quick", "compile_cache", "mlp_seeds", "continue_mlp",
        "accelerator")}
    done = [r for r in runs if "test_energy_mae_meV" in r]
    doc = {"script": "benchmarks/bench_train.py", "command": command, "started_at": started,
           "finished_at": utc(), "complete": complete, "load_before": load_before,
           "load_after": load(), "versions": versions(), "host": host(), "settings": settings,
           "weights": WEIGHTS, "data": data, "mlp": mlp_info, "mtpjax_device": mtpjax_device,
           "work_dir": str(work),
           "out_json": str(args.out), "summary": summarize(done),
           "time_to_accuracy": time_to_accuracy(done), "warmups": warmups,
           "plot": str(args.plot), "runs": done, "continued_mlp": continued}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, args.out)


if __name__ == "__main__":
    sys.exit(main())
