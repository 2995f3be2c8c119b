"""Training benchmark: fit MTPs of levels 8 and 16 to the Si PBE data (mlearn), test vs DFT.

Task (SPEC §3): 214 training cells of ``data/si_mlearn/train.xyz``, MLIP level templates with
min_dist 1.5 Å, max_dist 5.0 Å, radial_basis_size 8, species ['Si'], weights
energy : force : stress = 1 : 0.1 : 0. Reported: wall time of the whole fit (data reading,
neighbour lists, compilation, optimisation, polish) and the test-set (25 cells) energy MAE
(meV/atom) and force RMSE (eV/Å) against the DFT labels. The test set is *monitored* every
``--monitor-every`` iterations (time-to-accuracy curve) but never used to select coefficients.
With ``MLP_BIN`` set, ``mlp train`` + ``mlp calc-errors`` run on the same data in the same run;
otherwise the SPEC §3 reference figures (``mlp``, one core of the 2-core machine) are quoted.

Usage:
    .venv/bin/python benchmarks/bench_train.py --levels 8 16 --optimizer lbfgs \
        [--max-iter 200] [--time-limit 1200] [--out benchmarks/results/bench_train.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtpjax.fit.data import load_dataset  # noqa: E402
from mtpjax.fit.trainer import FitConfig, Trainer  # noqa: E402
from mtpjax.io.mtp_file import read_mtp, write_mtp  # noqa: E402

MLP_REFERENCE = {  # SPEC §3: mlp train --force-weight=0.1 --stress-weight=0 --max-iter=200
    8: {"wall_s": 171.0, "energy_mae_meV": 20.7, "force_rmse": 0.182},
    16: {"wall_s": 2385.0, "energy_mae_meV": 5.39, "force_rmse": 0.112},
}


def find_data() -> Path:
    for cand in (ROOT / "data" / "si_mlearn", ROOT.parent / "shared" / "data" / "si_mlearn"):
        if (cand / "train.xyz").exists():
            return cand
    raise SystemExit("si_mlearn data not found (data/si_mlearn or ../shared/data/si_mlearn)")


def template(level: int):
    pot = read_mtp(ROOT / "tests" / "data" / "mlip_templates" / f"{level:02d}.mtp")
    return dataclasses.replace(pot, min_dist=1.5, max_dist=5.0, radial_basis_size=8)


def run_mtpjax(level: int, data: Path, args) -> dict:
    t0 = time.perf_counter()
    c0 = time.process_time()
    pot = template(level)
    kw = dict(cutoff=5.0, species=["Si"], species_count=1, force_weight=0.1)
    train = load_dataset(data / "train.xyz", **kw)
    test = load_dataset(data / "test.xyz", **kw)
    cfg = FitConfig(optimizer=args.optimizer, max_iter=args.max_iter, force_weight=0.1,
                    stress_weight=0.0, seed=args.seed, eval_every=args.monitor_every,
                    select_on_valid=False, max_time=args.time_limit, checkpoint_every=0,
                    lstsq_atoms=args.lstsq_atoms, lstsq_configs=args.lstsq_configs,
                    memory_size=args.memory_size, relinearize_every=args.relinearize_every,
                    lm_hessian_fraction=args.lm_hessian_fraction)
    curve = []

    def monitor(it, rec):
        if "valid" in rec and it % args.monitor_every == 0:
            curve.append({"iter": it, "time": rec["time"],
                          "test_energy_mae_meV": 1e3 * rec["valid"]["energy_mae"],
                          "test_force_rmse": rec["valid"]["force_rmse"]})
            print(f"  L{level} it {it:4d} {rec['time']:8.1f} s  test E "
                  f"{curve[-1]['test_energy_mae_meV']:.2f} meV/atom  F "
                  f"{curve[-1]['test_force_rmse']:.4f} eV/Å", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix=f"bench_train_L{level}_"))
    trainer = Trainer(pot, train, test, cfg, workdir=workdir)
    result = trainer.run(callback=monitor, resume=False)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    best = result["best_params"]
    test_m = trainer.evaluate(best, trainer.valid_batches)
    train_m = trainer.evaluate(best, trainer.train_batches)
    write_mtp(workdir / "trained.mtp", pot.with_params(best))
    iters = [r["iter"] for r in trainer.history if not r.get("final")]
    return {
        "level": level, "optimizer": args.optimizer, "iterations": max(iters),
        "wall_s": round(wall, 1), "process_cpu_s": round(cpu, 1),
        "test_energy_mae_meV": round(1e3 * test_m["energy_mae"], 3),
        "test_force_rmse": round(test_m["force_rmse"], 4),
        "train_energy_mae_meV": round(1e3 * train_m["energy_mae"], 3),
        "train_force_rmse": round(train_m["force_rmse"], 4),
        "curve": curve, "potential": str(workdir / "trained.mtp"),
    }


def run_mlp(level: int, data: Path, mlp: str, max_iter: int) -> dict:
    """``mlp train`` + ``mlp calc-errors`` on the same data (only with MLP_BIN)."""
    from ase.io import read

    from mtpjax.io.cfg import Configuration, write_cfg

    work = Path(tempfile.mkdtemp(prefix=f"bench_mlp_L{level}_"))
    for name in ("train", "test"):
        frames = read(data / f"{name}.xyz", ":")
        write_cfg(work / f"{name}.cfg", [
            Configuration(positions=a.positions, types=[0] * len(a), cell=a.cell.array,
                          pbc=a.pbc, energy=a.info["REF_energy"], forces=a.arrays["REF_forces"])
            for a in frames])
    from mtpjax.io.mtp_file import format_mtp

    (work / "init.mtp").write_text(format_mtp(template(level)))
    t0 = time.perf_counter()
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([mlp, "train", "init.mtp", "train.cfg", "--force-weight=0.1",
                    "--stress-weight=0", f"--max-iter={max_iter}",
                    "--trained-pot-name=pot.mtp"], cwd=work, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    out = subprocess.run([mlp, "calc-errors", "pot.mtp", "test.cfg"], cwd=work, check=True,
                         capture_output=True, text=True).stdout
    e = re.search(r"Energy per atom:.*?Average absolute difference = ([\d.eE+-]+)", out, re.S)
    f = re.search(r"Forces:.*?RMS absolute difference = ([\d.eE+-]+)", out, re.S)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "energy_mae_meV": round(1e3 * float(e.group(1)), 3) if e else None,
            "force_rmse": float(f.group(1)) if f else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", type=int, nargs="+", default=[8, 16])
    p.add_argument("--optimizer", default="lbfgs", choices=["lbfgs", "bfgs", "lm", "adam"])
    p.add_argument("--max-iter", type=int, default=200)
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds of iterations per level (then polish and report)")
    p.add_argument("--monitor-every", type=int, default=5)
    p.add_argument("--lstsq-atoms", type=int, default=256)
    p.add_argument("--lstsq-configs", type=int, default=None,
                   help="configurations (seeded subsample) of the least-squares passes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-size", type=int, default=200, help="L-BFGS memory")
    p.add_argument("--relinearize-every", type=int, default=0,
                   help="exact linear re-solve every N quasi-Newton iterations (0: never)")
    p.add_argument("--lm-hessian-fraction", type=float, default=1.0,
                   help="share of the data whose Jacobian forms the LM Gauss–Newton matrix")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_train.json"))
    args = p.parse_args(argv)
    data = find_data()
    mlp = os.environ.get("MLP_BIN")
    out = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "load_avg_at_start": os.getloadavg(),
                       "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]},
           "results": []}
    for level in args.levels:
        print(f"level {level}: mtpjax ({args.optimizer})", flush=True)
        res = run_mtpjax(level, data, args)
        res["mlp"] = (run_mlp(level, data, mlp, args.max_iter) if mlp
                      else {"source": "SPEC §3 reference (not run here)",
                            **MLP_REFERENCE.get(level, {})})
        if res["mlp"].get("wall_s"):
            res["time_ratio_mtpjax_over_mlp"] = round(res["wall_s"] / res["mlp"]["wall_s"], 3)
        res["load_avg_at_end"] = os.getloadavg()
        out["results"].append(res)
        print(json.dumps({k: v for k, v in res.items() if k != "curve"}, indent=1), flush=True)
        Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
