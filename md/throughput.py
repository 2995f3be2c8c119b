"""MD throughput of an MTP (atom-steps per second), the paper's cost measure (Fig. 3: cost per
MD step), measured with the MD engine itself rather than one calculator call.

:func:`mtp_md_rate` runs NVT (Langevin) on the given cell: ``warmup_steps`` first (compiling
the chunk and settling the neighbour-list capacities), then ``steps`` timed steps in chunks of
the same length (no recompilation). Units: K, fs, seconds.
"""

from __future__ import annotations

import math
import time

from ase import Atoms

from md.config import StageConfig


def nvt_stage(name: str, steps: int, temperature_K: float) -> StageConfig:
    """A Langevin NVT stage at constant ``temperature_K`` (τ_T = 100 fs)."""
    return StageConfig(name, "nvt", int(steps), temperature_K, temperature_K,
                       thermostat="langevin", tau_t_fs=100.0)


def mtp_md_rate(potential, atoms: Atoms, species=("Si",), *, steps: int = 50,
                warmup_steps: int = 10, temperature_K: float = 500.0, timestep_fs: float = 1.0,
                seed: int = 0) -> dict:
    """Timed MD of ``potential`` (path or MTPotential) on ``atoms``.

    Returns ``{"n_atoms", "steps", "warmup_steps", "warmup_s", "wall_s",
    "atom_steps_per_s", "s_per_atom_step"}``; ``steps`` is rounded up to a multiple of
    ``warmup_steps`` (the chunk length).
    """
    from md.runner import Simulation

    chunk = max(int(warmup_steps), 1)
    steps = chunk * math.ceil(max(int(steps), 1) / chunk)
    sim = Simulation(potential, atoms, species=list(species), timestep_fs=timestep_fs,
                     temperature_K=temperature_K, seed=seed, chunk_steps=chunk,
                     thermo_every=0)
    try:
        t0 = time.perf_counter()
        sim.run_stage(nvt_stage("warm-up", chunk, temperature_K))
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        sim.run_stage(nvt_stage("timed", steps, temperature_K))
        wall = time.perf_counter() - t0
    finally:
        sim.close()
    n = len(atoms)
    return {"n_atoms": n, "steps": steps, "warmup_steps": chunk, "warmup_s": round(warm, 3),
            "wall_s": wall, "atom_steps_per_s": steps * n / wall,
            "s_per_atom_step": wall / (steps * n)}
