"""`mtpjax calc-errors` statistics follow mlp's ErrorMonitor conventions (worked by hand)."""

from dataclasses import replace

import numpy as np
import pytest

from mtpjax.errors_report import error_report, format_report
from mtpjax.io.cfg import Configuration


def _pair():
    cell = np.eye(3) * 4.0
    ref = Configuration(positions=np.zeros((2, 3)), types=np.zeros(2, int), cell=cell,
                        pbc=np.ones(3, bool), energy=-10.0,
                        forces=np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]),
                        plus_stress=np.array([2.0, 0.0, 0.0, 0.0, 0.0, 1.0]))
    pred = replace(ref, energy=-9.0, forces=ref.forces + np.array([[3.0, 4.0, 0.0], [0, 0, 0]]),
                   plus_stress=ref.plus_stress + np.array([1.0, 0, 0, 0, 0, 1.0]))
    return pred, ref


def test_force_and_stress_conventions_by_hand():
    pred, ref = _pair()
    # a second configuration predicted exactly
    rep = error_report([pred, ref], [ref, ref])
    f = rep["forces"]
    assert f["count"] == 4 and f["max"] == pytest.approx(5.0)
    assert f["mae"] == pytest.approx(5.0 / (3 * 4))           # Σ|ΔF_i| / (3N)
    assert f["rmse"] == pytest.approx(np.sqrt(25.0 / 12))     # per-component RMS
    assert f["max_ratio"] == pytest.approx(5.0 / 2.0)
    assert f["rms_ratio"] == pytest.approx(np.sqrt(25.0 / (2 * (1 + 4))))
    s = rep["stress"]
    frob = np.sqrt(1.0 + 2 * 1.0)  # off-diagonal xy counts twice in the 3x3 Frobenius norm
    assert s["count"] == 2 and s["max"] == pytest.approx(frob)
    assert s["mae"] == pytest.approx(frob / (9 * 2))
    assert s["rmse"] == pytest.approx(np.sqrt(frob**2 / 18))
    assert s["rms_ratio"] == pytest.approx(np.sqrt(frob**2 / (2 * (4.0 + 2.0))))
    gpa = rep["stress_gpa"]
    assert gpa["max"] == pytest.approx(frob / 64.0 * 160.21766208)
    e = rep["energy_per_atom"]
    assert e["max"] == pytest.approx(0.5) and e["mae"] == pytest.approx(0.25)
    text = format_report(rep)
    assert "Max(ForceDiff) / Max(Force) = 2.5" in text
    assert "Errors checked for 2 configurations" in text


def test_non_periodic_configuration_has_stress_but_no_gpa():
    pred, ref = _pair()
    cluster_ref = replace(ref, cell=None, pbc=np.zeros(3, bool))
    cluster_pred = replace(pred, cell=None, pbc=np.zeros(3, bool))
    rep = error_report([cluster_pred], [cluster_ref])
    assert rep["stress"]["count"] == 1
    assert rep["stress_gpa"]["count"] == 0
