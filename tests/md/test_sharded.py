"""Sharded MD (atoms split over 4 host devices) reproduces the single-device trajectory."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from ase.build import bulk
    from md.config import StageConfig
    from md.runner import Simulation

    pot, thermostat, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if len(sys.argv) > 4:  # evaluate the forces in chunks of this many central atoms
        import md.energy
        md.energy.EVAL_CHUNK = int(sys.argv[4])
    assert len(jax.devices()) == 4, jax.devices()
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=1)
    ens = "nve" if thermostat == "none" else "nvt"
    stage = StageConfig("s", ens, steps, 900.0, 900.0, thermostat=thermostat
                        if thermostat != "none" else "nhc")
    out = {}
    for devices in (1, 4):
        # small skin: several neighbour rebuilds happen inside the 100 steps
        sim = Simulation(pot, atoms, timestep_fs=1.0, temperature_K=900, seed=3, skin_A=0.3,
                         devices=devices, chunk_steps=40)
        sim.run_stage(stage)
        out[devices] = (sim.positions(), sim.stats["rebuilds"],
                        str(sim.state.positions.sharding), float(sim.state.energy))
    d = float(np.abs(out[1][0] - out[4][0]).max())
    moved = float(np.abs(out[1][0] - atoms.positions).max())
    print(json.dumps({"max_diff": d, "moved": moved, "rebuilds": [out[1][1], out[4][1]],
                      "sharding": out[4][2], "de": abs(out[1][3] - out[4][3])}))
""")


@pytest.mark.parametrize("thermostat,chunk", [
    ("none", None),
    # chunked force evaluation (64 atoms: 6 chunks of 11, last overlapping; 16 per device: 2 × 8)
    ("none", 12),
    pytest.param("langevin", None, marks=pytest.mark.slow)])
def test_sharded_matches_single_device(pot_path, thermostat, chunk, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    root = Path(__file__).resolve().parents[2]
    args = [str(pot_path), thermostat, "100"] + ([] if chunk is None else [str(chunk)])
    proc = subprocess.run([sys.executable, str(script), *args],
                          capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "atoms" in res["sharding"]  # really sharded over the mesh axis
    assert res["moved"] > 0.05
    assert min(res["rebuilds"]) >= 1
    assert res["max_diff"] < 1e-8, res
    assert res["de"] < 1e-8, res
