"""Replicas of an MD protocol: run documents, seeds and folders (no MD run here; the tiny
pipeline test runs two replicas end to end)."""

from __future__ import annotations

from pathlib import Path

from distill.stages.physical import _md_doc, replica_runs

TABLE = {
    "structure": {"crystal": {"name": "diamond", "a_A": 5.43, "repeat": [1, 1, 1]}},
    "teacher_structure": {"crystal": {"name": "diamond", "a_A": 5.43, "repeat": [2, 2, 2]}},
    "run": {"timestep_fs": 1.0, "seed": 7},
    "stage": [{"name": "nvt", "ensemble": "nvt", "temperature_K": 500.0, "steps": 10}],
}


def test_one_run_keeps_the_protocol_as_written():
    """Without replicas (or replicas = 1): one run in the model's folder with the protocol's
    seed — the same document as before replicas existed, so earlier stamps stay valid."""
    assert replica_runs(TABLE) == [(0, "")]
    assert replica_runs({**TABLE, "replicas": 1}) == [(0, "")]
    doc = _md_doc({**TABLE, "replicas": 1}, Path("pot.mtp"), ["Si"], Path("out"), False)
    assert doc == _md_doc(TABLE, Path("pot.mtp"), ["Si"], Path("out"), False)
    assert "replicas" not in doc and "teacher_structure" not in doc
    assert doc["run"]["seed"] == 7


def test_replicas_get_their_own_seed_and_folder():
    table = {**TABLE, "replicas": 3}
    assert replica_runs(table) == [(0, "r0"), (1, "r1"), (2, "r2")]
    seeds = [_md_doc(table, Path("p"), ["Si"], Path("o"), teacher, r)["run"]["seed"]
             for r, _ in replica_runs(table) for teacher in (False, True)]
    assert seeds == [7, 7, 8, 8, 9, 9]  # student and teacher runs of a replica share its seed
    teacher = _md_doc(table, Path("p"), ["Si"], Path("o"), True, 2)
    assert teacher["structure"] == TABLE["teacher_structure"]
    no_seed = {k: v for k, v in table.items() if k != "run"}
    assert _md_doc(no_seed, Path("p"), ["Si"], Path("o"), False, 2)["run"]["seed"] == 2
    assert TABLE["run"]["seed"] == 7  # the protocol table itself is not modified
