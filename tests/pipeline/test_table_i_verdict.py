"""The Table-I verdict of the report: tolerance boundaries and missing values."""

from __future__ import annotations

import math

from distill.paper_values import TABLE_I, TABLE_I_TOLERANCE
from distill.report import table_i_resolution, table_i_verdict, within_tolerance
from md.analysis.summary import replica_statistics


def test_paper_students_are_within_the_tolerance_of_gap18():
    """The tolerance is the paper's spread: its M''_16 and M''_20 pass against GAP-18."""
    for label in ("M''_16", "M''_20"):
        assert all(within_tolerance(TABLE_I[label], TABLE_I["GAP-18"]).values()), label
    assert not within_tolerance(TABLE_I["M'_20"], TABLE_I["GAP-18"])["N5"]  # 2.7 pp off


def test_boundaries_and_missing_values():
    teacher = {k: 1.0 for k in TABLE_I_TOLERANCE}
    at_edge = {k: 1.0 + tol for k, tol in TABLE_I_TOLERANCE.items()}
    assert all(within_tolerance(at_edge, teacher).values())
    beyond = {**at_edge, "N5": 1.0 + TABLE_I_TOLERANCE["N5"] * 1.01}
    assert within_tolerance(beyond, teacher)["N5"] is False
    missing = {**at_edge, "N3": None, "theta_mean_deg": math.nan}
    ok = within_tolerance(missing, teacher)
    assert ok["N3"] is None and ok["theta_mean_deg"] is None
    lines = table_i_verdict({"teacher": teacher, "M''_16": missing, "M'_16": beyond})
    text = "\n".join(lines)
    assert "| M''_16 | - | yes | - | yes | yes | no |" in text
    assert "| M'_16 | yes | no | yes | yes | yes | no |" in text


def test_replica_statistics_mean_spread_and_missing_values():
    rows = [{"N5": 10.0, "theta_mean_deg": 100.0, "frame": 7, "delta_E_eV_per_atom": 0.2},
            {"N5": 14.0, "theta_mean_deg": math.nan, "frame": 7, "delta_E_eV_per_atom": 0.2},
            {"N5": 12.0, "theta_mean_deg": 102.0, "frame": 7, "delta_E_eV_per_atom": 0.2}]
    mean, spread = replica_statistics(rows)
    assert mean["N5"] == 12.0 and spread["N5"] == 2.0  # sample std (ddof 1) of 10, 14, 12
    assert mean["theta_mean_deg"] == 101.0  # the NaN replica left out
    assert spread["theta_mean_deg"] == math.sqrt(2.0)
    assert mean["frame"] == 7 and "frame" not in spread  # common integer: kept as it is
    assert mean["delta_E_eV_per_atom"] == 0.2 and spread["delta_E_eV_per_atom"] == 0.0
    assert mean["n_replicas"] == 3
    one, none = replica_statistics(rows[:1])
    assert one["N5"] == 10.0 and one["n_replicas"] == 1 and none == {}


def test_resolution_of_the_verdict():
    """|Δ| ± 2 SE against the tolerance: far outside resolved, near the edge unresolved."""
    keys = list(TABLE_I_TOLERANCE)
    teacher = {k: 0.0 for k in keys} | {"n_replicas": 4}
    far = {k: 10 * tol for k, tol in TABLE_I_TOLERANCE.items()} | {"n_replicas": 4}
    edge = {k: tol for k, tol in TABLE_I_TOLERANCE.items()} | {"n_replicas": 4}
    spread = {"teacher": {k: 0.1 * tol for k, tol in TABLE_I_TOLERANCE.items()},
              "far": {k: 0.1 * tol for k, tol in TABLE_I_TOLERANCE.items()},
              "edge": {k: 0.1 * tol for k, tol in TABLE_I_TOLERANCE.items()}}
    text = "\n".join(table_i_resolution({"teacher": teacher, "far": far, "edge": edge},
                                         spread))
    far_row = next(x for x in text.splitlines() if x.startswith("| far |"))
    edge_row = next(x for x in text.splitlines() if x.startswith("| edge |"))
    assert far_row.count("(resolved)") == len(keys), far_row
    assert edge_row.count("(unresolved)") == len(keys), edge_row
    # N5: |Δ| = 10 pp, SE = sqrt(0.1²/4 + 0.1²/4) pp
    assert f"10.00 ± {math.sqrt(0.005):.2f} (resolved)" in far_row
