"""Teacher MD written to disk as it runs, and resumed after a crash.

A teacher (GAP through quippy) makes ~10² atom-steps/s per core, so one 216-atom melt-quench
runs half an hour and a D1 run at the paper's size days. :func:`run_to_files` runs a
`distill.sampling.run_protocol` protocol and

* appends each thermo record to a CSV log (`distill.sampling` columns) and each snapshot to an
  extended-XYZ trajectory as they are made (flushed: a killed run keeps what it made);
* after each thermo record saves the run's :class:`~distill.sampling.ProtocolState` (positions,
  momenta, cell, random stream) atomically to a restart file (``.npz``) stamped with the run's
  key;
* started again with the same key, cuts the log and the trajectory back to the saved step and
  goes on from there: the finished files equal those of an uninterrupted run. A restart file
  with another key (a changed protocol, structure, seed or teacher), or none, starts the run
  over and removes the old files.

The teacher's RSS relaxations (a test set of ~10² cells relaxed one after the other) are
journalled the same way by :func:`rss_to_file`: each cell's outcome is appended as it is known,
and a restarted set relaxes only the cells that are missing.

Units as in `distill.sampling`: Å, fs, K, GPa, eV.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from distill import sampling, testsets

_STEP = re.compile(r"\bstep=(\d+)")


@dataclasses.dataclass(frozen=True)
class TeacherRun:
    """What :func:`run_to_files` leaves: every snapshot and thermo record of the whole run (also
    those made before a resume), the step it resumed from (0: a fresh run), and the steps and
    wall time (s) of this call."""

    snapshots: list[Atoms]
    thermo: list[sampling.MDRecord]
    resumed_from: int
    steps_run: int
    wall_s: float


def save_restart(path: Path, state: sampling.ProtocolState, key: str) -> None:
    """Write `state` and `key` to `path` (.npz) atomically (a temporary file renamed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, step=state.step, positions=state.positions, momenta=state.momenta,
             cell=state.cell, rng_state=json.dumps(state.rng_state), key=key)
    os.replace(tmp, path)


def load_restart(path: Path, key: str) -> sampling.ProtocolState | None:
    """The state saved in `path` when it carries `key`; None when there is none, it cannot be
    read, or it belongs to another run."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path) as f:
            if str(f["key"]) != key:
                return None
            return sampling.ProtocolState(int(f["step"]), f["positions"], f["momenta"],
                                          f["cell"], json.loads(str(f["rng_state"])))
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cut_thermo(path: Path, step: int) -> None:
    """Keep the header and the complete rows of steps ≤ `step` (rows written after the saved
    state, or half-written by a killed process, go)."""
    text = Path(path).read_text() if Path(path).is_file() else ""
    lines = text.split("\n")
    complete = lines[:-1]  # the text after the last newline is a half-written row or ""
    kept = [sampling.THERMO_HEADER] + [
        ln for ln in complete[1:] if ln and int(ln.split(",", 1)[0]) <= step]
    _write_atomic(Path(path), "\n".join(kept) + "\n")


def cut_trajectory(path: Path, step: int) -> None:
    """Keep the complete extended-XYZ frames whose ``step`` is ≤ `step`, byte for byte."""
    path = Path(path)
    lines = path.read_text().split("\n")[:-1] if path.is_file() else []
    kept, i = [], 0
    while i < len(lines):
        try:
            n = int(lines[i])
        except ValueError:
            break  # half-written
        block = lines[i:i + n + 2]
        if len(block) < n + 2:
            break
        found = _STEP.search(block[1])
        if found is None or int(found.group(1)) > step:
            break
        kept += block
        i += n + 2
    _write_atomic(path, "".join(ln + "\n" for ln in kept))


def progress_printer(label: str, total_steps: int, n_atoms: int) -> Callable:
    """An ``on_thermo`` callback printing a line on stderr at every tenth of the run (a worker
    process's stderr is the pipeline's)."""
    tenth = max(1, total_steps // 10)
    seen = {"last": -1}

    def show(r: sampling.MDRecord) -> None:
        if r.step // tenth != seen["last"] or r.step == total_steps:
            seen["last"] = r.step // tenth
            print(f"  {label}: step {r.step}/{total_steps}, {r.T:.0f} K, {r.P:.1f} GPa, "
                  f"{r.V / n_atoms:.2f} Å³/atom", file=sys.stderr, flush=True)

    return show


def run_to_files(
    atoms: Atoms,
    calc,
    stages: Sequence,
    *,
    trajectory: Path,
    thermo: Path,
    restart: Path,
    key: str,
    timestep_fs: float = 1.0,
    seed: int = 0,
    snapshot_every: int = 0,
    thermo_every: int = 10,
    snapshot_info: dict | None = None,
    progress: str | None = None,
) -> TeacherRun:
    """Run the protocol as :func:`distill.sampling.run_protocol` does (same arguments), writing
    as it goes (module docstring); `snapshot_info` is added to every snapshot's ``info``;
    `progress` labels a line on stderr every tenth of the run. `atoms` is the starting
    structure (its positions are replaced by the saved state's on a resume)."""
    trajectory, thermo, restart = Path(trajectory), Path(thermo), Path(restart)
    trajectory.parent.mkdir(parents=True, exist_ok=True)
    state = load_restart(restart, key)
    if state is None:
        for old in (trajectory, thermo, restart):
            old.unlink(missing_ok=True)
        thermo.write_text(sampling.THERMO_HEADER + "\n")
    else:
        cut_thermo(thermo, state.step)
        cut_trajectory(trajectory, state.step)
    n_atoms = len(atoms)
    total = sum(s.steps for s in stages)
    show = progress_printer(progress, total, n_atoms) if progress else None

    def on_thermo(record: sampling.MDRecord) -> None:
        with open(thermo, "a") as fh:
            fh.write(sampling.thermo_line(record, n_atoms) + "\n")
        if show is not None:
            show(record)

    def on_snapshot(snap: Atoms) -> None:
        import ase.io

        snap.info.update(snapshot_info or {})
        ase.io.write(trajectory, snap, format="extxyz", append=True)

    start = time.perf_counter()
    sampling.run_protocol(
        atoms, calc, stages, timestep_fs, seed, snapshot_every, thermo_every,
        on_snapshot=on_snapshot, on_thermo=on_thermo, start=state,
        state_every=thermo_every, on_state=lambda s: save_restart(restart, s, key))
    wall = time.perf_counter() - start
    import ase.io

    done_from = 0 if state is None else state.step
    frames = (ase.io.read(trajectory, index=":", format="extxyz")
              if trajectory.is_file() and trajectory.stat().st_size else [])
    return TeacherRun(frames, sampling.read_thermo(thermo), done_from, total - done_from, wall)


def _outcome_line(i: int, outcome) -> str:
    if isinstance(outcome, Atoms):
        return json.dumps({"i": i, "outcome": "relaxed", "numbers": outcome.numbers.tolist(),
                           "positions": outcome.positions.tolist(),
                           "cell": outcome.cell.array.tolist(), "info": outcome.info})
    return json.dumps({"i": i, "outcome": outcome})


def _outcome(record: dict):
    if record["outcome"] != "relaxed":
        return record["outcome"]
    atoms = Atoms(numbers=record["numbers"], positions=record["positions"],
                  cell=record["cell"], pbc=True)
    atoms.info.update(record["info"])
    return atoms


def read_rss_journal(path: Path, key: str) -> list:
    """The outcomes (relaxed Atoms, "failed" or "unbuilt") of the attempts recorded in the RSS
    journal `path` in order, if it belongs to `key`; [] when there is none, it is another
    run's, or it is unreadable. A half-written last line (a killed process) is left out."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text().split("\n")[:-1]  # after the last newline: half-written or ""
    try:
        if not lines or json.loads(lines[0]).get("key") != key:
            return []
    except json.JSONDecodeError:
        return []
    outcomes = []
    for n, line in enumerate(lines[1:]):
        try:
            record = json.loads(line)
            if record["i"] != n:
                break
            outcomes.append(_outcome(record))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            break
    return outcomes


def rss_to_file(calc, settings, *, journal: Path, key: str, seed: int = 0,
                progress: str | None = None) -> tuple[list[Atoms], dict]:
    """:func:`distill.testsets.rss_set` with every attempt's outcome appended to the JSON-lines
    `journal` as soon as it is known (first line: the run's key; floats written exactly).
    Started again with the same key, the recorded attempts are taken from the journal and the
    set goes on from the first missing one: the cells, statistics and journal equal those of an
    uninterrupted call. Another key, or none, starts over. `progress` labels a line on stderr
    per attempt. Returns what :func:`~distill.testsets.rss_set` returns."""
    journal = Path(journal)
    journal.parent.mkdir(parents=True, exist_ok=True)
    done = read_rss_journal(journal, key)
    _write_atomic(journal, "".join(ln + "\n" for ln in [json.dumps({"key": key})] + [
        _outcome_line(i, o) for i, o in enumerate(done)]))
    if done and progress:
        print(f"  {progress}: {len(done)}/{settings.n_structures} cells taken from {journal.name}",
              file=sys.stderr, flush=True)

    def on_result(i: int, outcome) -> None:
        with open(journal, "a") as fh:
            fh.write(_outcome_line(i, outcome) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if progress:
            what = "relaxed" if isinstance(outcome, Atoms) else outcome
            print(f"  {progress}: cell {i + 1}/{settings.n_structures} {what}",
                  file=sys.stderr, flush=True)

    return testsets.rss_set(calc, settings, seed=seed, done=done, on_result=on_result)
