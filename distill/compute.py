"""Worker side of labelling: evaluate a teacher on a chunk of structures.

`label_chunk` is what every executor runs (in-process, in a spawned worker, on a Dask worker).
It builds the teacher's calculator once per process and thread and returns one `Label` per
structure. A teacher that raises or returns non-finite numbers gives a failed `Label` with the
reason; it never stops the chunk. A teacher that cannot be *built* raises `TeacherBuildError`,
which stops the whole run (every label would fail the same way).
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
from ase import Atoms

from distill.teachers import TeacherSpec, build_calculator

_LOCAL = threading.local()


class TeacherBuildError(RuntimeError):
    """The teacher's calculator could not be built in a worker."""


@dataclasses.dataclass(frozen=True)
class Label:
    """Teacher output for one structure.

    energy: eV. forces: (n, 3) eV/Å. stress: (6,) eV/Å³, ASE Voigt order xx yy zz yz xz xy,
    only for cells periodic in all three directions, else None. ok False: `reason` says why.
    """

    ok: bool
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    reason: str = ""


def bare(atoms: Atoms) -> Atoms:
    """The structure alone (numbers, positions, cell, pbc): what keys and labels depend on."""
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def label_atoms(atoms: Atoms, calc) -> Label:
    """Energy, forces and (periodic cells) stress of `atoms` from `calc`, or a failed Label.

    The calculator is reset first, so a label depends on the structure alone and not on what
    the worker labelled before (EMT, for one, keeps a neighbour list with a skin).
    """
    atoms = bare(atoms)
    if hasattr(calc, "reset"):
        calc.reset()
    atoms.calc = calc
    periodic = bool(atoms.pbc.all())
    try:
        energy = float(atoms.get_potential_energy())
        forces = np.array(atoms.get_forces(), dtype=np.float64)
        stress = np.array(atoms.get_stress(voigt=True), dtype=np.float64) if periodic else None
    except Exception as exc:  # any teacher error is a per-structure failure
        return Label(ok=False, reason=f"{type(exc).__name__}: {exc}"[:2000])
    bad = [
        name
        for name, value in (("energy", energy), ("forces", forces), ("stress", stress))
        if value is not None and not np.all(np.isfinite(value))
    ]
    if bad:
        return Label(ok=False, reason=f"non-finite {', '.join(bad)} from teacher")
    if forces.shape != (len(atoms), 3):
        return Label(ok=False, reason=f"teacher returned forces of shape {forces.shape}")
    return Label(ok=True, energy=energy, forces=forces, stress=stress)


def calculator_for(spec: TeacherSpec, teacher_id: str):
    """The calculator of `spec`, built once per process and thread (quippy is not thread-safe)."""
    cache = getattr(_LOCAL, "calcs", None)
    if cache is None:
        cache = _LOCAL.calcs = {}
    if teacher_id not in cache:
        try:
            cache[teacher_id] = build_calculator(spec)
        except Exception as exc:
            raise TeacherBuildError(
                f"cannot build teacher {spec.kind}:{spec.model}: {type(exc).__name__}: {exc}"
            ) from exc
    return cache[teacher_id]


def label_chunk(
    spec: TeacherSpec, teacher_id: str, items: list[tuple[str, Atoms]]
) -> list[tuple[str, Label]]:
    """Label `items` (pairs of store key and structure); return (key, Label) in input order."""
    calc = calculator_for(spec, teacher_id)
    return [(key, label_atoms(atoms, calc)) for key, atoms in items]
