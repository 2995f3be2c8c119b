"""Accuracy figures quoted in the README and docs: the shipped MTP and the demo GAP teacher.

    .venv/bin/python benchmarks/bench_accuracy.py                  # shipped MTP (+ mlp if MLP_BIN)
    .venv/bin/python benchmarks/bench_accuracy.py --teacher        # also fit the GAP teachers
    .venv/bin/python benchmarks/bench_accuracy.py --teacher --out /tmp/acc   # elsewhere

1. The shipped level-16 MTP (``data/potentials/si_L16_mlp.mtp``) on the 25 DFT test cells of
   ``data/si_mlearn/test.xyz`` through `mtpjax calc-errors`' code (energy MAE per atom in meV/atom,
   force RMSE per component in eV/Å, mlp's conventions); with ``MLP_BIN`` set, ``mlp
   calc-errors`` on the same ``.cfg`` in the same run: both programs' numbers side by side.
2. ``--teacher``: the demo GAP teacher fitted from scratch (``distill.gap_fit.fit_gap`` into a
   scratch folder, so the fit time is measured, never taken from a cache) with the quick (200 SOAP
   sparse points, the demo's) and the default (800) settings on one OpenMP thread, and its errors
   on the same test cells.

Writes ``OUT.json`` (command, versions, host, load before and after, every number) and ``OUT.md``
(the tables); default OUT is ``benchmarks/results/accuracy``. Nothing in either file is typed by
hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import header, load, utc  # noqa: E402

POTENTIAL = ROOT / "data/potentials/si_L16_mlp.mtp"
TEST = ROOT / "data/si_mlearn/test.xyz"
TRAIN = ROOT / "data/si_mlearn/train.xyz"
TEACHER_SPARSE = {"quick (demo)": 200, "default": 800}


def test_cfg(xyz: Path, out: Path) -> Path:
    """The labelled cells of `xyz` as an mlp ``.cfg`` (type 0 = Si, energies and forces)."""
    from ase.io import read

    from mtpjax.io.cfg import Configuration, write_cfg

    write_cfg(out, [Configuration(positions=a.positions, types=[0] * len(a), cell=a.cell.array,
                                  pbc=a.pbc, energy=a.info["REF_energy"],
                                  forces=a.arrays["REF_forces"])
                    for a in read(xyz, ":")])
    return out


def mtpjax_errors(potential: Path, cfg: Path) -> dict:
    """Errors of `potential` on `cfg` by mtpjax calc-errors' code, and the wall time it took."""
    from mtpjax.calculator import MTPEvaluator
    from mtpjax.commands.evaluate_cfg import predict
    from mtpjax.errors_report import error_report
    from mtpjax.io.cfg import read_cfg

    start = time.perf_counter()
    reference = read_cfg(cfg)
    report = error_report(predict(MTPEvaluator(str(potential)), reference, progress=False),
                          reference)
    return {"program": "mtpjax calc-errors",
            "energy_mae_meV_per_atom": 1e3 * report["energy_per_atom"]["mae"],
            "energy_rmse_meV_per_atom": 1e3 * report["energy_per_atom"]["rmse"],
            "force_rmse_eV_per_A": report["forces"]["rmse"],
            "force_mae_eV_per_A": report["forces"]["mae"],
            "wall_s_including_compile": time.perf_counter() - start}


def mlp_errors(mlp_bin: str, potential: Path, cfg: Path) -> dict:
    """``mlp calc-errors`` on the same files; its printed per-atom energy and force lines parsed."""
    proc = subprocess.run([mlp_bin, "calc-errors", str(potential), str(cfg)],
                          capture_output=True, text=True, check=True)
    text = proc.stdout

    def block(title: str) -> str:
        m = re.search(re.escape(title) + r"(.*?)(?:\n\S|\Z)", text, re.S)
        if m is None:
            raise RuntimeError(f"mlp calc-errors printed no '{title}' block:\n{text}")
        return m.group(1)

    def value(section: str, name: str) -> float:
        m = re.search(r"\s+".join(name.split()) + r"\s*=\s*([-0-9.eE+]+)", section)
        if m is None:
            raise RuntimeError(f"no '{name}' in mlp's block:\n{section}")
        return float(m.group(1))

    per_atom = block("Energy per atom:")
    forces = block("Forces:")
    digest = hashlib.sha256(Path(mlp_bin).read_bytes()).hexdigest()
    return {"program": "mlp calc-errors", "mlp_sha256": digest,
            "energy_mae_meV_per_atom": 1e3 * value(per_atom, "Average absolute difference"),
            "energy_rmse_meV_per_atom": 1e3 * value(per_atom, "RMS absolute difference"),
            "force_rmse_eV_per_A": value(forces, "RMS absolute difference"),
            "force_mae_eV_per_A": value(forces, "Average absolute difference")}


def teacher_fits(threads: int) -> list[dict]:
    """Fit the GAP teacher from scratch with each setting of TEACHER_SPARSE; time and errors."""
    from distill.gap_fit import MODEL_NAME, GapSettings, accuracy, fit_gap

    rows = []
    for name, sparse in TEACHER_SPARSE.items():
        settings = dataclasses.replace(GapSettings(), soap_sparse=sparse)
        with tempfile.TemporaryDirectory(prefix="bench_teacher_") as tmp:
            before = load()
            r0 = os.times()
            start = time.perf_counter()
            stamp = fit_gap(TRAIN, Path(tmp) / "gap", settings, threads=threads, force=True)
            wall = time.perf_counter() - start
            r1 = os.times()
            acc = accuracy(Path(tmp) / "gap" / MODEL_NAME, TEST)
        rows.append({"fit": name, "soap_sparse": sparse, "omp_threads": threads,
                     "fit_wall_s": wall,
                     "fit_cpu_s_children": (r1.children_user + r1.children_system)
                     - (r0.children_user + r0.children_system),
                     "fit_seconds_reported": stamp.get("fit_seconds"),
                     "load_before": before, "load_after": load(), **acc})
        print(f"teacher {name}: {wall:.0f} s, {acc['energy_mae_mev_per_atom']:.2f} meV/atom, "
              f"{acc['force_rmse_ev_per_a']:.3f} eV/Å", flush=True)
    return rows


def markdown(result: dict) -> str:
    prov = result["provenance"]
    lines = [f"# Accuracy of the shipped MTP and the demo teacher — {prov['started_utc']}", "",
             f"Command: `{prov['command']}`" + (f" (MLP_BIN={result['mlp_bin']})"
                                                 if result.get("mlp_bin") else ""), "",
             f"Versions: {json.dumps(prov['versions'])}", "",
             f"Machine: {prov['host']['cpu_model']}, {prov['host']['cpus']} cores (shared); load "
             f"average before {prov['load_before']}, after {result['load_after']}.", "",
             f"## Shipped MTP `{result['potential']}` on the {result['test_cells']} DFT test "
             f"cells ({result['test_atoms']} atoms)", "",
             "| program | energy MAE (meV/atom) | energy RMSE (meV/atom) | force RMSE (eV/Å) "
             "| force MAE (eV/Å) |", "|---|---|---|---|---|"]
    for row in result["shipped"]:
        lines.append(f"| {row['program']} | {row['energy_mae_meV_per_atom']:.2f} | "
                     f"{row['energy_rmse_meV_per_atom']:.2f} | {row['force_rmse_eV_per_A']:.4f} | "
                     f"{row['force_mae_eV_per_A']:.4f} |")
    if not result.get("mlp_bin"):
        lines += ["", "`mlp` not run (MLP_BIN not set)."]
    if result.get("teacher"):
        lines += ["", "## Demo GAP teacher fitted from scratch (gap_fit, SPEC §1 settings)", "",
                  "| fit | SOAP sparse | OMP threads | fit wall s | gap_fit CPU s | load before "
                  "| energy MAE (meV/atom) | force RMSE (eV/Å) |",
                  "|---|---|---|---|---|---|---|---|"]
        for t in result["teacher"]:
            lines.append(f"| {t['fit']} | {t['soap_sparse']} | {t['omp_threads']} | "
                         f"{t['fit_wall_s']:.0f} | {t['fit_cpu_s_children']:.0f} | "
                         f"{t['load_before']} | {t['energy_mae_mev_per_atom']:.2f} | "
                         f"{t['force_rmse_ev_per_a']:.3f} |")
        lines += ["", "Wall time includes waiting for a core on a shared machine; gap_fit CPU s "
                  "is the steadier number."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--potential", type=Path, default=POTENTIAL)
    p.add_argument("--teacher", action="store_true", help="also fit and score the GAP teachers")
    p.add_argument("--threads", type=int, default=1, help="OMP threads for gap_fit")
    p.add_argument("--mlp-bin", default=os.environ.get("MLP_BIN"))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/accuracy")
    args = p.parse_args(argv)

    result = {"provenance": header(), "mlp_bin": args.mlp_bin,
              "potential": str(args.potential.relative_to(ROOT)
                               if args.potential.is_relative_to(ROOT) else args.potential)}
    with tempfile.TemporaryDirectory(prefix="bench_accuracy_") as tmp:
        cfg = test_cfg(TEST, Path(tmp) / "test.cfg")
        from mtpjax.io.cfg import read_cfg

        cells = read_cfg(cfg)
        result["test_cells"] = len(cells)
        result["test_atoms"] = sum(len(c) for c in cells)
        result["shipped"] = [mtpjax_errors(args.potential, cfg)]
        if args.mlp_bin:
            result["shipped"].append(mlp_errors(args.mlp_bin, args.potential, cfg))
    for row in result["shipped"]:
        print(f"{row['program']}: {row['energy_mae_meV_per_atom']:.2f} meV/atom, "
              f"{row['force_rmse_eV_per_A']:.4f} eV/Å", flush=True)
    if args.teacher:
        result["teacher"] = teacher_fits(args.threads)
    result["load_after"] = load()
    result["finished_utc"] = utc()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {args.out.with_suffix('.json')} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
