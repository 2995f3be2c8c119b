"""Content hashes: structures, files and JSON-able settings (all sha256, hex digests).

A structure's key depends only on (numbers, positions, cell, pbc), taken bit for bit as
int64 / float64 / bool arrays, so the same structure read from any file format gets the same
key, and a structure moved by one ulp gets a different one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def structure_key(atoms) -> str:
    """sha256 of an ASE Atoms' numbers, positions (Å), cell (Å) and pbc."""
    h = hashlib.sha256()
    for name, array, dtype in (
        ("numbers", atoms.numbers, np.int64),
        ("positions", atoms.positions, np.float64),
        ("cell", atoms.cell.array, np.float64),
        ("pbc", atoms.pbc, np.bool_),
    ):
        a = np.ascontiguousarray(array, dtype=dtype)
        h.update(f"{name}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def label_key(skey: str, teacher_id: str) -> str:
    """The store key of one label: sha256 of the structure key and the teacher id."""
    return hashlib.sha256(f"{skey}:{teacher_id}".encode()).hexdigest()


def file_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def json_sha256(obj) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
