"""Self-distillation: an mtpjax MTP as the teacher."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np

from distill.engine import label
from distill.store import open_store
from distill.teachers import parse_teacher, teacher_identity
from tests.distill.conftest import labels_by_skey

ROOT = Path(__file__).resolve().parents[2]
POT = ROOT / "tests/data/parity/si_L08/pot.mtp"


def test_mtp_teacher_pool_equals_serial(tmp_path):
    spec = parse_teacher(f"mtp:{POT}:Si")
    identity = teacher_identity(spec)
    assert identity["kind"] == "mtp" and identity["species"] == ["Si"]
    cells = ase.io.read(ROOT / "data/si_mlearn/test.xyz", index=":3")
    label(cells, spec, tmp_path / "serial.db", "serial", progress=False)
    # one chunk: a single worker process (each process pays the jit compilation)
    summary = label(cells, spec, tmp_path / "pool.db", workers=2, chunk_size=3, progress=False)
    assert summary.n_labelled == 3 and summary.n_failed == 0
    pool = labels_by_skey(open_store(tmp_path / "pool.db"))
    assert pool == labels_by_skey(open_store(tmp_path / "serial.db"))
    row = next(open_store(tmp_path / "pool.db").select())
    assert np.all(np.isfinite(row.forces)) and row.stress.shape == (6,)
