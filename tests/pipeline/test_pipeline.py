"""The pipeline end to end on a tiny config (Stillinger–Weber teacher, level 2).

One run is killed (SIGKILL) after its first fit is stamped and run again: the rerun must skip the
finished stages and the finished fit, complete every stage, and write a report whose numbers are
those in the stage outputs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.report import ALL_TARGETS, _fit_iterations, fmt_cost, fmt_e, fmt_f
from tests.pipeline.checks import check_comparison_counts, check_cost_is_md_throughput

ROOT = Path(__file__).resolve().parents[2]
TINY = Path(__file__).with_name("tiny.toml")


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "progress.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _cmd(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "mtpjax.cli", "distill", "run", str(TINY), "--run-dir",
            str(run_dir), "--no-progress"]


def _env(tmp: Path) -> dict:
    # a shared persistent compilation cache makes the rerun cheaper (not needed for correctness)
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp / "jax_cache"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "PYTHONPATH": str(ROOT)}


def test_pipeline_killed_resumed_and_reported(tmp_path):
    """One test (not a shared fixture), so that pytest-xdist runs the pipeline once."""
    resumed = resumed_run(tmp_path)
    check_only_unfinished_redone(resumed)
    check_report_numbers_are_stage_outputs(resumed)
    check_published(resumed[0], tmp_path / "published")


def resumed_run(tmp: Path):
    """Run, SIGKILL during the fits stage (after the first fit is stamped), rerun to the end."""
    run_dir = tmp / "run"
    log = open(tmp / "first.log", "w")  # a file, not a pipe: a full pipe would block the run
    proc = subprocess.Popen(_cmd(run_dir), cwd=ROOT, env=_env(tmp), stdout=log, stderr=log)
    deadline = time.time() + 600
    killed = False
    while time.time() < deadline and proc.poll() is None:
        fits = [e for e in _events(run_dir) if e["stage"] == "fit" and e["status"] == "done"]
        if fits:
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.2)
    proc.wait()
    log.close()
    assert killed, f"the run ended before a fit finished:\n{(tmp / 'first.log').read_text()}"
    n_first = len(_events(run_dir))
    second = subprocess.run(_cmd(run_dir), cwd=ROOT, env=_env(tmp), capture_output=True,
                            text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-4000:]
    return run_dir, _events(run_dir)[:n_first], _events(run_dir)[n_first:]


def check_only_unfinished_redone(resumed_run):
    run_dir, first, second = resumed_run
    done_first = {e["stage"] for e in first if e.get("status") == "done"}
    assert {"teacher", "sample", "labels"} <= done_first
    assert "fits" not in done_first
    status = {e["stage"]: e["status"] for e in second if "name" not in e}
    for stage in ("teacher", "sample", "labels"):
        assert status[stage] == "skipped", (stage, second)
    killed_fit = next(e["name"] for e in first if e["stage"] == "fit" and e["status"] == "done")
    fit_events = {(e["name"], e["status"]) for e in second if e["stage"] == "fit"}
    assert (killed_fit, "skipped") in fit_events
    assert (killed_fit, "started") not in fit_events
    for stage in ("fits", "evaluate", "md", "analysis", "report"):
        assert status[stage] == "done", (stage, second)
    # the test sets run in a worker process beside sample and stamp themselves when they end:
    # done in the killed run (then skipped now) or redone now
    assert status["tests"] == "skipped" or status["tests"] == "done", second
    if status["tests"] == "skipped":
        assert any(e["stage"] == "tests" and e["status"] == "done" for e in first)
    # a third run has nothing to do
    events_before = len(_events(run_dir))
    third = subprocess.run(_cmd(run_dir), cwd=ROOT, env=_env(run_dir.parent),
                           capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]
    last = [e for e in _events(run_dir)[events_before:] if "name" not in e]
    assert {e["status"] for e in last} == {"skipped"}


def check_report_numbers_are_stage_outputs(resumed_run):
    run_dir = resumed_run[0]
    report = (run_dir / "report" / "report.md").read_text()
    errors = json.loads((run_dir / "evaluate" / "errors.json").read_text())
    cost = json.loads((run_dir / "evaluate" / "cost.json").read_text())
    section = report.split("## Errors and cost")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines()
            if line.startswith("| M")}
    models = [m for m in errors if m != "teacher"]
    assert sorted(models) == sorted(["M'_2", "M''_2"])
    for m in models:
        cells = [c.strip() for c in rows[m].split("|")[2:-1]]
        for target, cell in zip(ALL_TARGETS, cells, strict=False):
            e = errors[m][target]
            expected = f"{fmt_e(e['energy_mae_meV_per_atom'])} / {fmt_f(e['force_mae_eV_per_A'])}"
            assert cell == expected, (m, target, cell)
        assert cells[-2] == fmt_cost(cost[m]["atom_steps_per_s"])
        assert cells[-1] == fmt_cost(cost[m]["speedup_vs_teacher"])
    check_cost_is_md_throughput(report, cost, models)
    # the finding is stated per level, from the same numbers
    check_comparison_counts(report, errors, [2])
    # fits and MD tables come from the stamps
    fits = json.loads((run_dir / "fits" / "stamp.json").read_text())["summary"]
    for name, f in fits.items():
        if not isinstance(f, dict):  # cpu_seconds, load_average
            continue
        # the iterations actually run, why the fit stopped, the iteration kept
        assert 1 <= f["best_iter"] <= f["iterations"] <= f["max_iter"]
        assert f["stop_reason"] in ("converged", "patience", "max_iter"), f
        assert f["valid_structures"] >= 1
        assert re.search(rf"\| {name} \| {f['level']} \| {f['train_atoms']} \| "
                         rf"{re.escape(_fit_iterations(f))} \|", report)
    runs = json.loads((run_dir / "md" / "stamp.json").read_text())["summary"]["runs"]
    assert runs, "no MD runs"
    for name, r in runs.items():
        assert f"| {name} | {r['status']} |" in report
    assert runs["compress/teacher"]["status"] == "ok"
    assert (run_dir / "report" / "fig3_error_vs_cost.png").stat().st_size > 1000
    check_physical_validation(run_dir, report)
    # every test set is labelled by the teacher and non-empty
    tests = json.loads((run_dir / "tests" / "stamp.json").read_text())["summary"]["sets"]
    assert all(v["structures"] > 0 for v in tests.values()), tests


def check_physical_validation(run_dir: Path, report: str) -> None:
    """The melt-quench's Table I beside the paper's, and the SOAP similarity to
    pressure-adjusted sh per pressure window, as the analysis stage wrote them."""
    from distill.paper_values import TABLE_I
    from md.analysis.summary import format_table

    analysis = json.loads((run_dir / "analysis" / "stamp.json").read_text())["summary"]
    quench, compress = analysis["quench"], analysis["compress"]
    assert quench["quench"] and not compress["quench"]
    assert not quench["similarity"]  # Fig. 4's measure is for the compression only
    assert set(quench["table"]) == {"teacher", "M'_2", "M''_2"}
    assert quench["cooling_rate_K_per_s"] == pytest.approx(2000 / 20e-15)
    for label, row in quench["table"].items():
        assert row["final_frame_relaxed_steps"] == 10, label
        assert row["delta_E_eV_per_atom"] is not None, label
    check_replicas(run_dir, quench, report)
    assert format_table(quench["table"], markdown=True) in report
    assert format_table(TABLE_I, markdown=True) in report  # the paper's values beside ours
    teacher = quench["table"]["teacher"]
    n5 = abs(quench["table"]["M''_2"]["N5"] - teacher["N5"])
    assert "| M''_2 − teacher (ours) | " in report and f" {n5:.2f} |" in report
    check_table_i_verdict(quench["table"], report)
    sims = compress["similarity"]["sh"]
    assert set(sims) == {"teacher", "M'_2", "M''_2"}
    assert sum(w["n"] for w in sims["teacher"]) > 0
    assert "Mean SOAP similarity to pressure-adjusted sh Si" in report
    for label, windows in sims.items():
        cells = " | ".join("-" if w["mean"] is None else f"{w['mean']:.3f} ({w['n']})"
                           for w in windows)
        assert f"| {label} | {cells} |" in report, label


def check_replicas(run_dir: Path, quench: dict, report: str) -> None:
    """``replicas = 2``: two runs per model with seeds 0 and 1, each analysed; the table is
    their mean, the report shows their spread and whether each verdict is resolved."""
    from md.analysis.summary import format_table

    runs = json.loads((run_dir / "md" / "stamp.json").read_text())["summary"]["runs"]
    for label, row in quench["table"].items():
        assert row["n_replicas"] == 2, label
        assert quench["seeds"][label] == [0, 1], label
        folder = label.replace("'", "p")
        pair = [json.loads((run_dir / "analysis" / "quench" / folder / f"r{r}" /
                            "analysis.json").read_text())["metrics"] for r in (0, 1)]
        for key in ("N5", "theta_mean_deg", "delta_E_eV_per_atom"):
            assert row[key] == pytest.approx((pair[0][key] + pair[1][key]) / 2), (label, key)
            spread = abs(pair[0][key] - pair[1][key]) / 2 ** 0.5  # ddof 1 of two values
            assert quench["spread"][label][key] == pytest.approx(spread, abs=1e-12)
        assert {runs[f"quench/{label}/r{r}"]["seed"] for r in (0, 1)} == {0, 1}
    assert format_table(quench["spread"], markdown=True) in report
    figure = run_dir / "analysis" / "quench" / "replicas.png"  # every run's metrics, plotted
    assert figure.stat().st_size > 1000 and "](../analysis/quench/replicas.png)" in report
    assert "Sample standard deviation across the runs" in report
    assert re.search(r"\| M''_2 \| [0-9.]+ ± [0-9.]+ \((un)?resolved\) \|", report)


def check_table_i_verdict(table: dict, report: str) -> None:
    """The report's "within the paper's spread" rows, recomputed from the analysis table."""
    from distill.paper_values import TABLE_I_TOLERANCE

    teacher = table["teacher"]
    for label in ("M'_2", "M''_2"):
        ok = [abs(table[label][k] - teacher[k]) <= tol + 1e-9
              for k, tol in TABLE_I_TOLERANCE.items()]
        cells = " | ".join("yes" if x else "no" for x in ok)
        assert f"| {label} | {cells} | {'yes' if all(ok) else 'no'} |" in report, label


def check_published(run_dir: Path, out: Path) -> None:
    """benchmarks/publish_report.py: the report under its provenance block, every figure it
    links copied next to it, the run's timing record beside it."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "publish_report.py"),
                           str(run_dir), str(out), "--title", "Tiny run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (out / "report.md").read_text()
    assert text.startswith("# Tiny run\n\nPublished by `python") and "load [" in text
    original = (run_dir / "report" / "report.md").read_text()
    assert original.split("## Config")[1] in text  # the run's report, not rewritten
    links = re.findall(r"\]\(([^)]+\.png)\)", text)
    assert any(name.startswith("analysis_") for name in links), links
    for name in links:
        assert (out / name).stat().st_size > 1000, name
    timing = json.loads((out / "timing.json").read_text())
    assert timing == json.loads((run_dir / "report" / "timing.json").read_text())
    assert json.loads((out / "provenance.json").read_text())["run_timing"] == timing
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "publish_report.py"),
                            str(run_dir), str(out), "--rerender"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    rerendered = (out / "report.md").read_text()
    assert "rendered again now from its stage outputs" in rerendered
    assert rerendered.split("## Teacher")[1] == text.split("## Teacher")[1]  # same code: same
