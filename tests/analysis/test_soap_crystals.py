import numpy as np
import pytest
from ase.units import GPa

from md.analysis import (
    average_soap,
    bond_list,
    build_crystal,
    canonical_name,
    coordination_numbers,
    crystal_names,
    fixed_references,
    kernel,
    pressure_adjusted_references,
    pressure_grid,
    similarity,
)
from md.analysis.calculators import stillinger_weber_si
from md.analysis.soap import SoapSettings

# Coordination within 2.85 Å of each reference as built (documents and guards the geometry).
EXPECTED_COORDINATION = {
    "diamond": {4}, "beta-Sn": {6}, "sh": {8}, "Imma": {8}, "Cmca": {10, 11},
    "hcp": {12}, "bct": {4}, "R8": {4},
}


def test_all_reference_crystals_build_with_sensible_geometry():
    assert crystal_names() == list(EXPECTED_COORDINATION)
    for name, expected in EXPECTED_COORDINATION.items():
        atoms = build_crystal(name)
        bonds = bond_list(atoms)
        assert set(coordination_numbers(bonds)) == expected, name
        assert bonds.lengths.min() > 2.2, name
        assert 10.0 < atoms.get_volume() / len(atoms) < 22.0, name


def test_crystal_names_are_case_insensitive_with_aliases():
    assert canonical_name("DIAMOND") == "diamond"
    assert canonical_name("beta_sn") == "beta-Sn"
    assert canonical_name("Si-XII") == "R8"


def test_unknown_crystal_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown crystal 'wurtzite-ish'.*diamond"):
        build_crystal("wurtzite-ish")


def test_self_similarity_is_one(rattled):
    assert similarity(rattled, rattled) == pytest.approx(1.0, abs=1e-12)


def test_similarity_is_rotation_invariant(rattled):
    rotated = rattled.copy()
    rotated.rotate(37.0, (1.0, 2.0, 3.0), rotate_cell=True)
    assert similarity(rattled, rotated) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", ["diamond", "sh", "beta-Sn"])
def test_similarity_is_supercell_invariant(name):
    unit = build_crystal(name)
    assert similarity(unit, unit.repeat((2, 3, 4))) == pytest.approx(1.0, abs=1e-6)


def test_diamond_and_sh_are_dissimilar():
    assert similarity(build_crystal("diamond"), build_crystal("sh")) < 0.9


def test_kernel_uses_zeta():
    p, q = np.array([1.0, 0.0]), np.array([1.0, 1.0])
    assert kernel(p, q, zeta=4) == pytest.approx(0.25)
    assert kernel(p, q, zeta=1) == pytest.approx(np.sqrt(0.5))


def test_table_s1_settings():
    text = SoapSettings().descriptor_string(14)
    for item in ("cutoff=5.0", "cutoff_transition_width=2.0", "atom_sigma=0.5", "l_max=6",
                 "n_max=10", "average=T"):
        assert item in text
    assert SoapSettings().zeta == 4.0


def test_soap_rejects_two_species():
    atoms = build_crystal("diamond")
    atoms.numbers[0] = 6
    with pytest.raises(ValueError, match="one species"):
        average_soap(atoms)


def test_compressed_diamond_matches_pressure_adjusted_reference():
    calc = stillinger_weber_si()
    grids = pressure_adjusted_references(["diamond"], calc, pressure_grid(6.0, step=2.0),
                                         cell_filter="unit")
    grid = grids["diamond"]
    volumes = [s.get_volume() / len(s) for s in grid.structures]
    assert np.all(np.diff(volumes) < 0)  # denser with pressure
    for s, p in zip(grid.structures, grid.pressures, strict=True):
        s.calc = calc
        assert -s.get_stress()[:3].mean() / GPa == pytest.approx(p, abs=0.05)
    frame = build_crystal("diamond").repeat(2)
    frame.set_cell(frame.cell * 0.985, scale_atoms=True)  # a = 5.35 Å
    frame.calc = calc
    pressure = -frame.get_stress()[:3].mean() / GPa
    assert 2.0 < pressure < 6.0  # between grid points: interpolation is exercised
    fixed = similarity(frame, fixed_references(["diamond"])["diamond"].at(pressure))
    adjusted = similarity(frame, grid.at(pressure))
    assert adjusted == pytest.approx(1.0, abs=2e-4)
    assert adjusted > fixed + 5e-3
