"""The Table-I verdict of the report: tolerance boundaries and missing values."""

from __future__ import annotations

import math

from distill.paper_values import TABLE_I, TABLE_I_TOLERANCE
from distill.report import table_i_verdict, within_tolerance


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
