"""The shipped demo end to end (slow: ~30 min on 2 idle cores, including the GAP teacher fit)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distill.report import fmt_e, fmt_f

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)  # the suite-wide 900 s limit is for ordinary tests
def test_demo_runs_end_to_end(tmp_path):
    run_dir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "mtpjax.cli", "distill", "run", "distill/configs/demo.toml",
         "--run-dir", str(run_dir), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=3 * 3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = (run_dir / "report" / "report.md").read_text()
    errors = json.loads((run_dir / "evaluate" / "errors.json").read_text())
    for model, row in errors.items():
        for target, e in row.items():
            if model != "teacher":
                assert f"{fmt_e(e['energy_mae_meV_per_atom'])} / " \
                       f"{fmt_f(e['force_mae_eV_per_A'])}" in report, (model, target)
    for level in (4, 8):
        assert f"Level {level}: M''_{level} ≤ M'_{level} on" in report
