"""Shared fixtures of the MD tests: the cheapest parity potential and small Si cells."""

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

ROOT = Path(__file__).resolve().parents[2]
POT = ROOT / "tests" / "data" / "parity" / "si_L08" / "pot.mtp"


@pytest.fixture(scope="session")
def pot_path() -> Path:
    return POT


def diamond(repeat=2, rattle=0.05, seed=1, a=5.43):
    atoms = bulk("Si", "diamond", a=a, cubic=True).repeat((repeat,) * 3)
    atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture
def si64():
    return diamond(2)


@pytest.fixture
def triclinic_si():
    """A small triclinic cell (shorter than 2× the cutoff: several images per pair)."""
    atoms = bulk("Si", "diamond", a=5.43)  # 2-atom primitive cell, 3.84 Å vectors
    atoms = atoms.repeat((2, 2, 1))
    rng = np.random.default_rng(3)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    return atoms
