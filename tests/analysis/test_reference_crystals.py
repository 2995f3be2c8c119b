"""Each reference crystal relaxed at 0 GPa with the shipped level-16 MTP (data/potentials, fitted
by `mlp` to the mlearn PBE set) and compared with the DFT values cited in md/analysis/crystals.py.

DFT values: :data:`md.analysis.crystals.DFT_REFERENCES` — PW91 (CASTEP, 250 eV), the reference
method of the paper's teacher GAP-18, read from the libAtoms silicon-testing-framework (the
paper's zenodo.1250555); for diamond also the PBE cell of the mlearn set the potential was
fitted to (a = 10.9375/2 Å, checked against data/si_mlearn in `test_mlearn_reference_cell`);
and :data:`md.analysis.crystals.DFT_GPAW` — our own PBE (GPAW) relaxations made in this project
(benchmarks/dft_crystals.py, benchmarks/results/dft_crystals.json; not literature), the only DFT
values of R8, Cmca and bct4, compared in the ``*_gpaw`` tests below as volume ratios to the same
run's diamond and energies above it, with the same tolerances. There DFT keeps the space group
it starts in; where the MTP does not (R8 → BC8, Cmca → sh), that is asserted as a structural
miss.

The relaxation keeps the starting space group (``FixSymmetry``), as the DFT E(V) scans did
(``symmetrize=True``); a cell may still gain symmetry, which is how Imma and Cmca become sh and
R8 becomes BC8 (Ia-3) with this potential. Those are compared with the DFT value of the structure
they relax into (PW91); bct4 has no literature DFT value and is checked here for what it is
(four-fold, above diamond, below the metallic phases) and against our PBE in the *_gpaw tests.

Tolerances: the mlearn training set holds diamond-derived cells only (ground state, strains,
surfaces, vacancies, AIMD), so every other phase is an extrapolation, and PBE (fit) and PW91
(reference) differ by about half a percent in the diamond volume (20.45 vs 20.36 Å³/atom).
We ask for the volume per atom within VOLUME_TOL = 3 % and the energy above diamond within
ENERGY_TOL = 0.04 eV/atom (a few times the MTP's in-domain energy error, for out-of-domain
phases). Measured when this test was written (MTP vs PW91): V/atom diamond 20.44 vs 20.36,
β-Sn 15.31 vs 15.39, sh 15.17 vs 15.14, BC8 (from R8) 18.84 vs 18.43, hcp 15.31 vs 14.50;
ΔE (eV/atom) β-Sn 0.323 vs 0.322, sh 0.316 vs 0.344, BC8 0.147 vs 0.163, hcp 0.583 vs 0.561;
bct4 21.60 Å³/atom, 0.144 eV/atom. Documented misses, asserted as such so that a change shows:
the hcp volume is 5.6 % too large (its c/a, 1.76, is within the 0.1 step of the PW91 c/a scan's
minimum at 1.7, so the shape is right and the size is not), and β-Sn and sh (0.022 eV/atom apart
in DFT) come out in the opposite order, 0.007 eV/atom apart.

The two DFT-relaxed Imma cells (:data:`md.analysis.crystals.DFT_RELAXED_CELLS`, PW91, from the
same repository's re-relaxed random-search minima; DFT keeps one at sh and one at β-Sn) are
relaxed the same way and compared with volume ratios to the same run's diamond and energies
above it. Measured (MTP vs PW91): the sh-like cell V/V_dia 0.742 vs 0.745, ΔE 0.316 vs 0.344;
the β-Sn-like cell V/V_dia 0.742 vs 0.756 (−1.8 %), ΔE 0.316 vs 0.320. Both pass the
tolerances above, but the β-Sn-like cell passes only because β-Sn and sh are close in volume
and energy: the MTP turns it into sh (P6/mmm), the same minimum as the other cell, where DFT
keeps the two 0.023 eV/atom apart. Documented miss, asserted as such: along the Imma path the
MTP has no β-Sn minimum.
"""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.constraints import FixSymmetry
from ase.spacegroup.symmetrize import check_symmetry

from md.analysis.bonds import bond_list
from md.analysis.coordination import coordination_numbers
from md.analysis.crystals import (
    BC8,
    DFT_GPAW,
    DFT_HCP_C_OVER_A,
    DFT_REFERENCES,
    DFT_RELAXED_CELLS,
    build_crystal,
    build_dft_cell,
    build_spec,
    crystal_names,
)
from md.analysis.references import relax_at_pressure

ROOT = Path(__file__).resolve().parents[2]
POT = ROOT / "data" / "potentials" / "si_L16_mlp.mtp"
GPAW_RESULT = ROOT / "benchmarks" / "results" / "dft_crystals.json"
PBE_DIAMOND_A = 10.9375 / 2  # Å, mlearn "Elastic" reference cell (2×2×2) / 2
PBE_DIAMOND_V = PBE_DIAMOND_A**3 / 8  # 20.45 Å³/atom
VOLUME_TOL = 0.03  # relative
ENERGY_TOL = 0.04  # eV/atom

#: crystal -> (DFT structure it is compared with after relaxation, ITA number after relaxation,
#: coordination numbers within the 2.85 Å bond cutoff after relaxation).
OUTCOME = {
    "diamond": ("diamond", 227, {4}),
    "beta-Sn": ("beta-Sn", 141, {6}),
    "sh": ("sh", 191, {8}),
    "Imma": ("sh", 191, {8}),  # relaxes into sh at 0 GPa
    "Cmca": ("sh", 191, {8}),  # relaxes into sh at 0 GPa
    "hcp": ("hcp", 194, {6}),  # stays hcp; out-of-plane neighbours at 2.86 Å, beyond 2.85 Å
    "bct": (None, 139, {4}),  # no literature DFT value (DFT_GPAW: test_*_gpaw)
    "R8": ("bc8", 206, {4}),  # relaxes into BC8 (Ia-3)
}
KNOWN_VOLUME_MISS = {"hcp": (1.03, 1.08)}  # MTP/DFT volume ratio observed: 1.056


@pytest.fixture(scope="module")
def calc():
    import jax

    jax.config.update("jax_enable_x64", True)
    from mtpjax.calculator import MTPCalculator

    return MTPCalculator(str(POT), species=["Si"])


@pytest.fixture(scope="module")
def relaxed(calc):
    """name -> (relaxed Atoms, V in Å³/atom, E in eV/atom), computed once per module."""
    cache: dict[str, tuple] = {}

    def get(name):
        """``name``: a reference crystal, ``bc8`` or a :data:`DFT_RELAXED_CELLS` entry."""
        if name not in cache:
            if name in DFT_RELAXED_CELLS:
                atoms = build_dft_cell(name)
            elif name == "bc8":
                atoms = build_spec(BC8)
            else:
                atoms = build_crystal(name)
            atoms.set_constraint(FixSymmetry(atoms, symprec=1e-3))
            out = relax_at_pressure(atoms, calc, 0.0, fmax=2e-3, steps=300, cell_filter="unit")
            out.set_constraint()
            cache[name] = (out, out.get_volume() / len(out), out.info["energy_eV"] / len(out))
        return cache[name]

    return get


def _dft_delta(key):
    return DFT_REFERENCES[key].energy_above(DFT_REFERENCES["diamond"])


def test_mlearn_reference_cell():
    """The PBE value quoted above is the unstrained cell of the mlearn elastic set."""
    frames = ase.io.read(ROOT / "data" / "si_mlearn" / "train.xyz", ":")
    strained = [a for a in frames if a.info["config_type"] == "Elastic"]
    edges = np.concatenate([a.cell.cellpar()[:3] for a in strained])
    values, counts = np.unique(np.round(edges, 4), return_counts=True)
    assert values[np.argmax(counts)] == pytest.approx(2 * PBE_DIAMOND_A, abs=1e-4)


def test_every_crystal_has_an_expected_outcome():
    assert set(OUTCOME) == set(crystal_names())
    assert {key for key, _, _ in OUTCOME.values() if key} <= set(DFT_REFERENCES)


def test_diamond_volume_matches_mlearn_pbe(relaxed):
    _, volume, _ = relaxed("diamond")
    assert volume == pytest.approx(PBE_DIAMOND_V, rel=0.01)


@pytest.mark.parametrize("name", list(OUTCOME))
def test_reference_crystal_against_dft(name, relaxed):
    key, spacegroup, coordination = OUTCOME[name]
    atoms, volume, energy = relaxed(name)
    delta = energy - relaxed("diamond")[2]
    assert check_symmetry(atoms, 1e-2).number == spacegroup, name
    assert set(coordination_numbers(bond_list(atoms))) == coordination, name
    if key is None:  # bct4: four-fold, above diamond, below every metallic phase in DFT
        assert 0.0 < delta < min(_dft_delta(k) for k in ("beta-Sn", "sh", "hcp")), delta
        return
    ratio = volume / DFT_REFERENCES[key].volume
    lo, hi = KNOWN_VOLUME_MISS.get(name, (1 - VOLUME_TOL, 1 + VOLUME_TOL))
    assert lo < ratio < hi, (name, volume, DFT_REFERENCES[key].volume)
    assert delta == pytest.approx(_dft_delta(key), abs=ENERGY_TOL), (name, delta)
    if key != name and key in OUTCOME:  # relaxed into another reference crystal: same minimum
        assert energy == pytest.approx(relaxed(key)[2], abs=2e-3), name


def test_energy_ordering_matches_dft(relaxed):
    """DFT order: diamond < BC8 < {β-Sn, sh} < hcp; β-Sn and sh are near-degenerate."""
    e = {name: relaxed(name)[2] for name in ("diamond", "R8", "beta-Sn", "sh", "hcp")}
    assert _dft_delta("bc8") < min(_dft_delta("beta-Sn"), _dft_delta("sh"))
    assert max(_dft_delta("beta-Sn"), _dft_delta("sh")) < _dft_delta("hcp")
    assert e["diamond"] < e["R8"] < min(e["beta-Sn"], e["sh"])
    assert max(e["beta-Sn"], e["sh"]) < e["hcp"]
    # documented miss: DFT puts β-Sn 0.022 eV/atom below sh, the MTP puts it slightly above
    assert _dft_delta("beta-Sn") < _dft_delta("sh")
    assert 0.0 < e["beta-Sn"] - e["sh"] < ENERGY_TOL


def test_hcp_axial_ratio_matches_dft_scan(relaxed):
    """The hcp miss is in the volume, not the shape: c/a within one step of the PW91 scan."""
    atoms, _, _ = relaxed("hcp")
    a, _, c = atoms.cell.cellpar()[:3]
    best, step = DFT_HCP_C_OVER_A
    assert abs(c / a - best) < step, c / a


@pytest.mark.parametrize("name", list(DFT_RELAXED_CELLS))
def test_dft_relaxed_cell_transcription(name):
    """The Imma start cells rebuilt from their cited parameters have the stored cells' volume."""
    atoms = build_dft_cell(name)
    assert check_symmetry(atoms, 1e-3).number == DFT_RELAXED_CELLS[name].spacegroup
    assert atoms.get_volume() / len(atoms) == pytest.approx(DFT_RELAXED_CELLS[name].start_volume,
                                                            rel=1e-4)


@pytest.mark.parametrize("name", list(DFT_RELAXED_CELLS))
def test_dft_relaxed_imma_cell(name, relaxed):
    """Same start cell as the DFT relaxation: volume ratio to diamond and energy above it."""
    ref = DFT_RELAXED_CELLS[name]
    atoms, volume, energy = relaxed(name)
    _, diamond_volume, diamond_energy = relaxed("diamond")
    # documented: the MTP takes both Imma cells, the β-Sn-like one included, into sh
    assert check_symmetry(atoms, 1e-2).number == 191, name
    ratio = (volume / diamond_volume) / ref.volume_ratio
    assert 1 - VOLUME_TOL < ratio < 1 + VOLUME_TOL, (name, volume / diamond_volume)
    assert energy - diamond_energy == pytest.approx(ref.energy_above_diamond, abs=ENERGY_TOL), name


def test_dft_relaxed_imma_cells_ordering(relaxed):
    """DFT keeps the β-Sn-like cell 0.023 eV/atom below the sh-like one; the MTP merges them."""
    dft_gap = (DFT_RELAXED_CELLS["Imma-sh"].energy_above_diamond
               - DFT_RELAXED_CELLS["Imma-beta-Sn"].energy_above_diamond)
    assert dft_gap > 0.02
    # documented miss: one sh minimum for both cells in the MTP
    assert relaxed("Imma-sh")[2] == pytest.approx(relaxed("Imma-beta-Sn")[2], abs=2e-3)


# --- [DFT-GPAW]: this project's own PBE relaxations (benchmarks/dft_crystals.py) ------------------

#: DFT_GPAW key -> space group of the MTP relaxation (conventional cell, FixSymmetry) where it
#: differs from the DFT one: documented structural misses, asserted as such.
GPAW_STRUCTURE_MISS = {
    "R8": 206,  # DFT keeps R8; the MTP has no R8 minimum and ends in BC8
    "Cmca": 191,  # DFT keeps a seven-fold Cmce (Fmmm at 0.01 Å) minimum; the MTP ends in sh
}
#: DFT_GPAW key -> (lo, hi) of the observed MTP/DFT volume-ratio ratio, where it misses VOLUME_TOL.
GPAW_VOLUME_MISS = {"R8": (1.03, 1.05)}  # observed 1.034: BC8's volume, not R8's
#: DFT_GPAW key -> (lo, hi) of the observed MTP − DFT energy above diamond (eV/atom), where it
#: misses ENERGY_TOL.
GPAW_ENERGY_MISS = {"bct": (0.04, 0.05)}  # observed +0.043


@pytest.fixture(scope="module")
def gpaw_result():
    return json.loads(GPAW_RESULT.read_text())


@pytest.mark.parametrize("name", list(DFT_GPAW))
def test_gpaw_transcription(name, gpaw_result):
    """DFT_GPAW holds the numbers the script wrote, from converged relaxations."""
    runs = gpaw_result["crystals"]
    run, diamond, ref = runs[name], runs["diamond"], DFT_GPAW[name]
    assert run["converged"] and diamond["converged"], name
    assert ref.volume == pytest.approx(run["volume"], abs=1e-4)
    assert ref.diamond_volume == pytest.approx(diamond["volume"], abs=1e-4)
    assert ref.energy_above_diamond == pytest.approx(run["energy"] - diamond["energy"], abs=1e-4)
    assert ref.spacegroup == run["spacegroup_1e-3"]["number"]
    assert ref.spacegroup == run["start_spacegroup"], "DFT kept the space group it started in"


def test_gpaw_diamond_matches_mlearn_pbe():
    """Our PBE diamond and the mlearn PBE cell the MTP was fitted to agree within 0.5 %."""
    assert DFT_GPAW["diamond"].volume == pytest.approx(PBE_DIAMOND_V, rel=0.005)


@pytest.mark.parametrize("name", [n for n in DFT_GPAW if n != "diamond"])
def test_reference_crystal_against_gpaw(name, relaxed):
    """MTP vs our PBE: volume ratio to diamond, energy above diamond, space group kept or not."""
    ref = DFT_GPAW[name]
    atoms, volume, energy = relaxed(name)
    _, diamond_volume, diamond_energy = relaxed("diamond")
    assert check_symmetry(atoms, 1e-2).number == GPAW_STRUCTURE_MISS.get(name, ref.spacegroup)
    ratio = (volume / diamond_volume) / ref.volume_ratio
    lo, hi = GPAW_VOLUME_MISS.get(name, (1 - VOLUME_TOL, 1 + VOLUME_TOL))
    assert lo < ratio < hi, (name, ratio)
    delta = energy - diamond_energy - ref.energy_above_diamond
    lo, hi = GPAW_ENERGY_MISS.get(name, (-ENERGY_TOL, ENERGY_TOL))
    assert lo < delta < hi, (name, delta)


def test_energy_ordering_matches_gpaw(relaxed):
    """Our PBE orders diamond < bct4 < R8 < Cmca; the MTP keeps that order (bct4 and its BC8
    from R8 only 3 meV/atom apart)."""
    names = sorted(DFT_GPAW, key=lambda n: DFT_GPAW[n].energy_above_diamond)
    assert names[:4] == ["diamond", "bct", "R8", "Cmca"], names
    mtp = [relaxed(n)[2] for n in names]
    assert mtp == sorted(mtp), dict(zip(names, mtp, strict=True))
