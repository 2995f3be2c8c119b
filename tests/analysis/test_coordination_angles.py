import itertools

import numpy as np
import pytest
from ase import Atoms

from md.analysis import (
    angle_distribution,
    bond_angles,
    bond_list,
    build_crystal,
    coordination_fractions,
    coordination_numbers,
)

TETRAHEDRAL = np.degrees(np.arccos(-1.0 / 3.0))  # 109.4712°


def test_perfect_diamond_is_fourfold_and_tetrahedral(diamond):
    bonds = bond_list(diamond)
    cn = coordination_numbers(bonds)
    fr = coordination_fractions(cn)
    assert fr == {"N3": 0.0, "N4": 100.0, "N5": 0.0}
    dist = angle_distribution(bond_angles(bonds))
    assert dist.count == 6 * len(diamond)  # C(4, 2) angles per atom
    assert dist.mean == pytest.approx(TETRAHEDRAL, abs=1e-6)
    assert round(dist.mean, 2) == 109.47
    assert dist.std < 1e-6


def test_rattling_broadens_the_angle_distribution(diamond, rattled):
    sharp = angle_distribution(bond_angles(bond_list(diamond)))
    broad = angle_distribution(bond_angles(bond_list(rattled)))
    assert broad.std > 2.0 > sharp.std
    assert broad.mean == pytest.approx(TETRAHEDRAL, abs=1.0)


def test_histogram_uses_quarter_degree_bins_and_is_normalised(rattled):
    dist = angle_distribution(bond_angles(bond_list(rattled)))
    assert dist.edges.size == 721
    assert np.allclose(np.diff(dist.edges), 0.25)
    assert (dist.density * 0.25).sum() == pytest.approx(1.0)


def _brute_force_angles(atoms, cutoff):
    """Reference: explicit loops over atoms and periodic images (small cells only)."""
    angles = []
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3))) @ np.asarray(atoms.cell)
    pos = atoms.positions
    for i in range(len(atoms)):
        vecs = [pos[j] + s - pos[i] for j in range(len(atoms)) for s in shifts]
        vecs = [v for v in vecs if 1e-8 < np.linalg.norm(v) < cutoff]
        for a, b in itertools.combinations(vecs, 2):
            c = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
            angles.append(np.degrees(np.arccos(np.clip(c, -1, 1))))
    return np.sort(angles)


def test_vectorised_angles_match_brute_force():
    atoms = build_crystal("diamond")
    atoms.positions += np.random.default_rng(3).normal(0.0, 0.25, atoms.positions.shape)
    fast = np.sort(bond_angles(bond_list(atoms, 2.7)))
    slow = _brute_force_angles(atoms, 2.7)
    assert fast.shape == slow.shape and fast.size > 0
    assert np.allclose(fast, slow)


def test_coordination_class_filter_selects_centres():
    # sh Si: 2 neighbours at c = 2.380 Å and 6 at a = 2.547 Å -> 8-fold with the 2.85 Å cutoff
    sh = build_crystal("sh").repeat((2, 2, 2))
    bonds = bond_list(sh)
    cn = coordination_numbers(bonds)
    assert set(cn) == {8}
    assert bond_angles(bonds, cn == 5).size == 0
    assert bond_angles(bonds, cn == 8).size == 28 * len(sh)
    # a shorter cutoff keeps only the two axial neighbours: one 180° angle per atom
    axial = bond_angles(bond_list(sh, 2.45))
    assert np.allclose(axial, 180.0) and axial.size == len(sh)


def test_fractions_count_each_class():
    cn = np.array([3, 4, 4, 4, 5, 5, 6, 4, 4, 4])
    assert coordination_fractions(cn) == {"N3": 10.0, "N4": 60.0, "N5": 20.0}
    assert coordination_fractions(cn, classes=(6,)) == {"N6": 10.0}


def test_cutoff_is_configurable(diamond):
    # second neighbours of diamond are at a/√2 = 3.84 Å: 4 + 12 = 16 within 4 Å
    assert set(coordination_numbers(bond_list(diamond, 4.0))) == {16}


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="no atoms"):
        bond_list(Atoms())
    with pytest.raises(ValueError, match="cutoff must be positive"):
        bond_list(build_crystal("diamond"), 0.0)
    with pytest.raises(ValueError, match="empty frame"):
        coordination_fractions(np.array([], dtype=int))


def test_cluster_without_cell_has_bonds():
    dimer_chain = Atoms("Si3", positions=[[0, 0, 0], [2.3, 0, 0], [4.6, 0, 0]])
    cn = coordination_numbers(bond_list(dimer_chain))
    assert cn.tolist() == [1, 2, 1]
    assert np.allclose(bond_angles(bond_list(dimer_chain)), [180.0])
