"""ASE calculator: agreement with the core, ASE conventions, clear errors for bad input."""

import numpy as np
import pytest
from ase import Atoms

from mtpjax.calculator import MTPCalculator
from tests.conftest import PARITY
from tests.core.helpers import load_case, rattled_diamond


@pytest.fixture(scope="module")
def calc():
    return MTPCalculator(PARITY / "si_L08" / "pot.mtp", species=["Si"])


def test_calculator_reproduces_mlp_reference(calc):
    _, frames = load_case("si_L08")
    for k in (0, 25, 33):  # a DFT cell, the 2-atom cell, the non-periodic cluster
        f = frames[k]
        atoms = Atoms(
            "Si" * len(f["positions"]), positions=f["positions"], cell=f["cell"], pbc=f["pbc"]
        )
        atoms.calc = calc
        assert abs(atoms.get_potential_energy() - f["energy"]) / len(atoms) < 1e-9
        assert np.abs(atoms.get_forces() - f["forces"]).max() < 2e-6
        if f["stress"] is not None:
            assert np.abs(atoms.get_stress() - f["stress"]).max() * atoms.get_volume() < 2e-5
        energies = atoms.get_potential_energies()
        assert energies.shape == (len(atoms),)
        assert abs(energies.sum() - atoms.get_potential_energy()) < 1e-9


def test_stress_sign_follows_ase(calc):
    atoms = rattled_diamond(repeat=1, amplitude=0.0)
    atoms.calc = calc
    compressed = atoms.copy()
    compressed.set_cell(atoms.cell * 0.95, scale_atoms=True)
    compressed.calc = calc
    # compressed crystal pushes outwards: ASE stress negative (pressure = −trace/3 > 0)
    assert (
        -np.trace(compressed.get_stress(voigt=False)) / 3
        > -np.trace(atoms.get_stress(voigt=False)) / 3
    )
    assert np.trace(compressed.get_stress(voigt=False)) < 0


def test_repeated_calls_reuse_neighbour_list_and_stay_exact(calc):
    atoms = rattled_diamond(repeat=2, amplitude=0.05, seed=1)
    atoms.calc = calc
    e0 = atoms.get_potential_energy()
    atoms.positions[0] += 0.01
    e1 = atoms.get_potential_energy()
    fresh = atoms.copy()
    fresh.calc = MTPCalculator(PARITY / "si_L08" / "pot.mtp", species=["Si"], skin=0.0)
    assert e1 != e0 and abs(e1 - fresh.get_potential_energy()) < 1e-10


def test_float32_option_is_close(calc):
    atoms = rattled_diamond(repeat=2, amplitude=0.05, seed=2)
    atoms.calc = calc
    e64, f64 = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = MTPCalculator(PARITY / "si_L08" / "pot.mtp", species=["Si"], dtype="float32")
    assert abs(atoms.get_potential_energy() - e64) / len(atoms) < 1e-5
    assert np.abs(atoms.get_forces() - f64).max() < 1e-3


def test_bad_input_gives_clear_errors(calc, tmp_path):
    atoms = rattled_diamond(repeat=1)
    atoms[0].symbol = "C"
    atoms.calc = calc
    with pytest.raises(ValueError, match="element.*C.*not in"):
        atoms.get_potential_energy()
    nan_atoms = rattled_diamond(repeat=1)
    nan_atoms.positions[2, 1] = np.nan
    nan_atoms.calc = calc
    with pytest.raises(ValueError, match="NaN"):
        nan_atoms.get_potential_energy()
    flat = rattled_diamond(repeat=1)
    flat.set_cell(np.array([[5.0, 0, 0], [5.0, 0, 0], [0, 0, 5.0]]))
    flat.calc = calc
    with pytest.raises(ValueError, match="singular"):
        flat.get_potential_energy()
    with pytest.raises(ValueError, match="species_count"):
        MTPCalculator(PARITY / "si_L08" / "pot.mtp", species=["Si", "Ge"])
    with pytest.raises(FileNotFoundError):
        MTPCalculator(tmp_path / "nothing.mtp", species=["Si"])
    with pytest.raises(ValueError, match="type index"):
        calc.evaluator.compute(np.zeros((1, 3)), np.eye(3) * 5, np.ones(3, bool), [1])


def test_no_stress_for_a_cluster(calc):
    from ase.calculators.calculator import PropertyNotImplementedError as NoProperty

    cluster = rattled_diamond(repeat=1)
    cluster.pbc = False
    cluster.calc = calc
    assert np.isfinite(cluster.get_potential_energy())
    with pytest.raises(NoProperty):
        cluster.get_stress()
