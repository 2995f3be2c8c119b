"""Benchmark systems: diamond Si crystals and liquid Si of any size (Å, K).

Liquid cells are made once at a small size by MD with the benchmark's own potential (the
diamond crystal's cell, melted at ``temperature_K``: same cell and density as the crystal
benchmark, so the two differ only in the motion), then tiled to the requested size, so a
10⁶-atom liquid costs no more than a 1000-atom one to prepare. The tiled copies start
identical and decorrelate within tens of steps; for throughput and rebuild counts that is
what matters.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk


def repeats(n_target: int) -> tuple[int, int]:
    """(k, s): the 8-atom cubic cell repeated k³ times gives ≈ ``n_target`` atoms, and s (a
    divisor of k, 4 ≤ s ≤ 8 where k ≥ 4) is the repeat of the seed cell a liquid is melted
    in (then tiled (k/s)³ times). k is moved to the nearest value that has such a divisor."""
    k0 = max(1, round((n_target / 8) ** (1 / 3)))
    if k0 < 4:
        return k0, k0
    for k in sorted(range(max(4, k0 - 3), k0 + 4), key=lambda k: abs(k - k0)):
        for s in range(4, 9):
            if k % s == 0:
                return k, s
    return k0, k0


def crystal_si(n_target: int, rattle: float = 0.03, seed: int = 0) -> Atoms:
    """Cubic diamond Si (a = 5.43 Å), 8·k³ ≈ ``n_target`` atoms (:func:`repeats`), rattled by
    ``rattle`` Å."""
    rep = repeats(n_target)[0]
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((rep,) * 3)
    atoms.rattle(rattle, seed=seed)
    return atoms


def liquid_si(n_target: int, potential: str, temperature_K: float = 3000.0,
              steps: int = 1000, seed: int = 0) -> Atoms:
    """Liquid Si in the cell of :func:`crystal_si` (``n_target``), with velocities (ASE units).

    The seed diamond cell (8·s³ atoms, :func:`repeats`) is run for ``steps`` × 1 fs of
    Langevin NVT at ``temperature_K`` with ``potential`` (float64), then repeated (k/s)³ times.
    """
    from md.config import StageConfig
    from md.runner import Simulation

    k, s = repeats(n_target)
    small = crystal_si(8 * s ** 3, rattle=0.1, seed=seed)
    sim = Simulation(potential, small, timestep_fs=1.0, temperature_K=temperature_K,
                     seed=seed, skin_A=1.0, chunk_steps=steps, thermo_every=0)
    sim.run_stage(StageConfig("melt", "nvt", steps, temperature_K, temperature_K,
                              thermostat="langevin", tau_t_fs=50.0))
    liquid = sim.atoms()
    rep = k // s
    big = liquid.repeat((rep,) * 3)
    velocities = np.tile(liquid.get_velocities(), (rep ** 3, 1))
    big.set_velocities(velocities)
    return big
