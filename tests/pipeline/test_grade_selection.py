"""``[sample] selection = "grade"`` on the tiny pipeline (Stillinger–Weber teacher, level 2):
the student selects part of the teacher's snapshots, one refit → student MD → grade round adds
its own configurations, the teacher labels each D1 configuration once, and the report line
states the teacher calls."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest

from distill import pipeline
from distill.report import teacher_calls_lines
from distill.stages.cache import read_stamp
from distill.store import open_store, select_labelled

TINY = Path(__file__).with_name("tiny.toml")


def _config(tmp_path: Path, extra: str = "") -> Path:
    text = TINY.read_text().replace("snapshot_every = 20\n\n[labels]", (
        "snapshot_every = 5\nselection = \"grade\"\ngrade_max_iter = 3\n"
        f"grade_iterations = 1\ngrade_every = 5\ngamma_break = 1e6\n{extra}\n[labels]"))
    text = text.replace('[run]\n', '[run]\nstages = ["teacher", "sample", "labels"]\n')
    text = text.replace("../../data/", str(Path(__file__).resolve().parents[2] / "data") + "/")
    path = tmp_path / "grade.toml"
    path.write_text(text)
    return path


def _si_ref() -> Path:
    """The shared reference case ``grade/si_L08`` (``mlp`` 2.1.2: pot.mtp, train.cfg, in.cfg,
    selected.cfg)."""
    from tests.conftest import DATA

    return DATA / "grade" / "si_L08"


def _si_frames(name: str) -> list:
    """The configurations of ``si_L08/name`` as ASE Atoms (Si, no labels)."""
    from ase import Atoms

    from mtpjax.io.cfg import read_cfg

    return [Atoms(numbers=[14] * len(c), positions=c.positions, cell=c.cell, pbc=c.pbc)
            for c in read_cfg(_si_ref() / name)]


def _stand_in_labels(labelled: list):
    """A ``label`` callback for grade_rounds whose fit is a stand-in (it reads no labels):
    copies of the new frames with zero REF_* labels appended to ``labelled``; all so far."""

    def label(new):
        for a in new:
            b = a.copy()
            b.info["REF_energy"] = 0.0
            b.arrays["REF_forces"] = np.zeros((len(b), 3))
            labelled.append(b)
        return list(labelled)

    return label


def test_grade_select_is_mlp_select_add():
    """grade_select on ASE frames picks mlp select-add's configurations, in its order."""
    from distill.sampling import grade_select

    ref = _si_ref()

    new = _si_frames("in.cfg")
    sel = grade_select(ref / "pot.mtp", _si_frames("train.cfg"), new, ["Si"])
    mlp = _si_frames("selected.cfg")
    assert len(sel.chosen) == len(mlp) == 9
    for k, a in zip(sel.chosen, mlp, strict=True):
        np.testing.assert_allclose(new[k].positions, a.positions, atol=2e-6)
    assert sel.grades.shape == (34,) and np.all(sel.grades[sel.chosen] > 1.0)


def test_grade_budget_select_fills_the_budget():
    """A label budget larger than what MaxVol picks is filled with the remaining candidates
    of highest γ against the active set after the picks; a smaller one is not exceeded."""
    from distill.sampling import atoms_views, grade_budget_select, grade_select

    ref = _si_ref()

    train, new = _si_frames("train.cfg"), _si_frames("in.cfg")
    maxvol = grade_select(ref / "pot.mtp", train, new, ["Si"])
    assert len(maxvol.chosen) == 9  # then every other candidate has γ ≤ the swap threshold
    sel = grade_budget_select(ref / "pot.mtp", train, new, ["Si"], 15)
    assert len(sel.chosen) == len(set(sel.chosen)) == 15
    assert sel.chosen[:9] == maxvol.chosen
    rest = [k for k in range(len(new)) if k not in sel.chosen[:9]]
    after = dict(zip(rest, maxvol.grader.grade(atoms_views([new[k] for k in rest], ["Si"])),
                     strict=True))
    fill = [after[k] for k in sel.chosen[9:]]
    assert fill == sorted(fill, reverse=True)
    assert min(fill) >= max(after[k] for k in rest if k not in sel.chosen)
    np.testing.assert_allclose(sel.grades, maxvol.grades)
    small = grade_budget_select(ref / "pot.mtp", train, new, ["Si"], 4)
    assert len(small.chosen) == 4 and all(small.grades[small.chosen] > 1.0)
    assert sorted(grade_budget_select(ref / "pot.mtp", train, new, ["Si"], 99).chosen) == \
        list(range(34))
    assert grade_budget_select(ref / "pot.mtp", train, new, ["Si"], 0).chosen == []


def test_grade_strata_select_one_pick_per_stretch():
    """``grade_strata_select``: the candidates in MD-step order (shuffled here) cut into
    ``budget`` stretches of equal count, the highest γ of each; the grades are those against
    the active set of the training set; a candidate without a step is refused."""
    from distill.sampling import grade_select, grade_strata_select

    ref = _si_ref()

    train, new = _si_frames("train.cfg"), _si_frames("in.cfg")
    grades = grade_select(ref / "pot.mtp", train, new, ["Si"]).grades
    # the run's early steps hold the highest γ (as a run from a random cell does)
    steps = np.empty(len(new), int)
    steps[np.argsort(-grades, kind="stable")] = 10 * np.arange(1, len(new) + 1)
    for a, step in zip(new, steps, strict=True):
        a.info["step"] = int(step)
    sel = grade_strata_select(ref / "pot.mtp", train, new, ["Si"], 5)
    np.testing.assert_allclose(sel.grades, grades)
    by_step = np.argsort(steps)
    strata = np.array_split(by_step, 5)  # 7, 7, 7, 7, 6 candidates
    assert [len(x) for x in strata] == [7, 7, 7, 7, 6]
    assert sel.chosen == [int(x[np.argmax(grades[x])]) for x in strata]
    # not the 5 highest γ overall (all in the first stretch) but one per stretch of the run
    assert sorted(grades[sel.chosen]) != sorted(np.sort(grades)[-5:])
    assert [int(steps[k]) for k in sel.chosen] == [10, 80, 150, 220, 290]
    assert sorted(grade_strata_select(ref / "pot.mtp", train, new, ["Si"], 99).chosen) == \
        list(range(34))
    assert grade_strata_select(ref / "pot.mtp", train, new, ["Si"], 0).chosen == []
    del new[3].info["step"]
    with pytest.raises(ValueError, match="candidate 3 has no info"):
        grade_strata_select(ref / "pot.mtp", train, new, ["Si"], 5)


def test_random_select_is_a_seeded_draw_without_grades():
    """``random_select`` (``grade_pick = "random"``, the control): ``budget`` distinct
    candidates drawn by the generator — the same draw for the same seed, whatever the grades —
    and the grades against the active set of the training set reported beside them."""
    from distill.sampling import grade_select, random_select

    ref = _si_ref()
    train, new = _si_frames("train.cfg"), _si_frames("in.cfg")
    sel = random_select(ref / "pot.mtp", train, new, ["Si"], 5, np.random.default_rng(7))
    np.testing.assert_allclose(sel.grades, grade_select(ref / "pot.mtp", train, new,
                                                        ["Si"]).grades)
    assert sel.chosen == [int(k) for k in np.random.default_rng(7).choice(34, 5,
                                                                           replace=False)]
    assert len(set(sel.chosen)) == 5
    # not what the grades would pick: the five highest γ
    assert sorted(sel.chosen) != sorted(np.argsort(-sel.grades)[:5].tolist())
    assert sorted(random_select(ref / "pot.mtp", train, new, ["Si"], 99,
                                np.random.default_rng(0)).chosen) == list(range(34))
    assert random_select(ref / "pot.mtp", train, new, ["Si"], 0,
                         np.random.default_rng(0)).chosen == []


@pytest.mark.slow
def test_grade_driven_sampling(tmp_path):
    run_dir = tmp_path / "run"
    pipeline.run(_config(tmp_path), run_dir, progress=False)
    smp = read_stamp(run_dir / "sample")["summary"]
    g = smp["grading"]
    assert g["selection"] == "grade" and g["candidates"] == 12  # 60 steps / 5
    r0, r1 = g["rounds"]
    assert r0["source"] == "teacher_md" and 0 < r0["selected"] < r0["candidates"]
    assert r1["source"] == "student_md" and r1["steps"] > 0
    d1 = ase.io.read(run_dir / "sample" / "d1.xyz", index=":")
    assert len(d1) == g["selected"] == r0["selected"] + r1["selected"] == smp["n_snapshots"]
    # the round-0 D1 frames were labelled inside the sample stage, the rest in the labels
    # stage, each once: teacher label calls for D1 = len(D1)
    assert g["teacher_labels_in_sample"] == r0["selected"]
    lab = read_stamp(run_dir / "labels")["summary"]
    assert lab["d1"]["labelled"] == r1["selected"]
    assert lab["d1"]["labelled"] + g["teacher_labels_in_sample"] == len(d1)
    from distill.stages.data import teacher_id

    rows = [r for r in select_labelled(open_store(run_dir / "labels" / "store.db"),
                                       teacher_id(run_dir)) if r.get("source") == "d1"]
    assert len(rows) == len(d1)
    # the round-0 selection is mlp select-add's on the student of round 0
    from distill.sampling import grade_select
    from distill.stages.data import read_d0

    cands = ase.io.read(run_dir / "sample" / "grade" / "d1_0.xyz", index=":")
    d0 = read_d0(str(Path(__file__).resolve().parents[2] / "data/si_mlearn/train.xyz"), 6)
    again = grade_select(run_dir / "sample" / "grade" / "round_0" / "pot.mtp", d0, cands,
                         ["Si"])
    assert np.all(again.grades > 1.1)  # every selected snapshot extrapolates
    line = teacher_calls_lines(smp, lab)[0]
    assert f"D1 labels {len(d1)}" in line and "grade-driven" in line
    assert f"D0 relabels {lab['d0']['labelled']}" in line


@pytest.mark.slow
def test_grade_budget_sampling(tmp_path):
    """``grade_budget``: every round labels exactly that many configurations (MaxVol's picks
    filled by γ), from the teacher's snapshots and then from the student's own MD."""
    run_dir = tmp_path / "run"
    pipeline.run(_config(tmp_path, "grade_budget = 3\n"), run_dir, progress=False)
    g = read_stamp(run_dir / "sample")["summary"]["grading"]
    r0, r1 = g["rounds"]
    assert r0["selected"] == 3 and r1["source"] == "student_md" and r1["steps"] > 0
    # every graded configuration of the student's run is a candidate (a run to the end: 12)
    assert r1["found"] == r1["steps"] // 5 and r1["selected"] == min(3, r1["found"]) > 0
    d1 = ase.io.read(run_dir / "sample" / "d1.xyz", index=":")
    assert len(d1) == g["selected"] == 3 + r1["selected"]


def test_grade_rounds_student_proposer():
    """``grade_rounds`` without teacher snapshots (``grade_proposer = "student"``): no round 0;
    the D0 student's MD (``grade_runs`` runs) proposes first, each later round refits on what
    the teacher labelled, the last round's picks come back unlabelled."""
    from distill.active import grade_rounds
    from distill.sampling import sampling_stages
    from distill.stages.config import SCHEMA
    from md.analysis.calculators import stillinger_weber_si

    ref = _si_ref()
    d0 = _si_frames("train.cfg")
    s = {**SCHEMA["sample"], "n_atoms": 8, "grade_every": 5, "grade_budget": 2,
         "grade_iterations": 2, "grade_runs": 2, "grade_proposer": "student",
         "gamma_break": 0.0}
    fits, labelled = [], []
    calc = stillinger_weber_si()

    def fit(train, name):
        fits.append((name, len(train)))
        return ref / "pot.mtp"  # the reference potential stands in for the refitted students

    def label(frames):
        for a in frames:
            b = a.copy()
            b.calc = calc
            b.info["REF_energy"] = b.get_potential_energy()
            b.arrays["REF_forces"] = b.get_forces()
            b.calc = None
            labelled.append(b)
        return list(labelled)

    seen = []
    d1, rounds = grade_rounds(d0, None, sampling_stages(10, 0), ["Si"], s, 3, fit, label,
                              on_round=seen.append)
    assert [r["round"] for r in rounds] == [1, 2] and seen == rounds
    assert all(r["source"] == "student_md" for r in rounds)
    for r in rounds:  # two runs of 10 steps, graded every 5 steps: 4 candidates, 2 picked
        assert r["steps"] == 20 and r["found"] == 4 and r["selected"] == 2
        assert r["stop"] == ["end", "end"]
    assert fits == [("round_0", len(d0)), ("round_2", len(d0) + 2)]
    assert len(d1) == 4 and len(labelled) == 2  # round 2's picks: for the labels stage
    np.testing.assert_allclose(labelled[0].positions, d1[0].positions)


def test_grade_rounds_over_the_teacher_snapshots():
    """``grade_pool_rounds`` = 3: the D0 student picks among the teacher's snapshots, then twice
    the picks are labelled, the student refitted on D0 + every label and a new pick made among
    the snapshots not picked yet (never one twice); the last picks come back unlabelled.
    Round 0 equals the single pick of ``grade_pool_rounds`` = 1. (A student-MD round after
    them: ``test_grade_pool_rounds_sampling``.)"""
    from distill.active import grade_rounds
    from distill.sampling import grade_budget_select, sampling_stages
    from distill.stages.config import SCHEMA

    ref = _si_ref()

    d0, pool = _si_frames("train.cfg"), _si_frames("in.cfg")
    for k, a in enumerate(pool):
        a.info["step"] = 10 * k

    def run(pool_rounds, iterations):
        fits, labelled = [], []

        def fit(train, name):
            fits.append((name, len(train)))
            return ref / "pot.mtp"

        label = _stand_in_labels(labelled)

        s = {**SCHEMA["sample"], "n_atoms": 8, "grade_every": 5, "grade_budget": 4,
             "grade_pool_rounds": pool_rounds, "grade_iterations": iterations,
             "gamma_break": 0.0}
        d1, rounds = grade_rounds(d0, pool, sampling_stages(10, 0), ["Si"], s, 3, fit, label)
        return d1, rounds, fits, labelled

    d1, rounds, fits, labelled = run(3, 0)
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert all(r["source"] == "teacher_md" for r in rounds)
    assert [r["candidates"] for r in rounds] == [34, 30, 26]
    assert all(r["selected"] == 4 for r in rounds)
    steps = [x for r in rounds for x in r["picked_steps"]]
    assert len(set(steps)) == 12  # no snapshot picked twice
    assert fits == [("round_0", len(d0)), ("round_1", len(d0) + 4), ("round_2", len(d0) + 8)]
    assert len(d1) == 12 and len(labelled) == 8  # round 2's picks: for the labels stage
    assert [a.info["step"] for a in d1] == steps
    # round 0 is the single pick over the snapshots
    once = grade_budget_select(ref / "pot.mtp", d0, pool, ["Si"], 4)
    assert rounds[0]["picked_steps"] == [10 * k for k in once.chosen]
    d1_one, rounds_one, _, _ = run(1, 0)
    assert len(rounds_one) == 1 and rounds_one[0]["picked_steps"] == rounds[0]["picked_steps"]


def test_grade_rounds_with_random_cells():
    """``cells`` (``grade_cells``): made once from the D0 student's potential; each round over
    the teacher's snapshots picks ``grade_budget`` − ``grade_cells_per_round`` snapshots, then
    ``grade_cells_per_round`` cells graded with those picks in the active set; no cell or
    snapshot is picked twice."""
    from distill.active import grade_rounds
    from distill.sampling import grade_budget_select, sampling_stages
    from distill.stages.config import SCHEMA

    ref = _si_ref()
    frames = _si_frames("in.cfg")
    d0 = _si_frames("train.cfg")
    pool, extra = frames[:20], frames[20:]
    for k, a in enumerate(pool):
        a.info["step"] = 10 * k
    asked = []

    def cells(pot):
        asked.append(pot)
        return extra

    labelled = []
    label = _stand_in_labels(labelled)

    s = {**SCHEMA["sample"], "grade_budget": 4, "grade_pool_rounds": 2,
         "grade_cells": len(extra), "grade_cells_per_round": 1}
    d1, rounds = grade_rounds(d0, pool, sampling_stages(10, 0), ["Si"], s, 3,
                              lambda train, name: ref / "pot.mtp", label, cells=cells)
    assert asked == [ref / "pot.mtp"]  # made once, with the D0 student
    assert [r["cells_selected"] for r in rounds] == [1, 1] and rounds[0]["cells"] == 14
    assert [len(r["picked_steps"]) for r in rounds] == [3, 3]
    assert [r["candidates"] for r in rounds] == [20, 17]
    assert len(d1) == 8 and len(labelled) == 4
    # round 0: the snapshots as a budget of 3, then the best cell against D0 + those picks
    snaps = grade_budget_select(ref / "pot.mtp", d0, pool, ["Si"], 3)
    assert rounds[0]["picked_steps"] == [10 * k for k in snaps.chosen]
    cell = grade_budget_select(ref / "pot.mtp", d0 + [pool[k] for k in snaps.chosen], extra,
                               ["Si"], 1)
    np.testing.assert_array_equal(d1[3].positions, extra[cell.chosen[0]].positions)
    assert not np.array_equal(d1[3].positions, d1[7].positions)  # another cell in round 1


def test_student_md_skips_thermalisation():
    """``grade_skip_steps``: the student MD's configurations of its first N steps are not
    proposed; the later ones are, as without it."""
    from distill.active import student_md
    from distill.sampling import grade_select, sampling_stages
    from distill.stages.config import SCHEMA

    pot = _si_ref() / "pot.mtp"
    grader = grade_select(pot, [], [], ["Si"]).grader
    s = {**SCHEMA["sample"], "n_atoms": 8, "grade_every": 5, "grade_budget": 2,
         "gamma_break": 0.0}
    found = {}
    for skip in (0, 5):
        frames, md = student_md(pot, grader, sampling_stages(15, 0), ["Si"],
                                {**s, "grade_skip_steps": skip}, 3)
        assert md["steps"] == 15 and md["stop"] == "end" and md["found"] == len(frames)
        found[skip] = frames
    assert len(found[0]) == 3 and len(found[5]) == 2  # graded at steps 5, 10, 15
    for a, b in zip(found[0][1:], found[5], strict=True):  # the same run (same seed)
        np.testing.assert_allclose(a.positions, b.positions)
    assert [a.info["step"] for a in found[0]] == [5, 10, 15]  # for grade_pick = "strata"


def test_student_protocol_md_runs_the_teachers_protocol():
    """``grade_md = "protocol"``: the student runs `sampling.run_protocol` (the teacher's
    Langevin/Berendsen MD) through its ASE calculator; snapshots every ``grade_every`` steps
    after ``grade_skip_steps`` are the candidates, with their steps; the same seed gives the
    same run."""
    from distill.active import student_protocol_md
    from distill.sampling import grade_select, sampling_stages
    from distill.stages.config import SCHEMA

    pot = _si_ref() / "pot.mtp"
    grader = grade_select(pot, [], [], ["Si"]).grader
    s = {**SCHEMA["sample"], "n_atoms": 8, "grade_every": 5, "grade_budget": 2,
         "grade_md": "protocol", "grade_skip_steps": 5}
    stages = sampling_stages(10, 5)  # NVT, then an NPT ramp (the barostat acts)
    a, md = student_protocol_md(pot, grader, stages, ["Si"], s, 3)
    b, _ = student_protocol_md(pot, grader, stages, ["Si"], s, 3)
    assert md["steps"] == 15 and md["stop"] == "end" and md["found"] == len(a) == 2
    assert [x.info["step"] for x in a] == [10, 15]
    assert md["max_gamma"] > 0 and md["volume_A3_per_atom"][0] > 0
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.positions, y.positions)


@pytest.mark.parametrize("line, key", [
    ('selection = "maxvol"', "sample.selection"),
    ('grade_proposer = "lammps"', "sample.grade_proposer"),
    ("grade_runs = 0", "sample.grade_runs"),
    ("grade_threshold = 0.9", "sample.grade_threshold"),
    ("gamma_break = 1.05", "sample.gamma_break"),
    ("grade_level = 7", "sample.grade_level"),
    ("grade_iterations = -1", "sample.grade_iterations"),
    ("grade_budget = -2", "sample.grade_budget"),
    ("grade_skip_steps = -1", "sample.grade_skip_steps"),
    ('grade_pick = "maxvol"', "sample.grade_pick"),
    ('grade_pick = "strata"', "sample.grade_budget"),
    ('grade_pick = "random"', "sample.grade_budget"),
    ('grade_md = "lammps"', "sample.grade_md"),
    ("grade_pool_rounds = 0", "sample.grade_pool_rounds"),
    ('grade_proposer = "student"\ngrade_iterations = 1\ngrade_pool_rounds = 2',
     "sample.grade_pool_rounds"),
    ("grade_cells = 10", "sample.grade_cells"),
    ("grade_cells = 10\ngrade_budget = 3\ngrade_cells_per_round = 3",
     "sample.grade_cells_per_round"),
    ("grade_cells = 0\ngrade_budget = 3\ngrade_cells_per_round = 1", "sample.grade_cells"),
    ('grade_cells = 10\ngrade_budget = 3\ngrade_cells_per_round = 1\ngrade_pick = "strata"',
     "sample.grade_cells"),
])
def test_grade_config_errors(tmp_path, line, key):
    from distill.stages.config import PipelineConfigError, load
    from tests.pipeline.test_config import _with

    with pytest.raises(PipelineConfigError, match=key) as info:
        load(_with(tmp_path, "sample", line))
    assert info.value.line is not None


def test_grade_rounds_random_pick_with_random_cells():
    """``grade_pick = "random"`` in the rounds over the teacher's snapshots with random cells:
    the same budget split (snapshots, then cells), drawn by a generator seeded with the run's
    seed — the same picks for the same seed, other picks for another; nothing picked twice."""
    from distill.active import grade_rounds
    from distill.sampling import sampling_stages
    from distill.stages.config import SCHEMA

    ref = _si_ref()
    frames = _si_frames("in.cfg")
    d0 = _si_frames("train.cfg")
    pool, extra = frames[:20], frames[20:]
    for k, a in enumerate(pool):
        a.info["step"] = 10 * k
    s = {**SCHEMA["sample"], "grade_budget": 4, "grade_pool_rounds": 3, "grade_pick": "random",
         "grade_cells": len(extra), "grade_cells_per_round": 1}

    def run(seed):
        d1, rounds = grade_rounds(d0, pool, sampling_stages(10, 0), ["Si"], s, seed,
                                  lambda train, name: ref / "pot.mtp", _stand_in_labels([]),
                                  cells=lambda pot: extra)
        return d1, rounds

    d1, rounds = run(3)
    assert [len(r["picked_steps"]) for r in rounds] == [3, 3, 3]
    assert [r["cells_selected"] for r in rounds] == [1, 1, 1]
    steps = [x for r in rounds for x in r["picked_steps"]]
    assert len(set(steps)) == 9
    assert len({a.positions.tobytes() for a in d1}) == 12
    assert run(3)[1] == rounds
    assert [r["picked_steps"] for r in run(4)[1]] != [r["picked_steps"] for r in rounds]


def test_grade_config_accepted(tmp_path):
    from distill.stages.config import load
    from tests.pipeline.test_config import _with

    cfg = load(_with(tmp_path, "sample", 'selection = "grade"'))
    assert cfg["sample"]["selection"] == "grade" and cfg["sample"]["grade_iterations"] == 0
    assert cfg["sample"]["grade_proposer"] == "teacher" and cfg["sample"]["grade_runs"] == 1


def test_student_proposer_needs_a_round(tmp_path):
    from distill.stages.config import PipelineConfigError, load

    path = _config(tmp_path, 'grade_proposer = "student"\n')
    path.write_text(path.read_text().replace("grade_iterations = 1", "grade_iterations = 0"))
    with pytest.raises(PipelineConfigError, match="sample.grade_iterations"):
        load(path)


@pytest.mark.slow
def test_grade_student_proposer_sampling(tmp_path):
    """``grade_proposer = "student"``: no teacher MD; the D0 student's own MD proposes."""
    run_dir = tmp_path / "run"
    path = _config(tmp_path, 'grade_proposer = "student"\ngrade_budget = 3\n')
    path.write_text(path.read_text().replace("grade_iterations = 1", "grade_iterations = 2"))
    pipeline.run(path, run_dir, progress=False)
    smp = read_stamp(run_dir / "sample")["summary"]
    g = smp["grading"]
    assert smp["teacher_md_steps"] == 0 and smp["runs"] == [] and g["proposer"] == "student"
    assert [r["source"] for r in g["rounds"]] == ["student_md"] * 2
    assert [r["selected"] for r in g["rounds"]] == [3, 3] and g["candidates"] == 0
    assert g["teacher_labels_in_sample"] == 3  # round 1's picks; round 2's in the labels stage
    lab = read_stamp(run_dir / "labels")["summary"]
    assert lab["d1"]["labelled"] == 3 and len(ase.io.read(run_dir / "sample" / "d1.xyz",
                                                         index=":")) == 6
    assert "no teacher MD" in teacher_calls_lines(smp, lab)[0]


@pytest.mark.slow
def test_grade_pool_rounds_sampling(tmp_path):
    """``grade_pool_rounds = 2``: two labelled rounds over the teacher's snapshots (no snapshot
    picked twice), then the student's MD round; each D1 configuration labelled once."""
    run_dir = tmp_path / "run"
    pipeline.run(_config(tmp_path, "grade_budget = 3\ngrade_pool_rounds = 2\n"), run_dir,
                 progress=False)
    smp = read_stamp(run_dir / "sample")["summary"]
    g = smp["grading"]
    r0, r1, r2 = g["rounds"]
    assert (r0["source"], r1["source"], r2["source"]) == ("teacher_md", "teacher_md",
                                                          "student_md")
    assert r0["candidates"] == 12 and r1["candidates"] == 9
    assert r0["selected"] == r1["selected"] == 3
    assert not set(r0["picked_steps"]) & set(r1["picked_steps"])
    assert g["teacher_labels_in_sample"] == 6  # rounds 0 and 1, before the refits
    lab = read_stamp(run_dir / "labels")["summary"]
    d1 = ase.io.read(run_dir / "sample" / "d1.xyz", index=":")
    assert len(d1) == 6 + r2["selected"] == lab["d1"]["labelled"] + 6
    assert (run_dir / "sample" / "grade" / "round_1" / "pot.mtp").is_file()


@pytest.mark.slow
def test_grade_cells_sampling(tmp_path):
    """``grade_cells``: random cells relaxed by the D0 grading student join the rounds over
    the teacher's snapshots (one per round here) and D1; each labelled once."""
    run_dir = tmp_path / "run"
    pipeline.run(_config(tmp_path, "grade_budget = 3\ngrade_pool_rounds = 2\ngrade_cells = 4\n"
                                   "grade_cells_per_round = 1\n"), run_dir, progress=False)
    g = read_stamp(run_dir / "sample")["summary"]["grading"]
    r0, r1, r2 = g["rounds"]
    assert r0["cells"] >= 2 and r0["cells_selected"] == r1["cells_selected"] == 1
    assert len(r0["picked_steps"]) == len(r1["picked_steps"]) == 2
    assert r2["source"] == "student_md"
    d1 = ase.io.read(run_dir / "sample" / "d1.xyz", index=":")
    assert len(d1) == 6 + r2["selected"]
    lab = read_stamp(run_dir / "labels")["summary"]
    assert lab["d1"]["labelled"] + g["teacher_labels_in_sample"] == len(d1)
