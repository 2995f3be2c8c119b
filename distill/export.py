"""Export labelled rows of a store: extended XYZ (REF_* keys) and MLIP `.cfg`.

extxyz: ``REF_energy`` (eV) and ``REF_stress`` (6, eV/Å³, ASE Voigt xx yy zz yz xz xy; periodic
cells only) in the info line, ``REF_forces`` (eV/Å) per atom, plus ``uid``, ``teacher``,
``source``, ``parent`` and ``split`` where set — the layout `gap_fit` and the mtpjax fitter read.

`.cfg`: through `mtpjax.io.cfg.write_cfg`; types are indices into `species`, ``PlusStress`` is
−stress·V (eV), the uid and teacher go into ``Feature`` lines.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from distill.store import select_labelled

PROVENANCE = ("uid", "teacher", "source", "parent", "split")


def _labelled_atoms(row) -> Atoms:
    atoms = Atoms(numbers=row.numbers, positions=row.positions, cell=row.cell, pbc=row.pbc)
    atoms.info["REF_energy"] = float(row.energy)
    if row.get("stress") is not None:
        atoms.info["REF_stress"] = np.array(row.stress, dtype=np.float64)
    atoms.arrays["REF_forces"] = np.array(row.forces, dtype=np.float64)
    for key in PROVENANCE:
        if key in row:
            atoms.info[key] = row[key]
    return atoms


def export_extxyz(
    db, path: Path | str, teacher_id: str | None = None, split: str | None = None
) -> int:
    """Write the labelled rows (optionally one teacher / split) to `path`; return the count."""
    frames = [_labelled_atoms(row) for row in select_labelled(db, teacher_id, split)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, frames, format="extxyz")
    return len(frames)


def export_cfg(
    db,
    path: Path | str,
    species: list[str],
    teacher_id: str | None = None,
    split: str | None = None,
) -> int:
    """Write the labelled rows to an MLIP `.cfg` with types indexing `species`; return count."""
    from mtpjax.io.cfg import Configuration, write_cfg

    index = {symbol: i for i, symbol in enumerate(species)}
    configs = []
    for row in select_labelled(db, teacher_id, split):
        atoms = row.toatoms()
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(index))
        if unknown:
            raise ValueError(f"export {path}: row {row.id} has species {unknown} not in {species}")
        pbc = np.array(atoms.pbc, dtype=bool)
        stress = row.get("stress")
        plus = None
        if stress is not None and pbc.all():
            plus = -np.asarray(stress, dtype=np.float64) * atoms.get_volume()
        configs.append(
            Configuration(
                positions=atoms.positions.copy(),
                types=np.array([index[s] for s in atoms.get_chemical_symbols()]),
                cell=atoms.cell.array.copy() if pbc.any() else None,
                pbc=pbc,
                energy=float(row.energy),
                forces=np.array(row.forces, dtype=np.float64),
                plus_stress=plus,
                features={"uid": row.uid, "teacher": row.teacher},
            )
        )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_cfg(path, configs)
    return len(configs)
