"""benchmarks/compare_grade_picks.py: paired differences over the seeds two results share,
the two-standard-error reading, and one error line for inputs that cannot be compared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.bench.scripts import load_script


def _script():
    return load_script("compare_grade_picks")


def _result(path: Path, pick: str, errors: dict[int, tuple[float, float]], **settings) -> Path:
    """A result with one arm's round-5 row per seed: errors[seed] = (RSS E, RSS F); the
    compression errors equal on every seed."""
    rows = [{"seed": s, "arm": "grade_pool_rss", "round": 5,
             "errors": {"rss": {"energy_mae_meV_per_atom": e, "force_mae_eV_per_A": f},
                        "compression": {"energy_mae_meV_per_atom": 5.0,
                                        "force_mae_eV_per_A": 0.18}}}
            for s, (e, f) in errors.items()]
    rows.append({"seed": 0, "arm": "uniform", "round": None, "errors": rows[0]["errors"]})
    path.write_text(json.dumps({"settings": {"level": 8, "grade_pick": pick,
                                             "seeds": sorted(errors), **settings},
                                "rows": rows}))
    return path


def test_paired_differences_and_reading(tmp_path, capsys):
    mod = _script()
    a = _result(tmp_path / "a.json", "gamma",
                {0: (10.0, 0.150), 1: (11.0, 0.151), 2: (12.0, 0.152), 3: (9.0, 0.2)})
    b = _result(tmp_path / "b.json", "random",
                {0: (11.0, 0.150), 1: (12.2, 0.152), 2: (12.9, 0.151), 7: (1.0, 0.1)})
    assert mod.main([str(a), str(b), "--round", "5", "--tag", "t", "--out",
                     str(tmp_path)]) == 0
    res = json.loads((tmp_path / "compare_grade_picks_t.json").read_text())
    c = res["comparison"]
    assert c["seeds"] == [0, 1, 2] and (c["pick_a"], c["pick_b"]) == ("gamma", "random")
    e = c["metrics"]["rss/energy_mae_meV_per_atom"]
    d = np.array([-1.0, -1.2, -0.9])
    assert e["per_seed"] == pytest.approx(dict(zip("012", d, strict=True)))
    assert e["mean_diff"] == pytest.approx(d.mean())
    assert e["se_diff"] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert e["reading"] == "A better"
    f = c["metrics"]["rss/force_mae_eV_per_A"]  # 0, -0.001, +0.001: nothing to see
    assert f["reading"] == "no detectable difference"
    comp = c["metrics"]["compression/energy_mae_meV_per_atom"]
    assert comp["mean_diff"] == 0 and comp["reading"] == "no detectable difference"
    md = (tmp_path / "compare_grade_picks_t.md").read_text()
    assert "| rss E (meV/atom) |" in md and "A better" in md and "Command:" in md
    png = tmp_path / "compare_grade_picks_t.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert res["post_hoc"] == "" and "Not pre-registered" not in md


def test_post_hoc_comparison_says_so(tmp_path):
    mod = _script()
    a = _result(tmp_path / "a.json", "gamma", {0: (10.0, 0.15), 1: (11.0, 0.15)})
    b = _result(tmp_path / "b.json", "random", {0: (11.0, 0.15), 1: (12.0, 0.16)})
    assert mod.main([str(a), str(b), "--round", "5", "--tag", "t", "--out", str(tmp_path),
                     "--post-hoc", "round chosen after the cut-off"]) == 0
    res = json.loads((tmp_path / "compare_grade_picks_t.json").read_text())
    assert res["post_hoc"] == "round chosen after the cut-off"
    md = (tmp_path / "compare_grade_picks_t.md").read_text()
    assert "**Not pre-registered:** round chosen after the cut-off" in md


@pytest.mark.parametrize("change, message", [
    ({"level": 12}, "setting level = 12 differs"),
    ({"grade_level": 16}, "setting grade_level = 16 differs"),
    ("round", "no row of arm 'grade_pool_rss' at round 6"),
    ("seeds", "1 seed(s) in common"),
    ("broken", "cannot read a result"),
])
def test_inputs_that_cannot_be_compared(tmp_path, capsys, change, message):
    mod = _script()
    a = _result(tmp_path / "a.json", "gamma", {0: (10.0, 0.15), 1: (11.0, 0.15)})
    b = _result(tmp_path / "b.json", "random",
                {0: (10.0, 0.15), 3 if change == "seeds" else 1: (11.0, 0.15)},
                **(change if isinstance(change, dict) else {}))
    if change == "broken":
        b.write_text("{not json")
    argv = [str(a), str(b), "--round", "6" if change == "round" else "5", "--tag", "t",
            "--out", str(tmp_path)]
    assert mod.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("compare_grade_picks: error: ") and message in err
    assert len(err.splitlines()) == 1
    assert not list(tmp_path.glob("compare_grade_picks_t.*"))


def test_grade_level_may_differ_when_named(tmp_path):
    """Grades of a level-16 student against an older result without the setting (level 0,
    i.e. the scored level): compared only with --may-differ grade_level, and labelled."""
    mod = _script()
    a = _result(tmp_path / "a.json", "gamma", {0: (10.0, 0.15), 1: (11.0, 0.15)},
                grade_level=16)
    b = _result(tmp_path / "b.json", "random", {0: (10.5, 0.15), 1: (11.2, 0.15)})
    argv = [str(a), str(b), "--round", "5", "--tag", "t", "--out", str(tmp_path)]
    assert mod.main(argv) == 2
    assert mod.main(argv + ["--may-differ", "grade_level"]) == 0
    c = json.loads((tmp_path / "compare_grade_picks_t.json").read_text())["comparison"]
    assert (c["pick_a"], c["pick_b"]) == ("gamma (L16 grades)", "random")
    assert c["may_differ"] == ["grade_level"]
    md = (tmp_path / "compare_grade_picks_t.md").read_text()
    assert "also allowed to differ: grade_level" in md
    # an explicit grade_level 0 equals an older result's missing one
    a0 = _result(tmp_path / "a0.json", "gamma", {0: (10.0, 0.15), 1: (11.0, 0.15)},
                 grade_level=0)
    assert mod.main([str(a0), str(b), "--round", "5", "--tag", "u", "--out",
                     str(tmp_path)]) == 0
