"""Shared fixtures: small rattled Cu cells (EMT is the cheap teacher) and teacher specs."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from distill.teachers import TeacherSpec

EMT = TeacherSpec("ase", "ase.calculators.emt:EMT")


def require_extra(module: str, extra: str):
    """Import an optional third-party extra the test suite needs; fail (never skip) without it.

    ``make test`` installs ``.[test,quippy,dask]``, so a missing extra is a broken environment.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is required by the test suite: pip install -e '.[{extra}]' "
                          f"(make test installs .[test,quippy,dask])") from exc


def make_structures(n: int = 12, seed: int = 0) -> list[Atoms]:
    """`n` rattled fcc Cu cells of 4, 8 or 12 atoms, plus (every 5th) a non-periodic cluster."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((1 + i % 3, 1, 1))
        if i % 5 == 4:
            atoms.pbc = False
            atoms.center(vacuum=4.0)
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        out.append(atoms)
    return out


def faulty(mode: str, n_atoms: int = 8, marker: str = "") -> TeacherSpec:
    """EMT that misbehaves (`mode`) on the 8-atom cells (see distill.testing)."""
    kwargs = {"n_atoms": n_atoms, "mode": mode, "marker": marker}
    return TeacherSpec("ase", "distill.testing:FaultyEMT", (), kwargs)


def labels_by_skey(db) -> dict:
    """skey -> (status, energy, forces, stress) of every row; asserts one row per skey."""
    out = {}
    for row in db.select(include_data=False):
        assert row.skey not in out, f"structure {row.skey} stored twice"
        stress = row.get("stress")
        out[row.skey] = (
            row.status,
            row.get("energy"),
            None if row.get("forces") is None else row.forces.tobytes(),
            None if stress is None else np.asarray(stress).tobytes(),
        )
    return out


@pytest.fixture
def structures() -> list[Atoms]:
    return make_structures()
