"""Checks shared by the pipeline tests: the report's statements recomputed from stage outputs."""

from __future__ import annotations

from distill.report import SET_NAMES, TEACHER_SETS


def check_comparison_counts(report: str, errors: dict, levels: list[int]) -> None:
    """For each level, the report's "M''_L ≤ M'_L on n of m" line and its yes/no table rows
    equal the counts recomputed here from ``evaluate/errors.json``."""
    for level in levels:
        d, i = errors[f"M'_{level}"], errors[f"M''_{level}"]
        sets = [t for t in TEACHER_SETS if t in d and t in i]
        assert sets, (level, list(d))
        n_ok = 0
        for t in sets:
            e_ok = i[t]["energy_mae_meV_per_atom"] <= d[t]["energy_mae_meV_per_atom"]
            f_ok = i[t]["force_mae_eV_per_A"] <= d[t]["force_mae_eV_per_A"]
            n_ok += e_ok and f_ok
            row = (f"| {level} | {SET_NAMES[t]} | {'yes' if e_ok else 'no'} | "
                   f"{'yes' if f_ok else 'no'} |")
            assert row in report, row
        assert f"Level {level}: M''_{level} ≤ M'_{level} on {n_ok} of {len(sets)} " in report, \
            (level, n_ok, len(sets))


def check_cost_is_md_throughput(report: str, cost: dict, models: list[str]) -> None:
    """The cost ratio comes from MD throughput on one cell: every student and the teacher ran
    MD steps on the same number of atoms, and each speed-up is the ratio of their atom-steps/s;
    the report's target line counts the students that reach it."""
    import pytest

    assert cost["method"] == "md_throughput"
    teacher = cost["teacher"]
    assert teacher["n_atoms"] == cost["n_atoms"] and teacher["steps"] >= 1
    assert teacher["atom_steps_per_s"] == pytest.approx(
        teacher["steps"] * teacher["n_atoms"] / teacher["wall_s"], rel=1e-2)
    met = 0
    for m in models:
        c = cost[m]
        assert c["n_atoms"] == cost["n_atoms"] and c["steps"] >= 1
        assert c["speedup_vs_teacher"] == pytest.approx(
            c["atom_steps_per_s"] / teacher["atom_steps_per_s"])
        met += c["speedup_vs_teacher"] >= cost["target_speedup"]
    assert (f"≥ {cost['target_speedup']:g}× the teacher's atom-steps/s at {cost['n_atoms']} "
            f"atoms — met by {met} of {len(models)} students") in report
