"""SIGKILL the labelling parent midway, rerun: every structure once, same labels as no crash."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from distill.engine import label
from distill.store import open_store
from distill.teachers import TeacherSpec
from tests.distill.conftest import EMT, labels_by_skey, make_structures

ROOT = Path(__file__).resolve().parents[2]
N = 40
SCRIPT = """
import sys
from distill.engine import label
from distill.teachers import TeacherSpec
from tests.distill.conftest import make_structures
slow = TeacherSpec("ase", "distill.testing:SlowEMT", (), {"seconds": 0.05})
label(make_structures(%d), slow, sys.argv[1], workers=2, chunk_size=2, progress=False)
"""


def _rows(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    try:
        with sqlite3.connect(db_path, timeout=1) as con:
            return con.execute("select count(*) from systems").fetchone()[0]
    except sqlite3.Error:
        return 0


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_parent_then_rerun(tmp_path):
    db_path = tmp_path / "crash.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT % N, str(db_path)], cwd=ROOT, env=env)
    deadline = time.time() + 60
    while _rows(db_path) < 6 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    workers = _children(proc.pid)
    can_list = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists()
    assert workers or not can_list, "no worker processes seen"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted = _rows(db_path)
    assert 6 <= interrupted < N, f"kill came too late or too early ({interrupted} rows)"

    deadline = time.time() + 10
    while any(_alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "workers outlived their killed parent"

    slow = TeacherSpec("ase", "distill.testing:SlowEMT", (), {"seconds": 0.05})
    summary = label(make_structures(N), slow, db_path, workers=2, chunk_size=2, progress=False)
    assert summary.n_skipped == _rows(db_path) - summary.n_labelled >= interrupted
    label(make_structures(N), EMT, tmp_path / "ref.db", "serial", progress=False)
    resumed, ref = (
        labels_by_skey(open_store(db_path)),
        labels_by_skey(open_store(tmp_path / "ref.db")),
    )
    assert len(resumed) == N
    assert resumed == ref
