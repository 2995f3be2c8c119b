"""The labelling engine: pool equals serial bitwise, skipping, failures, dying workers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from distill.compute import TeacherBuildError
from distill.engine import label
from distill.hashing import structure_key
from distill.store import open_store
from distill.teachers import TeacherSpec
from tests.distill.conftest import EMT, faulty, labels_by_skey, make_structures


def run(structures, teacher, path, executor=None, **kw):
    summary = label(structures, teacher, path, executor, workers=2, progress=False, **kw)
    return summary, open_store(path)


def test_pool_equals_serial_bitwise_and_rerun_skips(tmp_path, structures):
    _, serial = run(structures, EMT, tmp_path / "serial.db", "serial")
    summary, pool = run(structures, EMT, tmp_path / "pool.db", chunk_size=3, recycle=2)
    assert summary.n_labelled == len(structures) and summary.n_failed == 0
    assert labels_by_skey(pool) == labels_by_skey(serial)
    assert len(labels_by_skey(pool)) == len(structures)
    has_stress = {row.skey: row.get("stress") is not None for row in pool.select()}
    assert has_stress == {structure_key(a): bool(a.pbc.all()) for a in structures}
    assert 0 < sum(has_stress.values()) < len(structures)

    again, pool = run(structures + structures[:3], EMT, tmp_path / "pool.db")
    assert (again.n_skipped, again.n_duplicates, again.n_labelled) == (len(structures), 3, 0)
    assert pool.count() == len(structures)


def test_labels_bitwise_equal_direct_ase(tmp_path, structures):
    from ase.calculators.emt import EMT as AseEMT

    _, db = run(structures, EMT, tmp_path / "p.db", chunk_size=5)
    rows = {row.skey: row for row in db.select()}
    for atoms in structures:
        row = rows[structure_key(atoms)]
        atoms = atoms.copy()
        atoms.calc = AseEMT()
        assert row.energy == atoms.get_potential_energy()
        assert np.array_equal(row.forces, atoms.get_forces())


def test_new_teacher_labels_same_structures_again(tmp_path, structures):
    lj = TeacherSpec("ase", "ase.calculators.lj:LennardJones", (), {"sigma": 2.3, "rc": 6.0})
    run(structures, EMT, tmp_path / "s.db", "serial")
    summary, db = run(structures, lj, tmp_path / "s.db", "serial")
    assert summary.n_labelled == len(structures)
    assert db.count() == 2 * len(structures)
    assert db.count(teacher=summary.teacher_id) == len(structures)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("raise", "RuntimeError: teacher refuses"), ("nan", "non-finite energy, forces")],
)
def test_teacher_failure_recorded_and_run_finishes(tmp_path, structures, mode, reason):
    summary, db = run(structures, faulty(mode), tmp_path / "f.db", "serial", source="unit")
    bad = [a for a in structures if len(a) == 8]
    assert summary.n_failed == len(bad) and summary.n_labelled == len(structures) - len(bad)
    failed = list(db.select(status="failed"))
    assert len(failed) == len(bad)
    assert all(row.reason.startswith(reason) and row.source == "unit" for row in failed)
    assert all(row.get("energy") is None for row in failed)

    again, _ = run(structures, faulty(mode), tmp_path / "f.db", "serial")
    assert again.n_skipped == len(structures)
    retried, db = run(structures, faulty(mode), tmp_path / "f.db", "serial", retry_failed=True)
    assert retried.n_failed == len(bad) and db.count() == len(structures)


def test_worker_that_exits_is_recorded_failed_without_losing_others(tmp_path):
    structures = make_structures(6)  # every worker death costs a process start
    summary, db = run(structures, faulty("exit"), tmp_path / "x.db", chunk_size=4)
    bad = {len(a) == 8 for a in structures}
    assert bad == {True, False}
    labels = labels_by_skey(db)
    assert len(labels) == len(structures)
    failed = list(db.select(status="failed"))
    assert len(failed) == sum(len(a) == 8 for a in structures) == summary.n_failed
    assert all(row.reason == "worker process died (exit code 3)" for row in failed)
    _, ref = run(structures, EMT, tmp_path / "ref.db", "serial")
    ref_labels = labels_by_skey(ref)
    ok = {k: v for k, v in labels.items() if v[0] == "ok"}
    assert ok and all(ref_labels[k] == v for k, v in ok.items())


def test_killed_worker_task_is_rerun_once(tmp_path, structures):
    marker = tmp_path / "killed"
    summary, db = run(structures, faulty("kill_once", marker=str(marker)), tmp_path / "k.db")
    assert marker.exists(), "the teacher never killed its worker"
    assert summary.n_failed == 0 and summary.n_labelled == len(structures)
    _, ref = run(structures, EMT, tmp_path / "ref.db", "serial")
    assert labels_by_skey(db) == labels_by_skey(ref)


def test_teacher_that_cannot_be_built_stops_the_run(tmp_path, structures):
    broken = TeacherSpec("ase", "distill.testing:FaultyEMT", (), {"mode": "raise"})
    with pytest.raises(TeacherBuildError, match="FaultyEMT"):
        run(structures, broken, tmp_path / "b.db")
    assert open_store(tmp_path / "b.db").count() == 0


def test_positions_one_ulp_apart_are_different_structures(tmp_path):
    a = make_structures(1)[0]
    b = a.copy()
    b.positions[0, 0] = np.nextafter(b.positions[0, 0], np.inf)
    summary, _ = run([a, b], EMT, tmp_path / "u.db", "serial")
    assert summary.n_labelled == 2


def test_workers_are_recycled_and_single_threaded(tmp_path, structures):
    def processes(recycle: int) -> dict[int, str]:
        folder = tmp_path / f"pids{recycle}"
        folder.mkdir()
        spec = TeacherSpec("ase", "distill.testing:RecordingEMT", (), {"folder": str(folder)})
        summary, _ = run(
            structures, spec, tmp_path / f"r{recycle}.db", chunk_size=2, recycle=recycle
        )
        assert summary.n_labelled == len(structures)
        return {int(p.name): p.read_text() for p in folder.iterdir()}

    kept, recycled = processes(100), processes(2)
    assert len(kept) == 2 and 3 <= len(recycled) <= 6  # 6 chunks, at most 2 per process
    assert os.getpid() not in kept.keys() | recycled.keys()
    assert set(kept.values()) == set(recycled.values()) == {"1"}  # OMP_NUM_THREADS
