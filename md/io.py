"""MD output: thermo logs (CSV / JSON lines), trajectories (extxyz, ASE .traj), restart files.

Restart files are ``.npz`` written atomically (temporary file, fsync, ``os.replace``). They
record how far each output file had got, so that on resume the logs and trajectories are cut
back to the restart point and nothing is duplicated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

#: Thermo columns in file order, with units: step, fs, K, GPa, Å³, eV, eV, eV.
THERMO_COLUMNS = ("step", "time_fs", "T_K", "P_GPa", "V_A3", "E_pot", "E_tot", "conserved")


class ThermoLog:
    """Append-only thermo log; ``.csv`` (with header) or ``.jsonl``; flushed per row."""

    def __init__(self, path: str | Path, extra_columns: tuple[str, ...] = ()):
        self.path = Path(path)
        self.columns = THERMO_COLUMNS + tuple(extra_columns)
        self.jsonl = self.path.suffix.lower() in (".jsonl", ".json", ".ndjson")
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._fh = open(self.path, "a")
        if new and not self.jsonl:
            self._fh.write(",".join(self.columns) + "\n")
            self._fh.flush()

    def write(self, row: dict) -> None:
        values = {k: row[k] for k in self.columns}
        if self.jsonl:
            self._fh.write(json.dumps({k: _py(v) for k, v in values.items()}) + "\n")
        else:
            self._fh.write(",".join(_fmt(values[k]) for k in self.columns) + "\n")
        self._fh.flush()

    def size(self) -> int:
        self._fh.flush()
        return self.path.stat().st_size

    def close(self) -> None:
        self._fh.close()


def _py(v):
    return int(v) if isinstance(v, (int, np.integer)) else float(v)


def _fmt(v) -> str:
    return str(int(v)) if isinstance(v, (int, np.integer)) else f"{float(v):.10g}"


def frame_atoms(positions, cell, numbers, velocities=None, energy=None, forces=None,
                stress_voigt=None, info: dict | None = None) -> Atoms:
    """ASE Atoms of one MD frame (velocities Å/fs are stored in ASE units)."""
    from ase.units import fs

    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
    if velocities is not None:
        atoms.set_velocities(np.asarray(velocities) / fs)
    if energy is not None:
        atoms.calc = SinglePointCalculator(atoms, energy=float(energy), forces=forces,
                                           stress=stress_voigt)
    atoms.info.update(info or {})
    return atoms


class TrajectoryWriter:
    """Appends frames to ``.extxyz`` and/or ``.traj`` files (one per format)."""

    def __init__(self, stem: str | Path, formats=("extxyz",)):
        self.paths = {}
        for f in formats:
            if f not in ("extxyz", "traj"):
                raise ValueError(f"trajectory format must be 'extxyz' or 'traj', got {f!r}")
            self.paths[f] = Path(f"{stem}.{f}")

    def write(self, atoms: Atoms) -> None:
        import ase.io
        from ase.io.trajectory import Trajectory

        for fmt, path in self.paths.items():
            if fmt == "extxyz":
                ase.io.write(path, atoms, format="extxyz", append=True)
            else:
                with Trajectory(path, "a") as traj:
                    traj.write(atoms)

    def frame_counts(self) -> dict[str, int]:
        return {fmt: count_frames(path) for fmt, path in self.paths.items()}


def count_frames(path: Path) -> int:
    if not path.exists():
        return 0
    if path.suffix == ".traj":
        from ase.io.trajectory import Trajectory

        with Trajectory(path) as t:
            return len(t)
    return sum(1 for _ in _extxyz_offsets(path))


def _extxyz_offsets(path: Path):
    """Byte offset of each frame of an (ext)xyz file."""
    with open(path, "rb") as fh:
        while True:
            start = fh.tell()
            line = fh.readline()
            if not line.strip():
                return
            n = int(line)
            for _ in range(n + 1):
                fh.readline()
            yield start


def truncate_frames(path: Path, n_frames: int) -> None:
    """Keep the first ``n_frames`` frames of an extxyz or .traj file."""
    if not path.exists():
        return
    if path.suffix == ".traj":
        from ase.io.trajectory import Trajectory

        with Trajectory(path) as t:
            if len(t) <= n_frames:
                return
            frames = [t[i] for i in range(n_frames)]
        tmp = path.with_suffix(".traj.tmp")
        with Trajectory(tmp, "w") as out:
            for a in frames:
                out.write(a)
        os.replace(tmp, path)
        return
    offsets = list(_extxyz_offsets(path))
    if len(offsets) > n_frames:
        with open(path, "r+b") as fh:
            fh.truncate(offsets[n_frames])


def truncate_thermo(path: Path, last_step: int) -> None:
    """Drop thermo rows with step > ``last_step`` (rows written after the restart point)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = []
    jsonl = path.suffix.lower() in (".jsonl", ".json", ".ndjson")
    for n, line in enumerate(lines):
        if not jsonl and n == 0:
            keep.append(line)
            continue
        if not line.strip():
            continue
        step = json.loads(line)["step"] if jsonl else int(float(line.split(",")[0]))
        if step <= last_step:
            keep.append(line)
    atomic_write_text(path, "".join(keep))


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_restart(path: str | Path, arrays: dict, meta: dict) -> None:
    """Write ``arrays`` (numpy) and JSON ``meta`` to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, __meta__=np.asarray(json.dumps(meta)), **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_restart(path: str | Path) -> tuple[dict, dict]:
    """(arrays, meta) from a restart file; ``ValueError`` naming the file when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such restart file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
            meta = json.loads(str(z["__meta__"]))
    except Exception as exc:
        raise ValueError(f"{path}: cannot read restart file ({type(exc).__name__}: {exc})") \
            from exc
    return arrays, meta
