"""benchmarks/gpu_check.py --small: every measurement runs and is recorded (CPU, ~1 min)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_check(tmp_path, *args):
    out = tmp_path / "x.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--small", "--out",
         str(out), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(out.read_text())


def test_gpu_check_small(tmp_path):
    report = run_check(tmp_path)

    for key in ("command", "date", "device", "versions", "host", "targets", "environment"):
        assert key in report
    assert report["environment"]["JAX_PLATFORMS"] == "cpu"
    assert report["settings"]["isolated_items"] is True

    # parity with mlp through `calc-efs`'s path, every shared case
    parity = report["parity"]
    assert {e["case"] for e in parity} == {"si_L08", "species2_L16"}  # --small: two cases
    for e in parity:
        assert e["within_tolerance"], e
        assert e["configurations"] == 34
        assert 0 <= e["max_abs_deviation"]["forces_eV_A"] <= 2e-6
    assert report["targets"]["parity"]["met"] is True
    assert report["device"]["count"] >= 1 and report["device"]["kind"]
    assert report["versions"]["jax"] and report["versions"]["python"]
    assert len(report["host"]["load_before"]) == 3 and report["host"]["cpu_count"] >= 1
    assert "--small" in report["command"]

    entries = report["energy_forces"] + report["md"] + [report["fit"]]
    assert not [e for e in entries if "error" in e or "iteration_error" in e], entries

    ef = [e for e in report["energy_forces"] if "atom_steps_per_s" in e]
    assert {e["dtype"] for e in ef} == {"float32", "float64"}
    assert {e["atoms"] for e in ef} == {1000, 4096}
    for e in ef:
        assert e["atom_steps_per_s"] > 0 and e["step_s_median"] > 0 and e["calls"] >= 5
        assert e["compile_s"] >= 0 and e["neighbor_list"]["capacity"] > 0

    md = [e for e in report["md"] if "steps_per_s" in e]
    assert md and md[0]["dtype"] == "float32"
    assert md[0]["timed_steps"] > 0 and md[0]["steps_per_s"] > 0
    assert md[0]["atom_steps_per_s"] > 0 and md[0]["rebuilds_timed"] >= 0
    assert md[0]["atoms"] > 1000

    fit = report["fit"]
    assert fit["loss_grad_s_median"] > 0 and fit["iteration_s_median"] > 0
    assert fit["iteration_compiles"] in (1, None)  # no recompilation after the first step

    # targets are computed, not claimed: a level-8 CPU run meets none
    t = report["targets"]
    assert t["energy_forces"]["met"] is False and t["md"]["met"] is False
    assert t["energy_forces"]["threshold_atom_steps_per_s"] == 2e7
    assert t["md"]["threshold_steps_per_s"] == 20.0


def test_gpu_check_item_over_its_limit_is_killed_and_recorded(tmp_path):
    """An item that overruns (e.g. a pathological compile) is killed; the next one still runs."""
    report = run_check(tmp_path, "--skip", "parity", "md32", "fit", "--ef-sizes", "1000",
                       "--item-timeout", "0.5")
    ef = report["energy_forces"]
    assert [e["dtype"] for e in ef] == ["float64", "float32"]
    for e in ef:
        assert "killed after the item's 0.5 s wall-time limit" in e["error"], e
    assert report["targets"]["parity"]["met"] is False  # skipped is not met
