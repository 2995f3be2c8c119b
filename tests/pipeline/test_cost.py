"""Cost as MD throughput: the students' rate comes from MD steps of the MD engine, the
teacher's from ASE MD steps (one energy+forces call each), on the same cell."""

from __future__ import annotations

from pathlib import Path

import pytest
from ase.calculators.calculator import Calculator, all_changes

from distill.stages.evaluate import cost_cell, teacher_md_rate
from md.analysis.calculators import stillinger_weber_si
from md.throughput import mtp_md_rate

POT = Path(__file__).resolve().parents[2] / "tests" / "data" / "parity" / "si_L08" / "pot.mtp"
CFG = {"evaluate": {"md_repeat": 2}}


class Counting(Calculator):
    """Stillinger–Weber, counting the energy+forces evaluations."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self):
        super().__init__()
        self.inner, self.calls = stillinger_weber_si(), 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        a = atoms.copy()
        a.calc = self.inner
        self.results = {"energy": a.get_potential_energy(), "forces": a.get_forces(),
                        "stress": a.get_stress()}


def test_teacher_rate_is_timed_md_steps():
    atoms = cost_cell(CFG, ["Si"])
    assert len(atoms) == 64
    calc = Counting()
    r = teacher_md_rate(calc, atoms, steps=4, temperature_K=500.0)
    assert r["n_atoms"] == 64 and r["steps"] == 4
    assert calc.calls >= 1 + 4  # the warm-up step and the timed steps each evaluate forces
    assert r["atom_steps_per_s"] == pytest.approx(4 * 64 / r["wall_s"], rel=1e-2)


def test_student_rate_is_md_engine_steps():
    import jax

    jax.config.update("jax_enable_x64", True)
    r = mtp_md_rate(str(POT), cost_cell(CFG, ["Si"]), ["Si"], steps=7, warmup_steps=5)
    assert r["steps"] == 10  # rounded up to whole chunks of the warm-up length
    assert r["n_atoms"] == 64
    assert r["atom_steps_per_s"] == pytest.approx(10 * 64 / r["wall_s"], rel=1e-2)
