"""benchmarks/bench_grade_selection.py (issue #16): its verdict on teacher calls at equal test
error, its argument checks, and (slow) a tiny run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_grade_selection.py"


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_grade_selection")


def _row(arm, seed, calls, labels, rss_e, comp_e, rnd=None, every=None):
    errs = {"rss": {"energy_mae_meV_per_atom": rss_e, "force_mae_eV_per_A": 0.15},
            "compression": {"energy_mae_meV_per_atom": comp_e, "force_mae_eV_per_A": 0.18}}
    return {"arm": arm, "seed": seed, "round": rnd, "every_steps": every, "d1_labels": labels,
            "teacher_calls": calls, "fit_iterations": 5, "errors": errs}


def test_verdict_needs_every_error_and_half_the_calls(bench):
    rows = []
    for seed in (0, 1):
        rows.append(_row("uniform", seed, 800, 40, 17.0, 5.0, every=20))
        rows.append(_row("grade_pool", seed, 350, 50, 18.0, 4.0, rnd=1))  # RSS worse
        rows.append(_row("grade_pool", seed, 390, 90, 16.9, 4.9, rnd=2))  # all better, ≤ ½
        rows.append(_row("grade_pool", seed, 450, 120, 16.0, 4.0, rnd=3))  # better, > ½
    v = bench.verdict(bench.summarize(rows))
    assert v["uniform_reference"]["teacher_calls"] == 800
    assert v["grade_pool"]["round"] == 2 and v["grade_pool"]["target_met"]
    assert v["grade_pool"]["calls_ratio"] == pytest.approx(390 / 800)
    # the same arm, but the first round reaching the error costs more than half the calls
    late = [r for r in rows if r["round"] != 2]
    assert not bench.verdict(bench.summarize(late))["grade_pool"]["target_met"]
    # a row measured on fewer seeds than the reference does not count
    few = [r for r in rows if not (r["arm"] == "grade_pool" and r["seed"] == 1)]
    assert bench.verdict(bench.summarize(few))["grade_pool"] is None


def test_random_picks_are_reported_as_the_control(bench):
    """A result whose picks were drawn at random says so beside its verdict (it is the control
    for the grades, not grade-driven selection); a γ-picked one does not."""
    res = json.loads((ROOT / "benchmarks" / "results"
                      / "bench_grade_selection_pool_rss5_s0to5.json").read_text())
    control = "drawn at random (`--grade-pick random`): the control"
    assert control not in bench.render(res)
    res["settings"]["grade_pick"] = "random"
    md = bench.render(res)
    assert control in md and "grades unused: the control" in md
    assert "grading students" not in md
    res["settings"]["grade_level"] = 16
    assert "(grading students: level 16, fitted beside them" in bench.render(res)


@pytest.mark.parametrize("argv", [
    ["--grade-pick", "maxvol"],
    ["--arms", "grade_pool_rss"],                                   # no random cells
    ["--arms", "grade_pool_rss", "--rss-candidates", "9", "--rss-per-round", "6"],  # ≥ round
    ["--pool-dt", "0"],
    ["--pool-dt", "nan"],
    ["--grade-level", "7"],
    ["--grade-level", "-2"],
])
def test_bad_arguments_are_one_line_errors(bench, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert ": error: " in err[-1] and "Traceback" not in "".join(err)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~4 CPU-min, but its student relaxations crawl on a loaded machine
def test_tiny_run_end_to_end(tmp_path):
    """The uniform, grade_pool and grade_pool_rss rows of a tiny run: grade_pool's rounds (the
    sample stage's rounds over a teacher run of its own) pick distinct snapshots,
    grade_pool_rss adds its share of student-relaxed random cells, and the teacher calls are
    the MD's force calls + the labels."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--seeds", "0", "--arms", "grade_pool", "grade_pool_rss",
         "--rss-candidates", "5", "--rss-per-round", "1", "--d0", "6",
         "--max-iter", "3", "--nvt-steps", "10", "--ramp-steps", "30", "--uniform-every", "10",
         "--pool-nvt", "6", "--pool-ramp", "14", "--pool-dt", "2", "--pool-every", "2",
         "--rounds", "2", "--per-round", "3", "--rss-relax", "2", "--comp-nvt", "10",
         "--comp-ramp", "200", "--comp-every", "20",
         "--tag", "tiny", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "bench_grade_selection_tiny.json").read_text())
    rows = {(r["arm"], r["round"]): r for r in doc["rows"]}
    assert rows[("uniform", None)]["teacher_calls"] == 40 + rows[("uniform", None)]["d1_labels"]
    assert rows[("grade_pool", 0)]["d1_labels"] == 0
    for r in (1, 2):
        row = rows[("grade_pool", r)]
        assert row["d1_labels"] == 3 * r and row["teacher_calls"] == 20 + 3 * r
        assert len(row["picked_steps"]) == 3 and row["candidates"] == 10 - 3 * (r - 1)
    assert not set(rows[("grade_pool", 1)]["picked_steps"]) & set(
        rows[("grade_pool", 2)]["picked_steps"])
    for r in (1, 2):  # the experiment arm: 2 snapshots + 1 student-relaxed random cell a round
        row = rows[("grade_pool_rss", r)]
        assert row["d1_labels"] == 3 * r and row["teacher_calls"] == 20 + 3 * r
        assert len(row["picked_steps"]) == 2 and row["cells_selected"] == 1
        assert 1 <= row["cells"] <= 5 and len(row["picked_cell_atoms"]) == 1
    md = (tmp_path / "bench_grade_selection_tiny.md").read_text()
    assert "| grade_pool | 2 | 1 | 6 | 26 |" in md
    png = tmp_path / "bench_grade_selection_tiny.png"  # errors against teacher calls
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_merge_takes_each_seed_from_one_run(bench):
    """--merge: a seed's rows come from the part that completed it, not also from a run that
    was stopped part-way through it; a stopped seed from the part holding most of its rows;
    a seed completed twice is refused."""
    u = _row("uniform", 4, 787, 37, 17.0, 5.0, every=20)
    stopped = {"seeds_completed": [3], "rows": [
        _row("uniform", 3, 787, 37, 17.0, 5.0, every=20), u,
        _row("grade_pool_rss", 4, 240, 0, 20.0, 9.0, rnd=0),
        _row("grade_pool_rss", 1, 240, 0, 20.0, 9.0, rnd=0)]}
    rerun = {"seeds_completed": [4], "rows": [
        u, *(_row("grade_pool_rss", 4, 240 + 30 * k, 30 * k, 18.0, 5.0, rnd=k)
             for k in range(3))]}
    other = {"seeds_completed": [], "rows": [
        _row("uniform", 1, 787, 37, 17.0, 5.0, every=20),
        *(_row("grade_pool_rss", 1, 240 + 30 * k, 30 * k, 18.0, 5.0, rnd=k) for k in range(2))]}
    rows = bench._rows_per_seed(["a", "b", "c"], [stopped, rerun, other])
    by_seed = {s: [r for r in rows if r["seed"] == s] for s in (1, 3, 4)}
    assert by_seed[4] == rerun["rows"]  # the completed rerun, not the stopped part's round 0
    assert by_seed[1] == other["rows"]  # 3 rows against the stopped part's 1
    assert len(by_seed[3]) == 1
    with pytest.raises(bench.MergeError, match="b: seed 4 also completed in a"):
        bench._rows_per_seed(["a", "b"], [rerun, rerun])


def test_merge_errors_are_one_line(bench, tmp_path, capsys):
    """--merge of a file that is not a result: one error line naming it, exit 2."""
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert bench.main(["--merge", str(bad), str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"bench_grade_selection: error: {bad}: cannot read a result")
    assert len(err.splitlines()) == 1
