"""The shipped demo end to end (slow: ~30 min on 2 idle cores, including the GAP teacher fit)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from distill.report import fmt_duration, fmt_e, fmt_f
from tests.pipeline.checks import check_comparison_counts, check_cost_is_md_throughput

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "distill" / "configs" / "demo.toml"


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)  # the suite-wide 900 s limit is for ordinary tests
def test_demo_runs_end_to_end(tmp_path):
    run_dir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "mtpjax.cli", "distill", "run", "distill/configs/demo.toml",
         "--run-dir", str(run_dir), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=3 * 3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    check_demo_run(run_dir, tomllib.loads(DEMO.read_text()))


def check_demo_run(run_dir: Path, config: dict) -> None:
    """The finished demo run in ``run_dir`` (made from ``config``, the parsed demo.toml): the
    report's numbers are evaluate's, the M''_L ≤ M'_L counts of every fitted level, the cost
    from MD throughput at ≥ 1000 atoms, Table I of the melt-quench at ``[md] level``, the SOAP
    similarity along the compression, and the timing of a fresh run."""
    report = (run_dir / "report" / "report.md").read_text()
    errors = json.loads((run_dir / "evaluate" / "errors.json").read_text())
    for model, row in errors.items():
        for target, e in row.items():
            if model != "teacher":
                assert f"{fmt_e(e['energy_mae_meV_per_atom'])} / " \
                       f"{fmt_f(e['force_mae_eV_per_A'])}" in report, (model, target)
    check_comparison_counts(report, errors, list(config["fit"]["levels"]))
    cost = json.loads((run_dir / "evaluate" / "cost.json").read_text())
    assert cost["n_atoms"] >= 1000  # the paper's cost measure on a 1000-atom cell
    check_cost_is_md_throughput(report, cost, [m for m in errors if m != "teacher"])
    analysis = json.loads((run_dir / "analysis" / "stamp.json").read_text())["summary"]
    runs = json.loads((run_dir / "md" / "stamp.json").read_text())["summary"]["runs"]
    table = analysis["melt_quench"]["table"]
    assert "teacher" in table
    level = config["md"]["level"]
    replicas = config["md"]["protocol"]["melt_quench"].get("replicas", 1)
    for model in (f"M'_{level}", f"M''_{level}", "teacher"):  # in Table I, or every run failed
        own = [r for name, r in runs.items() if name.startswith(f"melt_quench/{model}")
               and r["model"] == model]
        assert len(own) == replicas, (model, len(own))
        ok = sum(r["status"] == "ok" for r in own)
        if ok:  # the row is the mean over the successful runs
            assert table[model].get("n_replicas", 1) == ok, model
        else:
            assert model not in table and {r["status"] for r in own} == {"failed"}, model
    assert "sh" in analysis["compress"]["similarity"]
    timing = json.loads((run_dir / "report" / "timing.json").read_text())
    assert {v["status"] for v in timing["stages"].values()} == {"ran"}  # a fresh run directory
    # the test sets run in a worker process beside the sampling: their wall time overlaps
    assert timing["stages"]["tests"]["background"]
    assert timing["total_wall_s"] >= sum(v["wall_s"] for v in timing["stages"].values()
                                         if not v.get("background")) - 1
    assert f"total wall time {fmt_duration(timing['total_wall_s'])}" in report
