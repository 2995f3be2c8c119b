"""Stage stamps and atomic writes: what makes an interrupted pipeline resumable.

A stage (or a sub-task such as one fit) is done when its folder holds ``stamp.json`` whose
``key`` equals the sha256 of its inputs (its config section, the keys of the stages it reads,
hashes of external files). The stamp is written last and atomically, so a killed stage has no
stamp and is redone; a changed input gives a new key and the stage is redone.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from distill.hashing import json_sha256

STAMP = "stamp.json"


def stage_key(**inputs) -> str:
    """sha256 of the canonical JSON of the inputs."""
    return json_sha256(inputs)


def is_done(folder: Path, key: str) -> bool:
    """True when `folder` holds a stamp made with `key`."""
    stamp = Path(folder) / STAMP
    if not stamp.is_file():
        return False
    try:
        return json.loads(stamp.read_text()).get("key") == key
    except json.JSONDecodeError:
        return False


def read_stamp(folder: Path) -> dict:
    """The stamp of a finished stage (its key, timings and summary)."""
    return json.loads((Path(folder) / STAMP).read_text())


def write_stamp(folder: Path, key: str, seconds: float, summary: dict | None = None) -> dict:
    """Atomically write the stamp marking `folder` done with `key`."""
    stamp = {
        "key": key,
        "seconds": round(seconds, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "summary": summary or {},
    }
    write_json(Path(folder) / STAMP, stamp)
    return stamp


def clear_stamp(folder: Path) -> None:
    """Remove a stamp (the stage will be redone)."""
    (Path(folder) / STAMP).unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    """Atomic JSON write (indented, keys in insertion order)."""
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def write_extxyz(path: Path, frames) -> None:
    """Atomic extended-XYZ write of a list of Atoms."""
    import ase.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.xyz")
    ase.io.write(tmp, list(frames), format="extxyz")
    os.replace(tmp, path)


def read_frames(path: Path) -> list:
    """All frames of an extxyz file; [] for an empty file (an empty set)."""
    import ase.io

    return ase.io.read(path, index=":") if Path(path).stat().st_size else []
