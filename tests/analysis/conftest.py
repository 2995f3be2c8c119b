"""Shared structures for the md.analysis tests."""

import numpy as np
import pytest

from md.analysis.crystals import build_crystal

A_SI = 5.431  # Å, the diamond lattice constant of md.analysis.crystals


@pytest.fixture
def diamond():
    """Perfect diamond Si, 3×3×3 conventional cells (216 atoms)."""
    return build_crystal("diamond").repeat(3)


@pytest.fixture
def rattled(diamond):
    """Diamond with Gaussian displacements of 0.1 Å per component (fixed seed)."""
    atoms = diamond.copy()
    atoms.positions += np.random.default_rng(7).normal(0.0, 0.1, atoms.positions.shape)
    return atoms
