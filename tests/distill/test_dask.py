"""The Dask path, on a LocalCluster of 2 single-threaded worker processes: labels equal serial
ones; a worker killed mid-run and a driver killed mid-run lose and duplicate nothing; bad or
unreachable scheduler addresses fail with one clean line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.engine import label
from distill.executors import (
    SchedulerError,
    connect,
    labels_executor,
    scheduler_address_problem,
)
from distill.store import open_store
from tests.distill.conftest import EMT, faulty, labels_by_skey, make_structures, require_extra
from tests.distill.test_crash_resume import _alive, _rows

distributed = require_extra("distributed", "dask")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster


def test_dask_equals_serial(tmp_path, structures, cluster):
    label(structures, EMT, tmp_path / "ref.db", "serial", progress=False)
    summary = label(
        structures, EMT, tmp_path / "d.db", cluster.scheduler_address, chunk_size=3, progress=False
    )
    assert summary.n_labelled == len(structures)
    assert labels_by_skey(open_store(tmp_path / "d.db")) == labels_by_skey(
        open_store(tmp_path / "ref.db")
    )


def test_dask_client_and_teacher_failures(tmp_path, structures, cluster):
    with distributed.Client(cluster) as client:
        summary = label(structures, faulty("raise"), tmp_path / "f.db", client, progress=False)
        workers = set(client.nthreads())
    assert len(workers) == 2
    assert summary.n_failed == sum(len(a) == 8 for a in structures) > 0
    assert summary.n_labelled + summary.n_failed == len(structures)
    assert open_store(tmp_path / "f.db").count() == len(structures)


def test_cluster_without_workers_raises_instead_of_hanging(tmp_path, structures):
    from collections import deque

    from distill.executors import Task, run_dask
    from distill.teachers import teacher_identity

    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty:
        with distributed.Client(empty) as client:
            queue = deque([Task([("uid", structures[0])])])
            tid = teacher_identity(EMT)["teacher_id"]
            with pytest.raises(RuntimeError, match="no workers for 1 s"):
                list(run_dask(queue, EMT, tid, client, no_worker_timeout=1.0, poll=0.2))


def test_worker_killed_mid_run_loses_and_duplicates_nothing(tmp_path, structures, cluster):
    """The first 8-atom structure SIGKILLs the Dask worker process running it (once, noted in
    a marker file); Dask reruns its tasks elsewhere: every structure is stored exactly once,
    with the labels of an uninterrupted serial run."""
    marker = tmp_path / "killed"
    with distributed.Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        summary = label(structures, faulty("kill_once", marker=str(marker)), tmp_path / "k.db",
                        client, chunk_size=2, progress=False)
    assert marker.exists(), "no worker was killed"
    killed = int(marker.read_text())
    assert killed in worker_pids and killed != os.getpid()
    assert not _alive(killed)
    assert (summary.n_labelled, summary.n_failed) == (len(structures), 0)
    label(structures, EMT, tmp_path / "ref.db", "serial", progress=False)
    db = open_store(tmp_path / "k.db")
    assert db.count() == len(structures)  # labels_by_skey also asserts one row per structure
    assert labels_by_skey(db) == labels_by_skey(open_store(tmp_path / "ref.db"))


def _parent(pid: int) -> int:
    """Parent pid of `pid` (Linux /proc)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


N_RESUME = 40
DRIVER = """
import sys
from distill.engine import label
from distill.executors import labels_executor
from distill.teachers import TeacherSpec
from tests.distill.conftest import make_structures
slow = TeacherSpec("ase", "distill.testing:SlowEMT", (), {"seconds": 0.1})
with labels_executor({"executor": "dask", "scheduler": "", "workers": 2}) as client:
    print("workers", *client.run(__import__("os").getpid).values(), flush=True)
    label(make_structures(%d), slow, sys.argv[1], client, chunk_size=2, progress=False)
"""


def test_sigkill_driver_then_resume(tmp_path, cluster):
    """The pipeline's Dask set-up (labels.executor = "dask", a LocalCluster of 2 workers started
    by the driver): SIGKILL the driver midway; its workers exit; a rerun on another cluster
    labels only what is missing, and the store holds every structure once, as without a kill."""
    root = Path(__file__).resolve().parents[2]
    db_path = tmp_path / "crash.db"
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER % N_RESUME, str(db_path)], cwd=root,
                            env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    assert line[:1] == ["workers"], f"driver did not start its cluster: {line}"
    workers = [int(p) for p in line[1:]]
    assert len(workers) == 2
    assert {_parent(p) for p in workers} == {proc.pid}, "the workers are not the driver's"
    deadline = time.time() + 60
    while _rows(db_path) < 6 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    interrupted = _rows(db_path)
    assert 6 <= interrupted < N_RESUME, f"kill came too late or too early ({interrupted} rows)"
    deadline = time.time() + 20
    while any(_alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "Dask workers outlived their killed driver"

    slow = make_structures(N_RESUME)
    summary = label(slow, EMT, tmp_path / "ref.db", "serial", progress=False)
    assert summary.n_labelled == N_RESUME
    from distill.teachers import TeacherSpec

    spec = TeacherSpec("ase", "distill.testing:SlowEMT", (), {"seconds": 0.1})
    resumed = label(slow, spec, db_path, cluster.scheduler_address, chunk_size=2, progress=False)
    assert resumed.n_skipped == interrupted
    assert resumed.n_labelled == N_RESUME - interrupted
    assert labels_by_skey(open_store(db_path)) == labels_by_skey(open_store(tmp_path / "ref.db"))


def test_labels_executor_kinds(cluster):
    with labels_executor({"executor": "serial", "workers": 0, "scheduler": ""}) as ex:
        assert ex == "serial"
    with labels_executor({"executor": "local", "workers": 2, "scheduler": ""}) as ex:
        assert ex is None
    table = {"executor": "dask", "workers": 0, "scheduler": cluster.scheduler_address}
    with labels_executor(table) as client:
        assert len(client.nthreads()) == 2
    assert client.status == "closed"


@pytest.mark.parametrize("address", ["tcp//node:8786", "node01", "tcp://node01",
                                     "http://node01:8786", "tcp://node01:99999", ""])
def test_bad_scheduler_addresses(address):
    assert scheduler_address_problem(address)
    with pytest.raises(SchedulerError, match="scheduler address|scheme|port"):
        connect(address)


@pytest.mark.parametrize("address", ["tcp://node01:8786", "tls://10.0.0.5:8786",
                                     "tcp://[::1]:8786", "ucx://gpu-3.cluster:13337"])
def test_good_scheduler_addresses(address):
    assert scheduler_address_problem(address) == ""


def test_unreachable_scheduler_is_one_clean_error(monkeypatch):
    import distill.executors as ex

    monkeypatch.setattr(ex, "CONNECT_TIMEOUT_S", 1.0)
    table = {"executor": "dask", "workers": 0, "scheduler": "tcp://127.0.0.1:9"}
    with pytest.raises(SchedulerError, match=r"^labels\.scheduler: no Dask scheduler answered "
                       r"at tcp://127\.0\.0\.1:9 within 1 s"):
        with labels_executor(table):
            pass
