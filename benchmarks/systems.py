"""Benchmark systems: diamond Si crystals and liquid Si of any size (Å, K).

Liquid cells are made once at a small size by MD with the benchmark's own potential (the
diamond crystal's cell, melted at ``temperature_K``: same cell and density as the crystal
benchmark, so the two differ only in the motion), then tiled to the requested size, so a 10⁶-atom liquid costs no more than a 512-atom one to prepare. The tiled copies
start identical and decorrelate within tens of steps; for throughput and rebuild counts that
is what matters.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk

def crystal_si(n_target: int, rattle: float = 0.03, seed: int = 0) -> Atoms:
    """Cubic diamond Si (a = 5.43 Å), ≈ ``n_target`` atoms (8·k³), rattled by ``rattle`` Å."""
    rep = max(1, round((n_target / 8) ** (1 / 3)))
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((rep,) * 3)
    atoms.rattle(rattle, seed=seed)
    return atoms


def liquid_si(n_target: int, potential: str, temperature_K: float = 3000.0,
              seed_atoms: int = 512, steps: int = 1000, seed: int = 0) -> Atoms:
    """Liquid Si, ≈ ``n_target`` atoms (``seed_atoms``·k³), with velocities (ASE units).

    A ``seed_atoms`` diamond cell (a = 5.43 Å) is run for ``steps`` × 1 fs of Langevin NVT at
    ``temperature_K`` with ``potential`` (float64), then repeated k³ times.
    """
    from md.config import StageConfig
    from md.runner import Simulation

    small = crystal_si(seed_atoms, rattle=0.1, seed=seed)
    sim = Simulation(potential, small, timestep_fs=1.0, temperature_K=temperature_K,
                     seed=seed, skin_A=1.0, chunk_steps=steps, thermo_every=0)
    sim.run_stage(StageConfig("melt", "nvt", steps, temperature_K, temperature_K,
                              thermostat="langevin", tau_t_fs=50.0))
    liquid = sim.atoms()
    rep = max(1, round((n_target / seed_atoms) ** (1 / 3)))
    big = liquid.repeat((rep,) * 3)
    velocities = np.tile(liquid.get_velocities(), (rep ** 3, 1))
    big.set_velocities(velocities)
    return big
