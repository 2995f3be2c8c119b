"""Teacher MD written as it runs and resumed after a crash (`distill.teacher_run`)."""

from __future__ import annotations

import pytest

from distill import sampling, teacher_run, testsets
from md.analysis.calculators import stillinger_weber_si
from md.structures import random_structure

STAGES = sampling.sampling_stages(30, 40, 600.0, 0.0, 20.0, tau_p_fs=50.0)
KW = dict(timestep_fs=1.0, seed=3, snapshot_every=20, thermo_every=10)


class Killed(Exception):
    """Stands for the process being killed."""


def run(folder, key="k", **extra):
    atoms = random_structure(16, 2.3, "Si", 2.1, seed=3)
    return teacher_run.run_to_files(
        atoms, stillinger_weber_si(), STAGES, trajectory=folder / "traj.extxyz",
        thermo=folder / "thermo.csv", restart=folder / "restart.npz", key=key, **KW, **extra)


def files(folder):
    return (folder / "thermo.csv").read_bytes(), (folder / "traj.extxyz").read_bytes()


def kill_at(monkeypatch, step):
    """Make the run die when it reaches `step`'s thermo record (before writing it)."""
    record = sampling._record

    def dying(atoms, s, dt):
        if s == step:
            raise Killed(f"killed at step {s}")
        return record(atoms, s, dt)

    monkeypatch.setattr(sampling, "_record", dying)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    folder = tmp_path_factory.mktemp("straight")
    res = run(folder)
    return folder, res


def test_uninterrupted_run_writes_everything(straight):
    folder, res = straight
    assert res.resumed_from == 0 and res.steps_run == 70
    assert [r.step for r in res.thermo] == list(range(10, 71, 10))
    assert [a.info["step"] for a in res.snapshots] == [20, 40, 60]
    assert [r.step for r in sampling.read_thermo(folder / "thermo.csv")] == list(range(10, 71, 10))
    # the same trajectory as the in-memory protocol run
    atoms = random_structure(16, 2.3, "Si", 2.1, seed=3)
    snaps, thermo = sampling.run_protocol(atoms, stillinger_weber_si(), STAGES, **KW)
    assert [r.E for r in thermo] == pytest.approx([r.E for r in res.thermo], rel=1e-11)
    # extxyz keeps 8 decimals
    assert snaps[-1].positions == pytest.approx(res.snapshots[-1].positions, abs=1e-7)


def test_killed_run_keeps_its_rows_and_resumes_bit_for_bit(straight, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        kill_at(m, 50)  # in the NPT ramp; the last saved state is step 40's
        with pytest.raises(Killed):
            run(tmp_path)
    kept = sampling.read_thermo(tmp_path / "thermo.csv")
    assert [r.step for r in kept] == [10, 20, 30, 40]  # nothing made before the kill is lost
    # a row and a frame half-written as the process died
    with open(tmp_path / "thermo.csv", "a") as fh:
        fh.write("50,0.05,61")
    with open(tmp_path / "traj.extxyz", "a") as fh:
        fh.write("16\nLattice=\"1 0 0 0 1 0 0 0 1\" step=60\nSi 0.0 0.0\n")
    res = run(tmp_path)
    assert res.resumed_from == 40 and res.steps_run == 30
    assert files(tmp_path) == files(straight[0])  # byte for byte: the run a kill never hit
    assert [a.info["step"] for a in res.snapshots] == [20, 40, 60]


def test_finished_run_is_not_run_again(straight, tmp_path):
    run(tmp_path)
    again = run(tmp_path)
    assert again.resumed_from == 70 and again.steps_run == 0
    assert files(tmp_path) == files(straight[0])


def test_another_key_starts_over(straight, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        kill_at(m, 50)
        with pytest.raises(Killed):
            run(tmp_path, key="old protocol")
    res = run(tmp_path, key="k")
    assert res.resumed_from == 0
    assert files(tmp_path) == files(straight[0])


def test_unreadable_restart_starts_over(tmp_path):
    (tmp_path / "restart.npz").write_text("not an npz")
    assert teacher_run.load_restart(tmp_path / "restart.npz", "k") is None
    assert teacher_run.load_restart(tmp_path / "missing.npz", "k") is None


def test_state_of_another_size_is_refused(straight):
    folder, _ = straight
    state = teacher_run.load_restart(folder / "restart.npz", "k")
    assert state is not None and state.step == 70
    with pytest.raises(ValueError, match="16 atoms, the structure 8"):
        sampling.run_protocol(random_structure(8, 2.3, "Si", 2.1, seed=0), stillinger_weber_si(),
                              STAGES, start=state)


def test_progress_lines(tmp_path, capsys):
    run(tmp_path, progress="md: quench")
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("  md: quench: step 10/70, ") and err[-1].startswith(
        "  md: quench: step 70/70, ")
    assert all("K, " in line and "Å³/atom" in line for line in err)


# ------------------------------------------------------------ RSS relaxations, journalled
RSS = testsets.RSSSettings(n_structures=4, max_atoms=6, relax_steps=5)


class ProcessKilled(BaseException):
    """A kill: not an ``Exception``, so the RSS loop cannot count it as a failed cell."""


def rss(folder, key="k", **extra):
    return teacher_run.rss_to_file(stillinger_weber_si(), RSS, journal=folder / "rss.jsonl",
                                   key=key, seed=5, **extra)


@pytest.fixture(scope="module")
def rss_straight(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rss")
    return folder, rss(folder)


def same_cells(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.numbers == y.numbers).all() and (x.positions == y.positions).all()
        assert (x.cell.array == y.cell.array).all() and x.info == y.info


def test_rss_journal_holds_the_set_exactly(rss_straight):
    folder, (cells, stats) = rss_straight
    plain = testsets.rss_set(stillinger_weber_si(), RSS, seed=5)
    same_cells(cells, plain[0])
    assert stats == plain[1] and stats["n"] >= 2
    same_cells(teacher_run.read_rss_journal(folder / "rss.jsonl", "k"), cells)  # all relaxed
    assert teacher_run.read_rss_journal(folder / "rss.jsonl", "other") == []


def test_killed_rss_relaxes_only_the_missing_cells(rss_straight, tmp_path, monkeypatch):
    relax, calls = testsets.relax, []

    def dying(atoms, *args):
        calls.append(1)
        if len(calls) == 3:
            raise ProcessKilled
        return relax(atoms, *args)

    with monkeypatch.context() as m:
        m.setattr(testsets, "relax", dying)
        with pytest.raises(ProcessKilled):
            rss(tmp_path)
    assert len(teacher_run.read_rss_journal(tmp_path / "rss.jsonl", "k")) == 2  # kept
    with open(tmp_path / "rss.jsonl", "a") as fh:
        fh.write('{"i": 2, "outcome": "rel')  # half-written as the process died
    calls.clear()
    with monkeypatch.context() as m:
        m.setattr(testsets, "relax", lambda *a: (calls.append(1), relax(*a))[1])
        cells, stats = rss(tmp_path)
    assert len(calls) == 2  # cells 3 and 4 only
    same_cells(cells, rss_straight[1][0])
    assert stats == rss_straight[1][1]
    assert (tmp_path / "rss.jsonl").read_bytes() == (rss_straight[0] / "rss.jsonl").read_bytes()


def test_rss_of_another_key_starts_over(rss_straight, tmp_path, capsys):
    rss(tmp_path, key="old settings")
    cells, _ = rss(tmp_path, progress="tests: RSS")
    same_cells(cells, rss_straight[1][0])
    err = capsys.readouterr().err.splitlines()
    assert err == [f"  tests: RSS: cell {i}/4 relaxed" for i in range(1, 5)]
    assert (tmp_path / "rss.jsonl").read_bytes() == (rss_straight[0] / "rss.jsonl").read_bytes()
