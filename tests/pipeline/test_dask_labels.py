"""The pipeline's labels stage on Dask (labels.executor = "dask", a LocalCluster it starts)."""

from __future__ import annotations

from pathlib import Path

from distill import pipeline
from distill.engine import label
from distill.stages.data import load_teacher
from distill.store import open_store
from tests.distill.conftest import labels_by_skey, require_extra

require_extra("distributed", "dask")
TINY = Path(__file__).with_name("tiny.toml")
DATA = Path(__file__).resolve().parents[2] / "data"


def _config(tmp_path: Path, labels: str, name: str) -> Path:
    text = TINY.read_text().replace('"../../data', f'"{DATA}')
    text = text.replace('executor = "serial"', labels)
    text = text.replace("[run]\n", '[run]\nstages = ["teacher", "sample", "labels"]\n', 1)
    path = tmp_path / name
    path.write_text(text)
    return path


def test_labels_stage_on_a_local_dask_cluster(tmp_path):
    dask_cfg = _config(tmp_path, 'executor = "dask"\nworkers = 2', "dask.toml")
    res = pipeline.run(dask_cfg, tmp_path / "run", progress=False)
    assert res["labels"]["status"] == "done"
    # the same labels as in-process labelling, and switching executor redoes nothing
    serial_cfg = _config(tmp_path, 'executor = "serial"', "serial.toml")
    res = pipeline.run(serial_cfg, tmp_path / "run", progress=False)
    assert {v["status"] for v in res.values()} == {"skipped"}
    run = tmp_path / "run"
    db = open_store(run / "labels" / "store.db")
    frames = [row.toatoms() for row in db.select()]
    assert len(frames) > 0
    label(frames, load_teacher(run), tmp_path / "ref.db", "serial", progress=False)
    assert labels_by_skey(db) == labels_by_skey(open_store(tmp_path / "ref.db"))
