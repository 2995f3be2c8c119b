"""bench_accuracy.py reads `mlp calc-errors`' report correctly (a stand-in binary prints mlp 2.1.2's
exact layout) and renders both programs' rows."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.bench.scripts import load_script

MLP_OUTPUT = """MTPR from pot.mtp, Database: test.cfg

\t\t* * * TRAIN ERRORS * * *

_________________Errors report_________________
Energy:
\tErrors checked for 25 configurations
\tMaximal absolute difference = 1.17759
\tAverage absolute difference = 0.40627
\tRMS     absolute difference = 0.479396

Energy per atom:
\tErrors checked for 25 configurations
\tMaximal absolute difference = 0.0327107
\tAverage absolute difference = 0.00774635
\tRMS     absolute difference = 0.0110216

Forces:
\tErrors checked for 1525 atoms
\tMaximal absolute difference = 0.747625
\tAverage absolute difference = 0.0522012
\tRMS     absolute difference = 0.112166
\tMax(ForceDiff) / Max(Force) = 0.0773814
\tRMS(ForceDiff) / RMS(Force) = 0.127332
_______________________________________________
"""


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_accuracy")


def fake_mlp(tmp_path: Path, text: str) -> Path:
    (tmp_path / "out.txt").write_text(text)
    exe = tmp_path / "mlp"
    exe.write_text(f"#!/bin/sh\ncat {tmp_path / 'out.txt'}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def test_parses_mlp_calc_errors(bench, tmp_path):
    row = bench.mlp_errors(str(fake_mlp(tmp_path, MLP_OUTPUT)), Path("pot.mtp"), Path("t.cfg"))
    assert row["energy_mae_meV_per_atom"] == pytest.approx(7.74635)
    assert row["energy_rmse_meV_per_atom"] == pytest.approx(11.0216)
    assert row["force_rmse_eV_per_A"] == pytest.approx(0.112166)
    assert row["force_mae_eV_per_A"] == pytest.approx(0.0522012)


def test_missing_block_is_an_error(bench, tmp_path):
    broken = MLP_OUTPUT.split("Forces:")[0]
    with pytest.raises(RuntimeError, match="Forces"):
        bench.mlp_errors(str(fake_mlp(tmp_path, broken)), Path("pot.mtp"), Path("t.cfg"))


def test_markdown_lists_both_programs(bench, tmp_path):
    mlp_row = bench.mlp_errors(str(fake_mlp(tmp_path, MLP_OUTPUT)), Path("p"), Path("t"))
    ours = dict(mlp_row, program="mtpjax calc-errors")
    result = {"provenance": {"started_utc": "t", "command": "c", "versions": {},
                             "host": {"cpu_model": "x", "cpus": 2}, "load_before": [0, 0, 0]},
              "mlp_bin": "mlp", "potential": "p.mtp", "test_cells": 25, "test_atoms": 1525,
              "shipped": [ours, mlp_row], "load_after": [0, 0, 0]}
    text = bench.markdown(result)
    assert "| mtpjax calc-errors | 7.75 |" in text and "| mlp calc-errors | 7.75 |" in text
