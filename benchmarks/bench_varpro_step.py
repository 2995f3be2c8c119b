"""CPU cost of one VarPro iteration (`mtpjax.fit.varpro.VarPro.step`) per level, per source tree.

The setting of `benchmarks/bench_train.py`: the 214 mlearn Si training cells, template
``tests/data/mlip_templates/LL.mtp`` (min_dist 1.5 Å, max_dist 5.0 Å, radial_basis_size 8),
weights 1 : 0.1 : 0, seed 0, default `FitConfig` (``jac_atoms`` 512), one single-threaded XLA
process per (tree, level), one device. In each process:

1. the initial exact linear solve (compiles the linear pass), then one ``step`` (compiles the
   rest) — not timed;
2. timed (process CPU and wall): the linear re-solve ``solve_linear`` at the start point (= the
   cost of one LM trial), then one ``step`` from that point, as in the training loop (there the
   previous iteration has just solved the linear part at its accepted point); the number of
   trials it made is counted, and its result (loss, radial coefficients) recorded so that two
   trees can be checked to agree;
3. the "normal equations" share of the step = step − trials × linear re-solve.

``--trees LABEL=DIR ...`` measures the `mtpjax` package found in each DIR (e.g. a
``git archive`` of an earlier commit: ``LABEL=DIR@COMMIT`` records the commit); runs of other
labels already in the result file are kept with ``--keep``. Writes
``benchmarks/results/bench_varpro_step.json`` and ``.md`` (command, versions, load inside)::

    git archive daa8b07 mtpjax | tar -x -C /tmp/vp_base
    .venv/bin/python benchmarks/bench_varpro_step.py --levels 8 12 16 \\
        --trees before=/tmp/vp_base@daa8b07 after=.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def child(level: int) -> dict:
    """Measure in this process (the `mtpjax` package is whatever PYTHONPATH finds first)."""
    import jax
    import numpy as np

    import mtpjax
    from mtpjax.fit.data import load_fit_data
    from mtpjax.fit.trainer import FitConfig, Trainer

    sys.path.append(str(ROOT))  # after the tree under test: only for bench_train's helpers
    from benchmarks.bench_train import WEIGHTS, find_data, template

    jax.config.update("jax_enable_x64", True)
    pot = template(level)
    t0 = time.process_time()
    train, _ = load_fit_data(pot, find_data() / "train.xyz", species=["Si"],
                             energy_weight=WEIGHTS["energy"], force_weight=WEIGHTS["force"])
    cfg = FitConfig(energy_weight=WEIGHTS["energy"], force_weight=WEIGHTS["force"],
                    stress_weight=WEIGHTS["stress"], seed=0, checkpoint_every=0)
    trainer = Trainer(pot, train, None, cfg, mesh=None)
    data_cpu = time.process_time() - t0

    def timed(fn):
        c0, w0 = time.process_time(), time.perf_counter()
        out = jax.block_until_ready(fn())
        return out, time.process_time() - c0, time.perf_counter() - w0

    (params, _), init_cpu, _ = timed(trainer.initial_params)
    vp = trainer._varpro()
    radial = jax.numpy.asarray(params["radial_coeffs"])
    theta = jax.numpy.concatenate([jax.numpy.asarray(params["species_coeffs"]),
                                   jax.numpy.asarray(params["moment_coeffs"])])
    _, value = vp.solve_linear(radial)
    value, lam = float(value), float(cfg.lm_lambda)
    first, compile_cpu, _ = timed(lambda: vp.step(radial, theta, value, lam))

    calls = []
    solve = vp.solve_linear

    def counting(r):
        calls.append(1)
        return solve(r)

    _, lin_cpu, lin_wall = timed(lambda: vp.solve_linear(radial))
    vp.solve_linear = counting
    second, step_cpu, step_wall = timed(lambda: vp.step(radial, theta, value, lam))
    vp.solve_linear = solve
    same = bool(np.array_equal(np.asarray(first[0]), np.asarray(second[0]))
                and first[2] == second[2])
    P = vp.spec.species_count + vp.spec.basis.scalar_count
    return {"level": level, "mtpjax_file": mtpjax.__file__, "radial_coeffs": int(radial.size),
            "linear_coeffs": int(P), "groups": [int(b.nbr_idx.shape[0]) for b in vp.batches],
            "atoms_per_group": [int(b.nbr_idx.shape[1]) for b in vp.batches],
            "data_cpu_s": round(data_cpu, 2), "initial_solve_cpu_s": round(init_cpu, 2),
            "first_step_cpu_s": round(compile_cpu, 2),
            "linear_solve_cpu_s": round(lin_cpu, 3), "linear_solve_wall_s": round(lin_wall, 3),
            "step_cpu_s": round(step_cpu, 3), "step_wall_s": round(step_wall, 3),
            "trials": len(calls),
            "normal_eq_cpu_s": round(step_cpu - len(calls) * lin_cpu, 3),
            "start_loss": value, "step_loss": second[2],
            "step_radial": np.asarray(second[0]).ravel().tolist(),
            "repeatable": same}


def run_child(tree: Path, level: int) -> dict:
    from benchmarks.provenance import load

    env = dict(os.environ, PYTHONPATH=str(tree),
               XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               MTPJAX_COMPILE_CACHE="off")
    before = load()
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(level)],
                         env=env, cwd=tree, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"level {level} in {tree} failed:\n{out.stderr[-3000:]}")
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    rec.update(load_before=before, load_after=load())
    return rec


def render(doc: dict) -> str:
    runs = doc["runs"]
    labels = list(dict.fromkeys(r["label"] for r in runs))
    lines = ["# One VarPro iteration: CPU seconds per level", "",
             "Written by `benchmarks/bench_varpro_step.py` (every line of this file and of "
             "`bench_varpro_step.json`). Setting: the 214 mlearn Si training cells, "
             "template `LL.mtp` (1.5–5.0 Å, radial basis 8), weights 1 : 0.1 : 0, seed 0, "
             "default `FitConfig` (jac_atoms 512), one device, single-threaded XLA. "
             "CPU = process CPU time (robust to the shared machine's load, unlike wall time). "
             "`step` = one `VarPro.step` from the seed-0 start after the linear solve at that "
             "point (as in the training loop); `trial` = one linear re-solve (one per LM "
             "trial); `normal eq.` = step − trials × trial.", ""]
    for inv in doc["invocations"]:
        lines.append(f"- `{inv['command']}`: started {inv['started_utc']}, finished "
                     f"{inv['finished_utc']} on `{inv['host']['hostname']}` "
                     f"({inv['host']['cpu_model']}, {inv['host']['cpus']} CPUs); load "
                     f"(1/5/15 min) {inv['load_before']} before, {inv['load_after']} after; "
                     f"versions: " + ", ".join(f"{k} {v}" for k, v in inv["versions"].items()
                                               if v) + "; trees: "
                     + ", ".join(f"{k} = `{v}`" for k, v in inv["trees"].items()))
    lines += ["", "| level | tree | #radial | #linear | trials | trial CPU (s) | normal eq. CPU "
              "(s) | step CPU (s) | step wall (s) | load before → after | step loss |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["level"], labels.index(r["label"]))):
        lines.append(f"| {r['level']} | {r['label']} | {r['radial_coeffs']} | "
                     f"{r['linear_coeffs']} | {r['trials']} | {r['linear_solve_cpu_s']:.2f} | "
                     f"{r['normal_eq_cpu_s']:.2f} | {r['step_cpu_s']:.2f} | "
                     f"{r['step_wall_s']:.2f} | {r['load_before'][0]:.1f} → "
                     f"{r['load_after'][0]:.1f} | {r['step_loss']:.12g} |")
    if len(labels) > 1:
        base = labels[0]
        lines += ["", f"Ratios to `{base}` (step CPU) and agreement of the step's result "
                  "(max relative difference of the loss and of the radial coefficients):", "",
                  "| level | tree | step CPU / " + base + " | loss rel. diff | radial rel. "
                  "diff |", "|---|---|---|---|---|"]
        for r in sorted(runs, key=lambda r: (r["level"], labels.index(r["label"]))):
            ref = next((b for b in runs if b["label"] == base and b["level"] == r["level"]),
                       None)
            if ref is None or r["label"] == base:
                continue
            dl = abs(r["step_loss"] - ref["step_loss"]) / abs(ref["step_loss"])
            a, b = r["step_radial"], ref["step_radial"]
            scale = max(abs(x) for x in b)
            dr = max(abs(x - y) for x, y in zip(a, b, strict=True)) / scale
            lines.append(f"| {r['level']} | {r['label']} | "
                         f"{r['step_cpu_s'] / ref['step_cpu_s']:.3f} | {dl:.1e} | {dr:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--levels", type=int, nargs="+", default=[8, 12, 16])
    p.add_argument("--trees", nargs="+", default=["current=."],
                   help="LABEL=DIR[@COMMIT]: the mtpjax package under DIR")
    p.add_argument("--keep", action="store_true", help="keep other labels' runs in the file")
    p.add_argument("--out", default=str(RESULTS / "bench_varpro_step"))
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks.provenance import header, load, utc

    inv = header()
    trees = {}
    for item in args.trees:
        label, _, where = item.partition("=")
        path, _, commit = where.partition("@")
        trees[label] = (Path(path).resolve(), commit)
    inv["trees"] = {k: f"{p}" + (f" (commit {c})" if c else " (this checkout)")
                    for k, (p, c) in trees.items()}
    out = Path(args.out)
    doc = {"invocations": [], "runs": []}
    if args.keep and out.with_suffix(".json").exists():
        doc = json.loads(out.with_suffix(".json").read_text())
        doc["runs"] = [r for r in doc["runs"] if r["label"] not in trees]
        used = {r["label"] for r in doc["runs"]}
        doc["invocations"] = [i for i in doc["invocations"] if set(i["trees"]) & used]
    for level in args.levels:
        for label, (path, _) in trees.items():
            rec = run_child(path, level)
            rec["label"] = label
            doc["runs"].append(rec)
            print(f"L{level} {label}: step {rec['step_cpu_s']:.2f} s CPU, {rec['trials']} "
                  f"trials × {rec['linear_solve_cpu_s']:.2f} s", flush=True)
    inv.update(finished_utc=utc(), load_after=load())
    doc["invocations"].append(inv)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(render(doc))


if __name__ == "__main__":
    main()
