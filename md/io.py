"""MD output: thermo logs (CSV / JSON lines), trajectories (extxyz, ASE .traj), restart files.

Restart files are ``.npz`` written atomically (temporary file, fsync, ``os.replace``). They
record how far each output file had got, so that on resume the logs and trajectories are cut
back to the restart point and nothing is duplicated.

Per-process output (several processes, :mod:`md.runner` ``per_process_output``): process r
writes only the atoms whose rows it holds, each with its global atom id (0 … N−1), to
``trajectory.p{r}.extxyz`` (per-atom column ``id``) / ``trajectory.p{r}.traj`` (the id as the
atom's tag) and ``restart.parts/p{r}.npz`` (arrays ``ids``, ``positions``, ``velocities``,
``numbers`` of its atoms plus the replicated cell, thermostat, key). :func:`read_trajectory`
merges the parts (and a whole-system ``trajectory.{fmt}``) into one frame per step in atom
order; :func:`load_restart` reads ``restart.parts`` as one restart, so a run resumes on any
number of processes and devices.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mtpjax.errors import InputError

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
    """Appends frames to ``.extxyz`` and/or ``.traj`` files (one per format). With ``part``
    (the process index) the files are ``{stem}.p{part}.{fmt}`` and the frames are parts of the
    system whose global atom ids (int [n]) are passed to :meth:`write`."""

    def __init__(self, stem: str | Path, formats=("extxyz",), part: int | None = None):
        self.paths = {}
        self.part = part
        for f in formats:
            if f not in ("extxyz", "traj"):
                raise ValueError(f"trajectory format must be 'extxyz' or 'traj', got {f!r}")
            self.paths[f] = Path(f"{stem}.{f}" if part is None else f"{stem}.p{part}.{f}")

    def write(self, atoms: Atoms, ids=None) -> None:
        """Append ``atoms``; ``ids`` (int [n], part files only): their global atom ids, stored
        as the extxyz column ``id`` and as the .traj tags."""
        import ase.io
        from ase.io.trajectory import Trajectory

        if (ids is None) != (self.part is None):
            raise ValueError("atom ids go with part files (and only with them)")
        for fmt, path in self.paths.items():
            a = atoms
            if ids is not None:
                a = atoms.copy()
                a.calc = atoms.calc
                if fmt == "extxyz":
                    a.new_array(ID_COLUMN, np.asarray(ids, np.int64))
                else:
                    a.set_tags(np.asarray(ids, np.int64))
            if fmt == "extxyz":
                ase.io.write(path, a, format="extxyz", append=True)
            else:
                with Trajectory(path, "a") as traj:
                    traj.write(a)

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


def _frame_step(path: Path, offset: int) -> int:
    """``step`` of the extxyz frame starting at byte ``offset`` (from its comment line)."""
    from ase.io.extxyz import key_val_str_to_dict

    with open(path, "rb") as fh:
        fh.seek(offset)
        fh.readline()
        info = key_val_str_to_dict(fh.readline().decode())
    if "step" not in info:
        raise ValueError(f"{path}: a frame has no step in its comment line")
    return int(info["step"])


def truncate_frames_after(path: Path, last_step: int) -> None:
    """Drop the frames with ``info['step'] > last_step`` from an extxyz or .traj file (the
    frames are in step order)."""
    if not path.exists():
        return
    if path.suffix == ".traj":
        from ase.io.trajectory import Trajectory

        with Trajectory(path) as t:
            keep = 0
            for a in t:
                if int(a.info["step"]) > last_step:
                    break
                keep += 1
        truncate_frames(path, keep)
        return
    for k, offset in enumerate(_extxyz_offsets(path)):
        if _frame_step(path, offset) > last_step:
            truncate_frames(path, k)
            return


def trajectory_files(stem: str | Path) -> list[Path]:
    """The whole-system (``{stem}.{fmt}``) and per-process (``{stem}.p{r}.{fmt}``) trajectory
    files that exist, extxyz and .traj."""
    stem = Path(stem)
    out = []
    for fmt in ("extxyz", "traj"):
        whole = Path(f"{stem}.{fmt}")
        if whole.exists():
            out.append(whole)
        parts = [p for p in stem.parent.glob(f"{stem.name}.p*.{fmt}")
                 if p.name[len(stem.name) + 2:-len(fmt) - 1].isdigit()]
        out += sorted(parts, key=lambda p: int(p.name[len(stem.name) + 2:-len(fmt) - 1]))
    return out


def read_trajectory(path: str | Path, fmt: str = "extxyz") -> list[Atoms]:
    """One ASE Atoms per output step, in step order and atom order, from an output directory
    (or a trajectory stem such as ``runs/x/trajectory``, or one file): the whole-system file
    ``trajectory.{fmt}`` and the per-process parts ``trajectory.p{r}.{fmt}`` merged by step
    (the parts of a step are concatenated and sorted by global atom id; parts from runs with
    different process counts mix freely). Positions Å, velocities, forces (eV/Å), energy (eV)
    and stress as written; ``ValueError`` naming the file when a step's parts do not hold
    each atom exactly once."""
    import ase.io

    path = Path(path)
    if path.is_file():
        files, fmt = [path], path.suffix[1:]
    else:
        stem = path / "trajectory" if path.is_dir() else path
        files = [f for f in trajectory_files(stem) if f.suffix == f".{fmt}"]
        if not files:
            raise ValueError(f"{stem}.{fmt}: no trajectory files (whole or .p<rank>)")
    whole: dict[int, Atoms] = {}
    parts: dict[int, list[tuple[Path, Atoms]]] = {}
    for f in files:
        for a in ase.io.read(f, index=":", format="extxyz" if fmt == "extxyz" else "traj"):
            step = a.info["step"] = int(a.info["step"])
            if "part" in a.info:
                parts.setdefault(step, []).append((f, a))
            else:
                whole[step] = a
    frames = dict(whole)
    for step, group in parts.items():
        if step not in whole:
            frames[step] = _merge_parts(step, group, fmt)
    return [frames[k] for k in sorted(frames)]


def _merge_parts(step: int, group, fmt: str) -> Atoms:
    """One Atoms (atom order) of the parts ``group`` [(file, Atoms)] of one step."""
    ids = np.concatenate([a.arrays[ID_COLUMN] if fmt == "extxyz" else a.get_tags()
                          for _, a in group]).astype(np.int64)
    n = int(group[0][1].info.get("n_atoms", len(ids)))
    if len(ids) != n or not np.array_equal(np.sort(ids), np.arange(n)):
        names = ", ".join(sorted({str(f) for f, _ in group}))
        raise ValueError(f"{names}: step {step}: the parts hold {len(ids)} atom ids, not each "
                         f"of the {n} atoms once (missing or stale part files?)")
    order = np.argsort(ids)
    first = group[0][1]

    def cat(get):
        return np.concatenate([get(a) for _, a in group])[order]

    atoms = Atoms(numbers=cat(lambda a: a.numbers), positions=cat(lambda a: a.positions),
                  cell=first.cell, pbc=first.pbc)
    if all(a.has("momenta") for _, a in group):
        atoms.set_velocities(cat(lambda a: a.get_velocities()))
    if first.calc is not None:
        results = first.calc.results
        forces = cat(lambda a: a.calc.results["forces"]) if "forces" in results else None
        atoms.calc = SinglePointCalculator(atoms, energy=results.get("energy"),
                                           forces=forces, stress=results.get("stress"))
    atoms.info.update({k: v for k, v in first.info.items()
                       if k not in ("part", "n_parts", "n_atoms")})
    return atoms


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
    """(arrays, meta) from a restart file, or from a folder of per-process restart parts
    (:func:`load_restart_parts`); :class:`~mtpjax.errors.InputError` naming the file when
    it is missing, unreadable (truncated, not an npz) or lacks its metadata."""
    path = Path(path)
    if path.is_dir():
        return load_restart_parts(path)
    if not path.is_file():
        raise InputError("no such restart file", path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
            meta = json.loads(str(z["__meta__"]))
        step = int(meta["step"])
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    missing = [k for k in (*PER_ATOM, *REPLICATED) if k not in arrays]
    if missing:
        raise InputError(f"restart file without {', '.join(missing)}", path)
    meta["step"] = step
    return arrays, meta


def _unreadable(path: Path, exc: Exception) -> InputError:
    return InputError(f"cannot read restart file ({type(exc).__name__}: {exc})", path)


#: the per-atom extxyz column of the global atom ids in per-process trajectory files
ID_COLUMN = "id"
#: folder of per-process restart files (``p{rank}.npz``) in an output directory
RESTART_PARTS = "restart.parts"
#: per-atom arrays of a restart (rows in atom order in a whole restart, by ``ids`` in a part)
PER_ATOM = ("positions", "velocities", "numbers")
#: the arrays of the whole system in every restart (file or part)
REPLICATED = ("cell", "chain_xi", "chain_v", "key", "bath")


def save_restart_part(folder: str | Path, part: int, n_parts: int, ids, arrays: dict,
                      meta: dict) -> Path:
    """Write process ``part``'s restart ``folder/p{part}.npz`` atomically: ``ids`` (int [n],
    global atom ids) and ``arrays`` (the :data:`PER_ATOM` arrays of those atoms, rows as
    ``ids``, and the replicated ones: cell, thermostat, key); ``meta`` gets ``part`` and
    ``n_parts``. Part 0 also removes parts ≥ ``n_parts`` left by a run on more processes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"p{part}.npz"
    save_restart(path, {"ids": np.asarray(ids, np.int64), **arrays},
                 {**meta, "part": int(part), "n_parts": int(n_parts)})
    if part == 0:
        for stale in folder.glob("p*.npz"):
            k = stale.stem[1:]
            if k.isdigit() and int(k) >= n_parts:
                stale.unlink(missing_ok=True)
    return path


def load_restart_parts(folder: str | Path) -> tuple[dict, dict]:
    """(arrays, meta) of a whole restart (per-atom arrays in atom order) from the per-process
    parts ``folder/p0.npz … p{n−1}.npz``; :class:`~mtpjax.errors.InputError` naming the file
    when a part is missing or unreadable, lacks ``ids`` or a per-atom array (or their rows
    differ), the parts are of different steps or do not hold each atom exactly once."""
    folder = Path(folder)
    first, meta = load_restart(folder / "p0.npz")
    try:
        n_parts, n_atoms = int(meta["n_parts"]), int(meta["n_atoms"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"not a restart part (no n_parts / n_atoms in its metadata: {exc})",
                         folder / "p0.npz") from exc
    step = meta["step"]
    parts = [_part_rows(folder / "p0.npz", first)]
    for k in range(1, n_parts):
        arrays, other = load_restart(folder / f"p{k}.npz")
        if other["step"] != step:
            raise InputError(f"part p{k}.npz is of step {other['step']}, p0.npz of step "
                             f"{step} (a run stopped while writing its restart?)", folder)
        parts.append(_part_rows(folder / f"p{k}.npz", arrays))
    ids = np.concatenate([p["ids"] for p in parts])
    if len(ids) != n_atoms or not np.array_equal(np.sort(ids), np.arange(n_atoms)):
        raise InputError(f"the {n_parts} restart parts hold {len(ids)} atom ids, not each of "
                         f"the {n_atoms} atoms once", folder)
    arrays = {k: v for k, v in first.items() if k not in PER_ATOM and k != "ids"}
    for k in PER_ATOM:
        rows = np.concatenate([p[k] for p in parts])
        out = np.empty_like(rows)
        out[ids] = rows
        arrays[k] = out
    meta = {k: v for k, v in meta.items() if k not in ("part", "n_parts")}
    meta.setdefault("frames", {})
    return arrays, meta


def _part_rows(path: Path, arrays: dict) -> dict:
    """``arrays`` of the restart part ``path`` after checking that it has integer ``ids`` [n]
    and the :data:`PER_ATOM` arrays with n rows each (InputError naming ``path``)."""
    if "ids" not in arrays:
        raise InputError("restart part without ids", path)
    ids = arrays["ids"]
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"restart part ids must be integers [n], got {ids.dtype} "
                         f"{list(ids.shape)}", path)
    for k in PER_ATOM:
        if len(arrays[k]) != len(ids):
            raise InputError(f"restart part has {len(ids)} ids but {len(arrays[k])} rows of "
                             f"{k}", path)
    return arrays


def restart_step(path: str | Path) -> int | None:
    """Step of a restart file or parts folder (None when there is none; InputError naming
    the file when it is unreadable)."""
    path = Path(path)
    target = path / "p0.npz" if path.is_dir() else path
    if not target.is_file():
        return None
    try:  # the metadata only (a part of a large run is large)
        with np.load(target, allow_pickle=False) as z:
            return int(json.loads(str(z["__meta__"]))["step"])
    except Exception as exc:
        raise _unreadable(target, exc) from exc


def latest_restart(output_dir: str | Path) -> Path | None:
    """The newer (by step) of ``restart.npz`` and ``restart.parts`` in ``output_dir`` (a run
    resumed on another number of processes may have left both), or None."""
    out = Path(output_dir)
    found = [(s, k, p) for k, p in enumerate((out / "restart.npz", out / RESTART_PARTS))
             if (s := restart_step(p)) is not None]
    return max(found, key=lambda t: (t[0], -t[1]))[2] if found else None
