"""Each reference crystal relaxed at 0 GPa with the shipped level-16 MTP (data/potentials,
fitted by `mlp` to the mlearn PBE set), compared with DFT where a DFT value is at hand.

DFT value used: the PBE lattice constant of diamond Si in the mlearn set (Zuo et al., J. Phys.
Chem. A 124, 731 (2020)): its "Elastic" cells are strains of a 2×2×2 cell of edge 10.9375 Å,
a = 5.46875 Å, 20.45 Å³/atom (read from data/si_mlearn in `test_mlearn_reference_cell`).
PBE energies and volumes of the other phases could not be retrieved in this environment, so for
them the test asserts what the potential does, which is what the docs (md/analysis/crystals.py)
state: the metallic high-pressure phases are denser than diamond and higher in energy; the
four-fold phases (bct4, R8) lie between; Imma and Cmca relax into simple hexagonal at 0 GPa
(they are pressure phases: use them as pressure-adjusted references), hcp into a six-fold
structure, and R8 towards BC8 (rhombohedral angle → 109.47°).
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest

from md.analysis.bonds import bond_list
from md.analysis.coordination import coordination_numbers
from md.analysis.crystals import build_crystal
from md.analysis.references import relax_at_pressure

ROOT = Path(__file__).resolve().parents[2]
POT = ROOT / "data" / "potentials" / "si_L16_mlp.mtp"
PBE_DIAMOND_A = 10.9375 / 2  # Å, mlearn "Elastic" reference cell (2×2×2) / 2
PBE_DIAMOND_V = PBE_DIAMOND_A**3 / 8  # 20.45 Å³/atom

#: name -> (coordination after relaxation, V/atom band in Å³, E − E_diamond band in eV/atom):
#: the bands bracket the level-16 MTP's values (measured when this test was written: V 15.31,
#: 15.17, 15.17, 15.17, 15.31, 21.60, 18.84; ΔE 0.323, 0.316, 0.316, 0.316, 0.583, 0.144,
#: 0.147) with room for optimiser noise, and are set by the physics they document.
EXPECTED = {
    "beta-Sn": ({6}, (14.0, 16.5), (0.20, 0.45)),
    "sh": ({8}, (14.0, 16.5), (0.20, 0.45)),
    "Imma": ({8}, (14.0, 16.5), (0.20, 0.45)),  # → sh at 0 GPa
    "Cmca": ({8}, (14.0, 16.5), (0.20, 0.45)),  # → sh at 0 GPa
    "hcp": ({6}, (14.0, 16.5), (0.40, 0.80)),  # → a six-fold structure, far above sh
    "bct": ({4}, (20.5, 23.0), (0.05, 0.25)),
    "R8": ({4}, (17.5, 20.0), (0.05, 0.25)),
}


@pytest.fixture(scope="module")
def calc():
    import jax

    jax.config.update("jax_enable_x64", True)
    from mtpjax.calculator import MTPCalculator

    return MTPCalculator(str(POT), species=["Si"])


def _relax(name, calc):
    relaxed = relax_at_pressure(build_crystal(name), calc, 0.0, fmax=2e-3, steps=300,
                                cell_filter="unit")
    return (relaxed, relaxed.get_volume() / len(relaxed),
            relaxed.info["energy_eV"] / len(relaxed))


@pytest.fixture(scope="module")
def diamond(calc):
    return _relax("diamond", calc)


def test_mlearn_reference_cell():
    """The PBE value quoted above is the unstrained cell of the mlearn elastic set."""
    frames = ase.io.read(ROOT / "data" / "si_mlearn" / "train.xyz", ":")
    strained = [a for a in frames if a.info["config_type"] == "Elastic"]
    edges = np.concatenate([a.cell.cellpar()[:3] for a in strained])
    values, counts = np.unique(np.round(edges, 4), return_counts=True)
    assert values[np.argmax(counts)] == pytest.approx(2 * PBE_DIAMOND_A, abs=1e-4)


def test_diamond_volume_matches_pbe(diamond):
    relaxed, volume, _ = diamond
    assert set(coordination_numbers(bond_list(relaxed))) == {4}
    assert volume == pytest.approx(PBE_DIAMOND_V, rel=0.01)


SLOW = {"Cmca", "hcp"}  # ~20 s each on a loaded 2-core machine (16- and 2-atom cells, many steps)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in EXPECTED])
def test_reference_crystal_relaxed(name, calc, diamond):
    coordination, (v_lo, v_hi), (e_lo, e_hi) = EXPECTED[name]
    relaxed, volume, energy = _relax(name, calc)
    delta = energy - diamond[2]
    assert set(coordination_numbers(bond_list(relaxed))) == coordination, name
    assert v_lo < volume < v_hi, (name, volume)
    assert e_lo < delta < e_hi, (name, delta)  # diamond is the lowest, as in DFT
    if name in ("Imma", "Cmca"):  # they became sh: same energy per atom
        sh = _relax("sh", calc)
        assert delta == pytest.approx(sh[2] - diamond[2], abs=2e-3)
    if name == "R8":  # towards BC8: rhombohedral angle of the primitive cell → 109.47°
        angles = relaxed.cell.cellpar()[3:]
        assert np.allclose(angles, 109.47, atol=0.3), angles
