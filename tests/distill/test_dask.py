"""The Dask path, on a LocalCluster of 2 single-threaded worker processes."""

from __future__ import annotations

import pytest

from distill.engine import label
from distill.store import open_store
from tests.distill.conftest import EMT, faulty, labels_by_skey, require_extra

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
