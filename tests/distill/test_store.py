"""Store provenance, splits reproducible from a seed, extxyz and .cfg exports."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest

from distill.engine import label
from distill.export import export_cfg, export_extxyz
from distill.splits import assign_splits, parse_fractions
from distill.store import open_store, select_labelled
from mtpjax.io.cfg import read_cfg
from tests.distill.conftest import EMT, faulty, make_structures


@pytest.fixture
def db(tmp_path):
    label(
        make_structures(20),
        faulty("raise"),
        tmp_path / "s.db",
        "serial",
        progress=False,
        source="rattle",
        parent="unit-test",
    )
    return open_store(tmp_path / "s.db")


def test_provenance_and_identity(db):
    row = next(db.select(status="ok"))
    assert (row.source, row.parent, row.teacher_kind) == ("rattle", "unit-test", "ase")
    assert row.labelled_at.endswith("Z") and len(row.uid) == 64 and len(row.skey) == 64
    identity = db.get(id=row.id).data["teacher"]
    assert identity["teacher_id"] == row.teacher
    assert (
        identity["model"] == "distill.testing:FaultyEMT" and identity["kwargs"]["mode"] == "raise"
    )


def test_store_name_must_be_db(tmp_path):
    with pytest.raises(ValueError, match="labels.json"):
        open_store(tmp_path / "labels.json")


def test_splits_reproducible_disjoint_and_seeded(db):
    n_ok = db.count(status="ok")
    counts = assign_splits(db, {"train": 0.6, "validation": 0.2, "test": 0.2}, seed=3)
    assert sum(counts.values()) == n_ok and counts["train"] == round(0.6 * n_ok)
    first = {row.uid: row.split for row in select_labelled(db)}
    assign_splits(db, {"train": 0.6, "validation": 0.2, "test": 0.2}, seed=4)
    other = {row.uid: row.split for row in select_labelled(db)}
    assign_splits(db, {"train": 0.6, "validation": 0.2, "test": 0.2}, seed=3)
    again = {row.uid: row.split for row in select_labelled(db)}
    assert first == again != other
    assert db.metadata["splits"]["seed"] == 3
    assert all("split" not in row for row in db.select(status="failed"))


def test_parse_fractions():
    assert parse_fractions("0.8,0.1,0.1") == {"train": 0.8, "validation": 0.1, "test": 0.1}
    assert parse_fractions("train=1,test=1") == {"train": 1.0, "test": 1.0}
    with pytest.raises(ValueError, match="bad split"):
        parse_fractions("0.5,0.5")


def test_extxyz_export_round_trip(db, tmp_path):
    assign_splits(db, seed=0)
    n = export_extxyz(db, tmp_path / "out.xyz")
    frames = ase.io.read(tmp_path / "out.xyz", index=":")
    rows = {row.uid: row for row in select_labelled(db)}
    assert n == len(frames) == len(rows) == db.count(status="ok")
    for atoms in frames:
        ref = rows[atoms.info["uid"]]
        assert np.allclose(atoms.positions, ref.positions, atol=1e-7)
        assert atoms.info["REF_energy"] == pytest.approx(ref.energy, abs=1e-10)
        assert np.allclose(atoms.arrays["REF_forces"], ref.forces, atol=1e-7)
        if ref.pbc.all():
            assert np.allclose(atoms.info["REF_stress"], ref.stress, atol=1e-10)
        else:
            assert "REF_stress" not in atoms.info
        assert atoms.info["split"] in ("train", "validation", "test")
    assert export_extxyz(db, tmp_path / "test.xyz", split="test") == len(
        list(select_labelled(db, split="test"))
    )


def test_cfg_export(db, tmp_path):
    n = export_cfg(db, tmp_path / "out.cfg", ["Cu"])
    configs = read_cfg(tmp_path / "out.cfg")
    rows = {row.uid: row for row in select_labelled(db)}
    assert n == len(configs) == len(rows)
    for conf in configs:
        row = rows[conf.features["uid"]]
        assert conf.energy == pytest.approx(row.energy, abs=1e-9)
        assert np.allclose(conf.forces, row.forces, atol=1e-9)
        assert (conf.stress is None) == (not row.pbc.all())
        if conf.stress is not None:
            assert np.allclose(conf.stress, row.stress, atol=1e-9)
    with pytest.raises(ValueError, match="not in"):
        export_cfg(db, tmp_path / "bad.cfg", ["Si"])


def test_uninterrupted_serial_store_has_no_duplicates(tmp_path):
    cells = make_structures(6)
    label(cells + cells, EMT, tmp_path / "d.db", "serial", progress=False)
    assert open_store(tmp_path / "d.db").count() == 6
