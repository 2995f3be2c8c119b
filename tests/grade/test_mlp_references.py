"""Grades and select-add against ``mlp`` 2.1.2 beyond the shared reference: two species at
level 16 and one species at level 20 (references in tests/data/grade/, commands in its
README), and the active-set file (``.als``) round trip with a live ``mlp`` (``MLP_BIN``)."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from mtpjax import grade as G
from mtpjax.io.cfg import read_cfg, write_cfg
from tests.conftest import DATA

GRADE = DATA / "grade"
CASES = {
    # name: (potential, training set, configurations graded / offered to select-add)
    "species2_L16": (GRADE / "species2_L16" / "pot.mtp", GRADE / "species2_L16" / "train.cfg",
                     GRADE / "species2_L16" / "in.cfg"),
    "si_L20": (DATA / "parity" / "si_L20" / "pot.mtp", GRADE / "si_L08" / "train.cfg",
               GRADE / "si_L08" / "in.cfg"),
}


def _grades(path) -> np.ndarray:
    return np.array([float(c.features["MV_grade"]) for c in read_cfg(path)])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_calc_grade_and_select_add_match_mlp(name):
    pot, train_path, new_path = CASES[name]
    train, new = read_cfg(train_path), read_cfg(new_path)
    grader = G.Grader(pot)
    B_train, B_new = grader.rows(train), grader.rows(new)
    P = B_train.shape[1]

    # calc-grade: select from TRAIN with (select, swap), grade IN
    mv = G.MaxVol.new(P)
    mv.select(B_train, list(range(len(train))), G.SELECT_THRESHOLD, G.SWAP_THRESHOLD)
    ref = _grades(GRADE / name / "grades.cfg")
    np.testing.assert_allclose(mv.grades(B_new), ref, rtol=1e-4, atol=2e-6)
    assert ref.max() > 1  # extrapolation grades are exercised
    assert mv.grades(B_train).max() <= G.SWAP_THRESHOLD * (1 + 1e-9)

    # select-add: TRAIN with (swap, swap), then NEW with (select, swap)
    mv = G.MaxVol.new(P)
    mv.select(B_train, [("t", k) for k in range(len(train))], G.SWAP_THRESHOLD,
              G.SWAP_THRESHOLD)
    mv.select(B_new, [("n", k) for k in range(len(new))], G.SELECT_THRESHOLD,
              G.SWAP_THRESHOLD)
    ours = list(dict.fromkeys(lab[1] for lab in mv.labels if lab and lab[0] == "n"))
    theirs = read_cfg(GRADE / name / "selected.cfg")
    assert len(ours) == len(theirs) > 5
    # same configurations in the same order, up to ties between symmetry-equivalent
    # configurations (x/y/z-strained copies) whose rows are equal to rounding
    scale = np.abs(B_new).max()
    for k, cfg in zip(ours, theirs, strict=True):
        same = [j for j, c in enumerate(new) if len(c) == len(cfg)
                and np.array_equal(c.types, cfg.types)
                and np.allclose(c.positions, cfg.positions, atol=2e-6)]
        assert len(same) == 1
        np.testing.assert_allclose(B_new[k], B_new[same[0]], rtol=0, atol=1e-7 * scale)


MLP_BIN = os.environ.get("MLP_BIN")
needs_mlp = pytest.mark.skipif(
    not MLP_BIN, reason="MLP_BIN is not set (path of an MLIP-2 2.1.2 `mlp` binary)")


@needs_mlp
def test_als_round_trip_with_mlp(tmp_path):
    """Our ``.als`` drives mlp's own grading (``mlp relax`` with ``select:load-state``, as in
    LAMMPS), and mlp's fresh ``.als`` drives ours: the same grades both ways."""
    ref = GRADE / "si_L08"
    grader = G.training_grader(ref / "pot.mtp", read_cfg(ref / "train.cfg"))
    ours = tmp_path / "ours.als"
    grader.save(ours)
    graded = read_cfg(ref / "grades.cfg")
    picks = [c for c in graded if float(c.features["MV_grade"]) > 1.05][:3]
    for c in picks:
        c.features = {}
    write_cfg(tmp_path / "three.cfg", picks)
    (tmp_path / "mlip.ini").write_text(
        f"mtp-filename {ref / 'pot.mtp'}\nselect TRUE\n  select:threshold 1.001\n"
        f"  select:threshold-break 1e9\n  select:save-selected {tmp_path / 'pre.cfg'}\n"
        f"  select:load-state {ours}\n")
    subprocess.run([MLP_BIN, "relax", str(tmp_path / "mlip.ini"),
                    f"--cfg-filename={tmp_path / 'three.cfg'}", "--iteration-limit=1"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=300)
    saved = read_cfg(tmp_path / "pre.cfg")
    assert len(saved) >= 3
    np.testing.assert_allclose(grader.grade(saved), _grades(tmp_path / "pre.cfg"), rtol=1e-4,
                               atol=2e-6)

    theirs = tmp_path / "theirs.als"
    subprocess.run([MLP_BIN, "calc-grade", str(ref / "pot.mtp"), str(ref / "train.cfg"),
                    str(ref / "in.cfg"), str(tmp_path / "out.cfg"),
                    f"--als-filename={theirs}"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=300)
    loaded = G.Grader.load(theirs)
    np.testing.assert_allclose(loaded.grade(read_cfg(ref / "in.cfg")),
                               _grades(tmp_path / "out.cfg"), rtol=1e-4, atol=2e-6)
    assert loaded.maxvol.inited_rows() == grader.maxvol.inited_rows()
