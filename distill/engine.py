"""The labelling engine: `label(structures, teacher, store, executor)`.

The parent process hashes every structure, skips those the store already holds for this
teacher (labelled or failed), cuts the rest into chunks and hands them to an executor
(`distill.executors`): a local pool of spawned processes by default, ``"serial"`` for
in-process labelling, or Dask when given a scheduler address or a `distributed.Client`.
Each finished chunk is written to the store at once, in one transaction, by the parent only.

A chunk whose worker died is split into single structures and run again; a single structure
whose worker dies `max_attempts` times is stored as failed with the reason ("worker process
killed by SIGKILL", ...), so one poisonous structure costs neither the run nor its neighbours.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from distill import executors
from distill.compute import Label, bare
from distill.executors import Task, WorkerLost
from distill.hashing import label_key, structure_key
from distill.store import FAILED, Record, open_store, stored_uids, write_records
from distill.teachers import TeacherSpec, parse_teacher, teacher_identity


@dataclasses.dataclass(frozen=True)
class LabelSummary:
    """What a `label` call did. seconds: wall time; rates count this call's new rows only."""

    teacher_id: str
    n_input: int
    n_duplicates: int
    n_skipped: int
    n_labelled: int
    n_failed: int
    n_atoms: int
    seconds: float

    @property
    def labels_per_s(self) -> float:
        return (self.n_labelled + self.n_failed) / self.seconds if self.seconds else 0.0

    @property
    def atoms_per_s(self) -> float:
        return self.n_atoms / self.seconds if self.seconds else 0.0


def _runner(executor, workers, recycle):
    """Pick the executor generator for `executor` (None, "serial", an address, a Client)."""
    if executor is None or executor == "local":
        return lambda q, s, t: executors.run_local(q, s, t, workers=workers, recycle=recycle)
    if executor == "serial":
        return executors.run_serial
    if isinstance(executor, str):
        def run_on_address(q, s, t):
            with executors.connect(executor) as client:
                yield from executors.run_dask(q, s, t, client)

        return run_on_address
    if hasattr(executor, "submit") and hasattr(executor, "nthreads"):
        return lambda q, s, t: executors.run_dask(q, s, t, executor)
    raise TypeError(
        f"executor must be None, 'serial', a scheduler address or a Client: {executor!r}"
    )


def _plan(structures: Iterable, teacher_id: str, done: set[str]) -> tuple[dict, int, int]:
    """Hash the inputs; return ({uid: (skey, bare Atoms)} still to label, n_input, n_unique)."""
    todo, seen, n_input = {}, set(), 0
    for atoms in structures:
        n_input += 1
        skey = structure_key(atoms)
        uid = label_key(skey, teacher_id)
        if uid not in seen and uid not in done:
            todo[uid] = (skey, bare(atoms))
        seen.add(uid)
    return todo, n_input, len(seen)


def _after_worker_lost(task: Task, lost: WorkerLost, queue: deque, max_attempts: int):
    """Requeue a dead worker's task (split, or retried) and return None; or give up on it and
    return its failed label."""
    if len(task.items) > 1:
        queue.extend(Task([item]) for item in task.items)
        return None
    if lost.retry and task.attempts + 1 < max_attempts:
        queue.append(Task(task.items, task.attempts + 1))
        return None
    return [(task.items[0][0], Label(ok=False, reason=lost.reason))]


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="label", disable=not enabled, smoothing=0.1, dynamic_ncols=True)


def label(
    structures: Iterable,
    teacher: TeacherSpec | str,
    store,
    executor=None,
    *,
    workers: int | None = None,
    chunk_size: int = 4,
    recycle: int = 100,
    max_attempts: int = 2,
    source: str = "",
    parent: str = "",
    retry_failed: bool = False,
    progress: bool = True,
) -> LabelSummary:
    """Label `structures` (ASE Atoms) with `teacher` into `store` (path or `open_store` db).

    executor: None (local process pool, `workers` processes, default one per core, each
    replaced after `recycle` tasks), ``"serial"``, a Dask scheduler address
    (``"tcp://host:8786"``) or a `distributed.Client`. chunk_size: structures per task.
    source, parent: provenance written with each label. retry_failed: label again the
    structures stored as failed for this teacher (default: skip them like labelled ones).
    """
    spec = parse_teacher(teacher) if isinstance(teacher, str) else teacher
    identity = teacher_identity(spec)
    tid = identity["teacher_id"]
    db = open_store(store) if isinstance(store, str | Path) else store
    if chunk_size < 1 or max_attempts < 1:
        raise ValueError(f"chunk_size ({chunk_size}) and max_attempts ({max_attempts}) must be ≥ 1")
    start = time.perf_counter()

    done = stored_uids(db, tid) - (stored_uids(db, tid, FAILED) if retry_failed else set())
    todo, n_input, n_unique = _plan(structures, tid, done)
    items = [(uid, atoms) for uid, (_, atoms) in todo.items()]
    queue = deque(Task(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size))

    n_ok = n_failed = n_atoms = 0
    with _progress(len(items), progress) as bar:
        for task, outcome in _runner(executor, workers, recycle)(queue, spec, tid):
            if isinstance(outcome, WorkerLost):
                outcome = _after_worker_lost(task, outcome, queue, max_attempts)
                if outcome is None:
                    continue
            records = [
                Record(uid, todo[uid][0], todo[uid][1], lab, source, parent) for uid, lab in outcome
            ]
            write_records(db, records, identity)
            n_ok += sum(r.label.ok for r in records)
            n_failed += sum(not r.label.ok for r in records)
            n_atoms += sum(len(r.atoms) for r in records)
            bar.update(len(records))
            elapsed = max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(atoms_s=f"{n_atoms / elapsed:.3g}", failed=n_failed, refresh=False)
    return LabelSummary(
        teacher_id=tid,
        n_input=n_input,
        n_duplicates=n_input - n_unique,
        n_skipped=n_unique - len(items),
        n_labelled=n_ok,
        n_failed=n_failed,
        n_atoms=n_atoms,
        seconds=time.perf_counter() - start,
    )
