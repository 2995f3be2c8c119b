"""The Dask path, on a LocalCluster of 2 single-threaded worker processes."""

from __future__ import annotations

import pytest

from distill.engine import label
from distill.store import open_store
from tests.distill.conftest import EMT, faulty, labels_by_skey

distributed = pytest.importorskip("distributed")


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
