"""Labelling throughput of the demo GAP teacher with 1 and 2 local workers.

    .venv/bin/python scripts/fit_teacher_gap.py            # once: the demo teacher
    .venv/bin/python benchmarks/bench_label.py             # -> benchmarks/results/bench_label.*

Labels the 239 Si cells of data/si_mlearn (train + test; energy, forces, stress) into a fresh
store for each worker count and reports labels/s, atom-labels/s, the scaling efficiency
rate(N) / (N · rate(1)) and the workers' CPU time (atom-labels per worker CPU-second stays
meaningful on a busy machine, where wall-clock rates do not). Times include spawning the
workers, building the GAP in each and writing every label to SQLite; the best of `--repeats`
runs is kept and the machine's load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import header, load  # noqa: E402
from distill.engine import label  # noqa: E402
from distill.inputs import read_structures  # noqa: E402
from distill.teachers import TeacherSpec, teacher_identity  # noqa: E402


def bench(teacher: TeacherSpec, structures, workers: int, chunk_size: int) -> dict:
    """One labelling run into a fresh store; returns the timing row."""
    with tempfile.TemporaryDirectory() as tmp:
        cpu0 = _cpu_seconds()
        start = time.perf_counter()
        summary = label(
            structures,
            teacher,
            Path(tmp) / "bench.db",
            workers=workers,
            chunk_size=chunk_size,
            progress=False,
        )
        seconds = time.perf_counter() - start
        cpu = {k: v - cpu0[k] for k, v in _cpu_seconds().items()}
    assert summary.n_failed == 0 and summary.n_labelled == len(structures)
    return {
        "workers": workers,
        "seconds": round(seconds, 2),
        "labels_per_s": round(summary.n_labelled / seconds, 3),
        "atom_labels_per_s": round(summary.n_atoms / seconds, 1),
        "worker_cpu_seconds": round(cpu["workers"], 2),
        "parent_cpu_seconds": round(cpu["parent"], 2),
        "atom_labels_per_worker_cpu_s": round(summary.n_atoms / cpu["workers"], 1),
    }


def _cpu_seconds() -> dict:
    """CPU seconds (user + system) of this process and of its finished (joined) children."""
    own, children = (
        resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return {"parent": own.ru_utime + own.ru_stime, "workers": children.ru_utime + children.ru_stime}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "runs/teacher_gap/gap.xml")
    p.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=[ROOT / "data/si_mlearn/train.xyz", ROOT / "data/si_mlearn/test.xyz"],
    )
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--chunk-size", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="label only the first N cells")
    p.add_argument("--repeats", type=int, default=2, help="runs per worker count; best kept")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bench_label")
    args = p.parse_args(argv)
    if not args.model.is_file():
        p.error(f"{args.model} not found: run scripts/fit_teacher_gap.py first")

    teacher = TeacherSpec("gap", str(args.model))
    structures = read_structures(args.data)[: args.limit]
    n_atoms = sum(len(a) for a in structures)
    rows = []
    provenance = header()
    load_before = provenance["load_before"]
    for workers in args.workers:
        runs = [bench(teacher, structures, workers, args.chunk_size) for _ in range(args.repeats)]
        rows.append(
            {**min(runs, key=lambda r: r["seconds"]), "all_seconds": [r["seconds"] for r in runs]}
        )
        print(
            f"{workers} worker(s): {rows[-1]['labels_per_s']:.2f} labels/s, "
            f"{rows[-1]['atom_labels_per_s']:.0f} atom-labels/s ({rows[-1]['seconds']} s)"
        )
    base = rows[0]["atom_labels_per_s"] / rows[0]["workers"]
    cpu_base = rows[0]["atom_labels_per_worker_cpu_s"]
    for row in rows:
        row["scaling_efficiency"] = round(row["atom_labels_per_s"] / (row["workers"] * base), 3)
        row["cpu_efficiency"] = round(row["atom_labels_per_worker_cpu_s"] / cpu_base, 3)
    identity = teacher_identity(teacher)
    result = {
        **provenance,
        "load_after": load(),
        "teacher": {
            "model": os.path.relpath(args.model, ROOT),
            "teacher_id": identity["teacher_id"],
            "quippy": identity["version"],
        },
        "structures": len(structures),
        "atoms": n_atoms,
        "chunk_size": args.chunk_size,
        "labels": "energy, forces, stress (all cells periodic)",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = "\n".join(
        f"| {r['workers']} | {r['seconds']} | {r['labels_per_s']} | {r['atom_labels_per_s']} "
        f"| {r['scaling_efficiency']} | {r['atom_labels_per_worker_cpu_s']} "
        f"| {r['cpu_efficiency']} |"
        for r in rows
    )
    busy = load_before[0] > (os.cpu_count() or 1)
    note = (
        "\n**The machine was oversubscribed** (load average above the core count): wall-clock "
        "rates and their scaling measure the other jobs as much as the labelling; the CPU-time "
        "columns do not.\n"
        if busy
        else ""
    )
    args.out.with_suffix(".md").write_text(
        f"# Labelling throughput, demo GAP ({result['teacher']['model']})\n\n"
        f"`{result['command']}` — {result['started_utc']}, {result['host']['cpu_model']}, "
        f"{result['host']['cpus']} cores (load average before "
        f"{load_before[0]:.2f}, after {result['load_after'][0]:.2f}; versions "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items())
        + f"); {len(structures)} Si cells, {n_atoms} atoms, "
        f"energy + forces + stress, chunk size {args.chunk_size}, best of {args.repeats}; times "
        "include worker start-up and SQLite writes.\n\n"
        "| workers | seconds | labels/s | atom-labels/s | scaling efficiency "
        "| atom-labels per worker CPU-s | CPU efficiency |\n|---|---|---|---|---|---|---|\n"
        + table
        + "\n"
        + note
    )
    print(f"wrote {args.out.with_suffix('.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
