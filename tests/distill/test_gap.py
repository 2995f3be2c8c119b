"""The GAP teacher: a tiny `gap_fit` (seconds), its cache, and labelling with it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import ase.io
import pytest

from distill.engine import label
from distill.gap_fit import STAMP_NAME, GapSettings, accuracy, cache_key, fit_gap, model_files
from distill.store import open_store
from distill.teachers import TeacherSpec, teacher_identity
from tests.distill.conftest import labels_by_skey, require_extra

require_extra("quippy", "quippy")

DATA = Path(__file__).resolve().parents[2] / "data" / "si_mlearn"
TINY = dataclasses.replace(GapSettings(), soap_sparse=30, l_max=4, n_max=4, two_body_sparse=10)


@pytest.fixture(scope="module")
def tiny_gap(tmp_path_factory):
    """A GAP fitted in ~3 s on 5 small training cells; returns (train file, out dir, stamp)."""
    folder = tmp_path_factory.mktemp("gap")
    cells = [a for a in ase.io.read(DATA / "train.xyz", index=":") if len(a) <= 16][:3]
    train = folder / "train.xyz"
    ase.io.write(train, cells + ase.io.read(DATA / "train.xyz", index=":2"))
    stamp = fit_gap(train, folder / "model", TINY)
    return train, folder / "model", stamp


def test_fit_is_cached_until_inputs_change(tiny_gap, tmp_path):
    train, out, stamp = tiny_gap
    assert not stamp["cached"] and stamp["fit_seconds"] > 0
    assert fit_gap(train, out, TINY)["cached"]
    assert cache_key(train, dataclasses.replace(TINY, soap_sparse=31)) != stamp["key"]
    copy = tmp_path / "train.xyz"
    copy.write_text(train.read_text().replace("Si ", "Si  ", 1))
    assert cache_key(copy, TINY) != stamp["key"]
    saved = json.loads((out / STAMP_NAME).read_text())
    assert sorted(saved["model_files"]) == [p.name for p in model_files(out)]
    assert len(saved["model_files"]) == 3  # gap.xml + two sparse-point files
    (out / STAMP_NAME).write_text(json.dumps({**saved, "model_files": {}}))
    assert not fit_gap(train, out, TINY)["cached"]  # a tampered stamp forces a refit


def test_refit_keeps_the_teacher_id(tiny_gap, tmp_path):
    """gap_fit stamps a new label (a timestamp) and its paths into every XML it writes."""
    train, out, _ = tiny_gap
    fit_gap(train, tmp_path / "again", TINY)
    specs = [TeacherSpec("gap", str(folder / "gap.xml")) for folder in (out, tmp_path / "again")]
    assert (out / "gap.xml").read_bytes() != (tmp_path / "again" / "gap.xml").read_bytes()
    assert teacher_identity(specs[0])["teacher_id"] == teacher_identity(specs[1])["teacher_id"]


def test_fit_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.xyz"):
        fit_gap(tmp_path / "missing.xyz", tmp_path / "out")
    bad = tmp_path / "bad.xyz"
    bad.write_text("this is not an xyz file\n")
    with pytest.raises(RuntimeError, match="gap_fit failed"):
        fit_gap(bad, tmp_path / "out", TINY)
    assert not (tmp_path / "out" / STAMP_NAME).exists()


def test_accuracy_report(tiny_gap):
    _, out, _ = tiny_gap
    acc = accuracy(out / "gap.xml", DATA / "test.xyz")
    assert acc["n_cells"] == 25 and acc["n_atoms"] == 1525
    assert 0 < acc["energy_mae_mev_per_atom"] < 1e3 and 0 < acc["force_rmse_ev_per_a"] < 10


def test_gap_pool_labels_equal_serial(tiny_gap, tmp_path):
    _, out, _ = tiny_gap
    gap = TeacherSpec("gap", str(out / "gap.xml"))
    assert len(teacher_identity(gap)["files"]) == 3
    cells = ase.io.read(DATA / "test.xyz", index=":6")
    label(cells, gap, tmp_path / "serial.db", "serial", progress=False)
    summary = label(cells, gap, tmp_path / "pool.db", workers=2, chunk_size=2, progress=False)
    assert summary.n_labelled == 6
    pool, serial = (
        labels_by_skey(open_store(tmp_path / "pool.db")),
        labels_by_skey(open_store(tmp_path / "serial.db")),
    )
    assert all(v[3] is not None for v in pool.values())  # periodic: stress labelled
    assert pool == serial
