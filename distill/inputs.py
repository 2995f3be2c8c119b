"""Reading structures to label, with errors that name the file (and line, for (ext)xyz)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ase.io
from ase import Atoms

from mtpjax.errors import InputError


class StructureFileError(InputError):
    """A structure file is missing, empty or cannot be parsed (``path``, ``line`` where known)."""


def iter_structures(path: Path | str, index: str = ":") -> Iterator[Atoms]:
    """The structures of one file (any ASE-readable format); `index` as in `ase.io.read`.

    Raises StructureFileError naming the file, and for (ext)xyz the line and frame where
    parsing failed.
    """
    path = Path(path)
    if not path.is_file():
        raise StructureFileError("structure file not found", path)
    if path.stat().st_size == 0:
        raise StructureFileError("no structures found (empty file)", path)
    xyz = path.suffix in (".xyz", ".extxyz")
    line, n = 1, 0
    try:
        for atoms in ase.io.iread(path, index=index):
            yield atoms
            n += 1
            line += len(atoms) + 2
    except StructureFileError:
        raise
    except Exception as exc:
        where = f"structure {n} (0-based, starting on this line)" if xyz else (
            f"structure {n} (0-based)")
        raise StructureFileError(f"{where}: cannot read it: {exc}", path,
                                 line if xyz else None) from exc
    if n == 0:
        raise StructureFileError("no structures found", path)


def read_structures(paths: list[Path | str], index: str = ":") -> list[Atoms]:
    """All structures of `paths`, in order; `atoms.info["source_file"]` names their file."""
    out = []
    for path in paths:
        for atoms in iter_structures(path, index):
            atoms.info["source_file"] = str(path)
            out.append(atoms)
    return out
