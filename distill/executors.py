"""Executors: run `label_chunk` tasks in-process, on local worker processes, or on Dask.

Every executor is a generator over a shared queue (a `collections.deque` of `Task`): it takes
tasks from the left, yields ``(task, outcome)`` as they finish, and keeps going until the queue
is empty and nothing is running. The caller may append tasks while iterating (retries). An
outcome is the list of (key, Label) from `label_chunk`, or a `WorkerLost` when the process
running the task died (the local pool knows exactly which task a dead worker held).

The local pool spawns (never forks) one process per worker with ``OMP_NUM_THREADS=1`` (also
OpenBLAS/MKL), gives each worker one task at a time through a pipe, and replaces a worker after
`recycle` tasks to contain memory growth (quippy). Workers exit when the parent dies (their pipe
closes), so a killed run leaves no orphans.

Dask: `connect` opens a `distributed.Client` on a scheduler address (one clean error line when
the address is malformed or nobody answers), `local_cluster` starts a `LocalCluster` of
single-threaded worker processes, and `labels_executor` turns a pipeline ``[labels]`` table
(``executor = "local" | "serial" | "dask"``, ``scheduler``, ``workers``) into the `executor`
argument of `distill.engine.label`. Workers of a `LocalCluster` exit when the process that
started them dies (Dask's worker processes watch their parent), so a killed run leaves no
orphans there either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import multiprocessing.connection
import os
import re
import signal
import time
import traceback
from collections import deque
from collections.abc import Iterator

from distill.compute import TeacherBuildError, label_chunk
from distill.teachers import TeacherSpec
from mtpjax.errors import InputError

SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclasses.dataclass
class Task:
    """A chunk of (store key, Atoms) pairs and how many times a worker died running it."""

    items: list
    attempts: int = 0


@dataclasses.dataclass(frozen=True)
class WorkerLost:
    """The worker running a task died. retry: whether running it again may help."""

    reason: str
    retry: bool = True


Outcome = list | WorkerLost


def run_serial(queue: deque, spec: TeacherSpec, teacher_id: str) -> Iterator[tuple[Task, Outcome]]:
    """Run every task in this process (the reference for bitwise comparisons)."""
    while queue:
        task = queue.popleft()
        yield task, label_chunk(spec, teacher_id, task.items)


def _worker_main(conn, spec: TeacherSpec, teacher_id: str) -> None:
    """Worker loop: receive a chunk, send back ("ok", labels); None or a closed pipe ends it."""
    os.environ.update(SINGLE_THREAD_ENV)
    while True:
        try:
            items = conn.recv()
        except (EOFError, OSError):
            return
        if items is None:
            return
        try:
            reply = ("ok", label_chunk(spec, teacher_id, items))
        except TeacherBuildError as exc:
            reply = ("error", f"{exc}\n{traceback.format_exc()}")
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


@contextlib.contextmanager
def _environ(update: dict):
    old = {k: os.environ.get(k) for k in update}
    os.environ.update(update)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclasses.dataclass(eq=False)
class _Worker:
    process: mp.process.BaseProcess
    conn: multiprocessing.connection.Connection
    task: Task | None = None
    done: int = 0


def _spawn(ctx, spec: TeacherSpec, teacher_id: str) -> _Worker:
    parent_end, child_end = ctx.Pipe()
    process = ctx.Process(target=_worker_main, args=(child_end, spec, teacher_id), daemon=True)
    with _environ(SINGLE_THREAD_ENV):  # inherited from the first instruction of the child
        process.start()
    child_end.close()  # the child holds the only other end: EOF for it when we die
    return _Worker(process, parent_end)


def _stop(worker: _Worker, kill: bool = False) -> None:
    with contextlib.suppress(OSError, BrokenPipeError):
        if kill:
            worker.process.kill()
        else:
            worker.conn.send(None)
    worker.process.join(timeout=10)
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join()
    worker.conn.close()


def _death_reason(process) -> str:
    process.join(timeout=5)
    code = process.exitcode
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"worker process killed by {signal.Signals(-code).name}"
    return f"worker process died (exit code {code})"


def run_local(
    queue: deque,
    spec: TeacherSpec,
    teacher_id: str,
    workers: int | None = None,
    recycle: int = 100,
) -> Iterator[tuple[Task, Outcome]]:
    """Run tasks on `workers` spawned processes (default: one per core), `recycle` tasks each.

    Raises TeacherBuildError when a worker cannot build the teacher.
    """
    n = workers or os.cpu_count() or 1
    if n < 1 or recycle < 1:
        raise ValueError(f"workers ({n}) and recycle ({recycle}) must be at least 1")
    ctx = mp.get_context("spawn")
    idle: list[_Worker] = []
    busy: list[_Worker] = []
    try:
        while queue or busy:
            while queue and len(busy) < n:
                worker = idle.pop() if idle else _spawn(ctx, spec, teacher_id)
                worker.task = queue.popleft()
                worker.conn.send(worker.task.items)
                busy.append(worker)
            ready = multiprocessing.connection.wait(
                [w.conn for w in busy] + [w.process.sentinel for w in busy]
            )
            for worker in [w for w in busy if w.conn in ready or w.process.sentinel in ready]:
                busy.remove(worker)
                task, worker.task = worker.task, None
                try:
                    status, payload = worker.conn.recv()
                except (EOFError, OSError):
                    reason = _death_reason(worker.process)
                    _stop(worker, kill=True)
                    yield task, WorkerLost(reason)
                    continue
                if status == "error":
                    raise TeacherBuildError(payload)
                worker.done += 1
                if worker.done >= recycle:
                    _stop(worker)
                else:
                    idle.append(worker)
                yield task, payload
    finally:
        for worker in busy + idle:
            _stop(worker, kill=worker in busy)


def run_dask(
    queue: deque,
    spec: TeacherSpec,
    teacher_id: str,
    client,
    in_flight: int | None = None,
    no_worker_timeout: float = 300.0,
    poll: float = 1.0,
) -> Iterator[tuple[Task, Outcome]]:
    """Run tasks on a Dask cluster through `client` (a `distributed.Client`).

    At most `in_flight` tasks are submitted at once (default 2 per worker thread, at least 4).
    Dask itself re-runs a task whose worker died; after `distributed.scheduler.allowed-failures`
    deaths it gives up (KilledWorker), which is reported as a WorkerLost not to be retried.
    A cluster left without workers for `no_worker_timeout` seconds (a LocalCluster stops
    restarting workers that keep dying) raises RuntimeError instead of waiting forever.
    """
    from distributed import KilledWorker, wait

    limit = in_flight or max(4, 2 * sum(client.nthreads().values()))
    tasks = {}
    idle_since = None

    def submit() -> None:
        task = queue.popleft()
        tasks[client.submit(label_chunk, spec, teacher_id, task.items, pure=False)] = task

    while queue or tasks:
        while queue and len(tasks) < limit:
            submit()
        try:
            done, _ = wait(list(tasks), timeout=poll, return_when="FIRST_COMPLETED")
        except TimeoutError:
            done = set()
        progressed = False
        for future in done:
            try:  # a result lost with its worker is recomputed: do not block on it
                outcome = future.result(timeout=poll)
            except TimeoutError:
                continue
            except KilledWorker as exc:
                outcome = WorkerLost(f"dask worker died running this task: {exc}", retry=False)
            progressed = True
            future.release()
            yield tasks.pop(future), outcome
        if progressed or client.nthreads():
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > no_worker_timeout:
            raise RuntimeError(
                f"the Dask cluster has had no workers for {no_worker_timeout:.0f} s "
                f"({len(tasks)} tasks waiting); labels made so far are stored: rerun to go on"
            )


#: comm schemes of a Dask scheduler address ``SCHEME://HOST:PORT``
DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")
#: seconds `connect` waits for a scheduler to answer
CONNECT_TIMEOUT_S = 30.0
_ADDRESS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<host>\[[0-9A-Fa-f:.]+\]|"
                      r"[A-Za-z0-9_.-]+):(?P<port>[0-9]+)/?")


class SchedulerError(InputError):
    """A Dask scheduler address that is malformed or that nobody answers at."""


def scheduler_address_problem(address: str) -> str:
    """Why `address` is not a Dask scheduler address ``SCHEME://HOST:PORT`` (SCHEME one of
    :data:`DASK_SCHEMES`, PORT 1..65535), or ``""`` when it is one. Syntax only: no network."""
    m = _ADDRESS.fullmatch(address.strip())
    expected = "expected SCHEME://HOST:PORT, e.g. tcp://node01:8786"
    if m is None:
        return f"{address!r} is not a scheduler address ({expected})"
    if m["scheme"].lower() not in DASK_SCHEMES:
        return (f"{address!r}: unknown scheme {m['scheme']!r} (Dask schemes: "
                f"{', '.join(DASK_SCHEMES)})")
    if not 1 <= int(m["port"]) <= 65535:
        return f"{address!r}: port {m['port']} out of range 1..65535"
    return ""


def connect(address: str, timeout: float | None = None):
    """A `distributed.Client` connected to the scheduler at `address`.

    Raises SchedulerError (one line, no traceback in the CLIs) when the address is malformed or
    no scheduler answers within `timeout` seconds (default :data:`CONNECT_TIMEOUT_S`).
    """
    from distributed import Client

    problem = scheduler_address_problem(address)
    if problem:
        raise SchedulerError(problem)
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    try:
        return Client(address.strip(), timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise SchedulerError(
            f"no Dask scheduler answered at {address} within {timeout:g} s ({exc}); is it "
            "running, and is this the address it printed?"
        ) from None


@contextlib.contextmanager
def local_cluster(workers: int | None = None):
    """A `distributed.LocalCluster` of `workers` worker processes (default: one per core), one
    thread each (quippy is not thread-safe), no dashboard; closed on exit."""
    from distributed import LocalCluster

    n = workers or os.cpu_count() or 1
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        yield cluster


@contextlib.contextmanager
def labels_executor(labels: dict):
    """The `executor` argument of `distill.engine.label` for a pipeline ``[labels]`` table.

    ``executor = "serial"``: in-process; ``"local"``: the spawned pool (``workers`` is passed to
    `label` separately); ``"dask"``: a Client on ``scheduler`` when given, else on a
    `local_cluster` of ``workers`` processes (0: one per core), closed on exit. An unreachable
    scheduler raises SchedulerError naming ``labels.scheduler``.
    """
    kind = labels["executor"]
    if kind in ("serial", "local"):
        yield "serial" if kind == "serial" else None
        return
    if kind != "dask":
        raise ValueError(f"labels.executor: expected 'local', 'serial' or 'dask', got {kind!r}")
    if labels.get("scheduler"):
        try:
            client = connect(labels["scheduler"])
        except SchedulerError as exc:
            raise SchedulerError(f"labels.scheduler: {exc.message}") from None
        with client:
            yield client
        return
    from distributed import Client

    with local_cluster(labels.get("workers") or None) as cluster, Client(cluster) as client:
        yield client


def _pool_worker_init() -> None:
    """Initialiser of :func:`process_pool` workers: one BLAS/OpenMP thread each (set before
    any library reads it), and exit when the parent dies (a killed pipeline leaves no worker
    writing into a run folder that the next run redoes)."""
    import threading

    os.environ.update(SINGLE_THREAD_ENV)
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def process_pool(workers: int):
    """A ``concurrent.futures`` pool of `workers` spawned (never forked) processes for the
    pipeline's independent sub-tasks (fits, MD runs); see :func:`_pool_worker_init`."""
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                               initializer=_pool_worker_init)
