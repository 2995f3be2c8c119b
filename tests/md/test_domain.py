"""Spatial domain decomposition (md/domain.py) on 8 emulated host devices reproduces the
single-device trajectory, with atoms migrating between domains, on slabs and on a 2×2×2
brick grid, and falls back cleanly when the domains would be thinner than the halo."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from ase.build import bulk
    from md.config import StageConfig
    from md.runner import Simulation

    scenario, steps, devices = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    grid = None if sys.argv[4] == "auto" else tuple(int(p) for p in sys.argv[4].split("x"))
    root = "tests/data/parity/"
    # slabs: 54 x 16 x 16 A (only 8 slabs along x are thick enough); bricks: 27 A cube
    reps = (10, 3, 3) if grid is None else (5, 5, 5)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(reps)
    atoms.rattle(0.1, seed=1)
    pot, species, temp = root + "si_L08/pot.mtp", ["Si"], 3000.0
    if scenario == "nvt":
        stage = StageConfig("s", "nvt", steps, temp, temp, thermostat="langevin",
                            tau_t_fs=50.0)
    elif scenario in ("npt", "squeeze"):  # compression ramp 0 -> 40 (60) GPa
        stage = StageConfig("s", "npt", steps, temp, temp, 0.0,
                            40.0 if scenario == "npt" else 60.0, thermostat="langevin",
                            barostat="iso", tau_t_fs=50.0, tau_p_fs=50.0,
                            compressibility_per_GPa=0.02)
    else:  # two species in a sheared (triclinic) cell, NHC thermostat, level 16
        cell = atoms.cell.array.copy()
        cell[1, 0] = 0.3 * cell[1, 1]
        cell[2, 1] = -0.2 * cell[2, 2]
        atoms.set_cell(cell, scale_atoms=True)
        rng = np.random.default_rng(0)
        atoms.symbols = np.where(rng.random(len(atoms)) < 0.5, "Si", "Ge")
        pot, species, temp = root + "species2_L16/pot.mtp", ["Si", "Ge"], 2000.0
        stage = StageConfig("s", "nvt", steps, temp, temp, thermostat="nhc", tau_t_fs=50.0)
    out = {}
    for d in (1, devices):
        sim = Simulation(pot, atoms, species=species, timestep_fs=1.0, temperature_K=temp,
                         seed=3, skin_A=1.0 if scenario == "squeeze" else 0.5, devices=d,
                         chunk_steps=100,
                         domain_grid=grid if d > 1 else None)
        def owners():
            ids = np.asarray(sim.nl.ids).reshape(devices, -1)
            own = np.full(len(atoms), -1)
            for k in range(devices):
                own[ids[k][ids[k] >= 0]] = k
            return own
        start = owners() if d > 1 else None
        grid0 = list(sim.nl.spec.grid) if d > 1 else None
        v0 = sim.atoms().get_volume()
        sim.run_stage(stage)
        out[d] = dict(pos=sim.positions(), cell=sim.cell(), e=float(sim.state.energy),
                      rebuilds=sim.stats["rebuilds"], decomposition=sim.decomposition,
                      vratio=sim.atoms().get_volume() / v0)
        if d > 1 and sim.decomposition == "replicated":  # switched mid-run (squeeze)
            out[d].update(crossed=-1, complete=True, grid=grid0)
        elif d > 1:
            end = owners()
            out[d]["crossed"] = int(np.sum(start != end))
            out[d]["complete"] = bool(np.all(end >= 0))
            out[d]["grid"] = list(sim.nl.spec.grid)
    a, b = out[1], out[devices]
    frac = (b["pos"] - a["pos"]) @ np.linalg.inv(a["cell"])
    frac -= np.round(frac)  # wrapped at different rebuilds: compare modulo the cell
    print(json.dumps({
        "max_diff": float(np.abs(frac @ a["cell"]).max()),
        "cell_diff": float(np.abs(a["cell"] - b["cell"]).max()),
        "de": abs(a["e"] - b["e"]), "crossed": b["crossed"], "complete": b["complete"],
        "decomposition": b["decomposition"], "rebuilds": [a["rebuilds"], b["rebuilds"]],
        "vratio": a["vratio"], "grid": b.get("grid")}))
""")


def _run(script: str, args, devices: int, tmp_path):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    path = tmp_path / "run.py"
    path.write_text(script)
    return subprocess.run([sys.executable, str(path), *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("scenario,grid", [("nvt", "auto"), ("npt", "auto"),
                                           ("species2", "auto"), ("nvt", "2x2x2"),
                                           ("species2", "2x2x2")])
def test_domains_match_single_device(scenario, grid, tmp_path):
    """200 steps of hot Si (3000 K: atoms cross the domain boundaries) on 8 domains equal the
    single-device run to 1e-9 Å: Langevin NVT, an NPT compression ramp, and a two-species
    level-16 potential in a triclinic cell, on 8 slabs (the only grid thick enough in the
    54 × 16 × 16 Å cell) and on 2 × 2 × 2 bricks (27 Å cube: halo in three stages, edge and
    corner atoms through two or three of them)."""
    proc = _run(SCRIPT, [scenario, 200, 8, grid], 8, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["decomposition"] == "domain", res
    assert res["grid"] == ([8, 1, 1] if grid == "auto" else [2, 2, 2]), res
    assert res["complete"], res  # every atom owned by exactly one domain
    assert res["crossed"] >= 5, res  # atoms migrated between domains
    assert min(res["rebuilds"]) >= 2, res
    assert res["max_diff"] < 1e-9, res
    assert res["cell_diff"] < 1e-9, res
    assert res["de"] < 1e-8, res
    if scenario == "npt":
        assert res["vratio"] < 0.97, res  # the cell was compressed


@pytest.mark.slow
def test_npt_squeeze_switches_to_replicated(tmp_path):
    """An NPT ramp to 60 GPa squeezes 8 slabs of 6.8 Å below cutoff + skin = 6 Å mid-run:
    the rebuild that finds them too thin re-runs its chunk on replicated atoms (one warning
    line) instead of stopping, and the trajectory still equals the single-device run."""
    proc = _run(SCRIPT, ["squeeze", 200, 8, "auto"], 8, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["grid"] == [8, 1, 1] and res["decomposition"] == "replicated", res
    lines = [ln for ln in proc.stderr.splitlines() if "became thinner" in ln]
    assert len(lines) == 1 and "re-run on replicated atoms" in lines[0], proc.stderr[-2000:]
    assert res["vratio"] < 0.69, res  # slabs 6.8 Å × (V/V₀)^⅓ < 6 Å
    assert res["max_diff"] < 1e-9, res
    assert res["cell_diff"] < 1e-9, res
    assert res["de"] < 1e-8, res


FALLBACK = textwrap.dedent("""
    import jax
    jax.config.update("jax_enable_x64", True)
    from ase.build import bulk
    from md.runner import Simulation

    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((4, 2, 2))  # 21.7 A: 8 slabs < 6 A
    sim = Simulation("tests/data/parity/si_L08/pot.mtp", atoms, temperature_K=300, skin_A=1.0,
                     devices=8)
    print("DECOMPOSITION", sim.decomposition, sim.engine.n_devices,
          "atoms" in str(sim.state.positions.sharding))
""")


def test_thin_domains_fall_back_to_replicated(tmp_path):
    proc = _run(FALLBACK, [], 8, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DECOMPOSITION replicated 8 True" in proc.stdout, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if "domain decomposition off" in ln]
    assert len(lines) == 1, proc.stderr
    assert "8 slabs of 2.71 Å" in lines[0] and "cutoff + skin" in lines[0], lines


def _cells_spec(skin=1.0):
    from mtpjax.cell_list import CellListSpec

    return CellListSpec(5.0, skin, (1, 1, 1), (1, 1, 1), 8, 8)


def test_plan_domains_thickness_rule_and_layout():
    """Slabs along the widest lattice vector (no brick grid is thick enough in this cell);
    refused when thinner than the halo (2 × for D = 2); every atom laid out once, in its
    slab."""
    import numpy as np

    from md.domain import layout, plan_domains

    rng = np.random.default_rng(0)
    cell = np.array([[60.0, 0, 0], [5.0, 20.0, 0], [0, 3.0, 20.0]])  # widest: vector 0
    pos = rng.random((500, 3)) @ cell
    # face-to-face height along vector 0 is 58.1 Å (tilted b, c): slabs of 7.27 Å ≥ 6 × 1.05
    spec, why = plan_domains(pos, cell, 8, _cells_spec())
    assert spec is not None and why == "" and spec.grid == (8, 1, 1) and spec.n_domains == 8
    assert spec.owned >= 500 / 8 and spec.halo[0] > 0 and spec.halo[1:] == (0, 0)
    none, why = plan_domains(pos, cell, 8, _cells_spec(skin=2.0))  # 7 Å × 1.05 > 7.27 Å
    assert none is None and "8 slabs of 7.27 Å" in why and "using replicated" in why
    assert plan_domains(pos, cell, 2, _cells_spec(skin=10.0))[0] is None  # 29 Å < 2 × 15 Å
    a = layout(spec, pos, np.zeros_like(pos), np.ones(500), np.zeros(500, int), cell,
               np.float64)
    assert sorted(a["ids"][a["valid"]]) == list(range(500))
    frac = a["positions"] @ np.linalg.inv(cell)
    slab = np.repeat(np.arange(8), spec.owned)
    s = frac[a["valid"], 0] - np.floor(frac[a["valid"], 0])
    assert np.all(np.floor(s * 8) == slab[a["valid"]])


def test_distributed_flags_validated():
    from md.cli import init_distributed
    from md.config import ConfigError

    assert init_distributed() is False  # nothing asked: single process, nothing initialised
    with pytest.raises(ConfigError, match="go together"):
        init_distributed(coordinator="127.0.0.1:1234")
    with pytest.raises(ConfigError, match="process-id must be in 0"):
        init_distributed("127.0.0.1:1234", 2, 2)


def test_grid_choice_smallest_halo():
    """Bricks from 8 devices: the thick-enough grid with the smallest halo volume (a vector
    left uncut needs no halo: in a cube 4×2×1 beats 2×2×2, which beats slabs); slabs only
    below 8 devices; a forced grid is checked; too thin: the closest grid is named."""
    import numpy as np

    from md.domain import choose_grid, halo_volume, plan_domains

    big = np.eye(3) * 271.0  # 10⁶ liquid-Si atoms, reach 6 Å
    grid, _ = choose_grid(big, 8, 6.0)
    assert sorted(grid) == [1, 2, 4]
    h = [271.0] * 3
    assert halo_volume(grid, h, 6.0) < halo_volume((2, 2, 2), h, 6.0) < \
        halo_volume((1, 1, 8), h, 6.0)
    assert sum(p > 1 for p in choose_grid(big, 4, 6.0)[0]) == 1  # D < 8: slabs
    assert choose_grid(big, 64, 6.0)[0] == (4, 4, 4)
    cube = np.eye(3) * 27.15  # 2×2×2 bricks of 13.6 Å ≥ 2 × 5.5 Å × 1.05
    assert choose_grid(cube, 8, 5.5, grid=(2, 2, 2)) == ((2, 2, 2), "")
    none, why = choose_grid(cube, 8, 5.5, grid=(1, 1, 8))
    assert none is None and "8 slabs of 3.39 Å (lattice vector 2)" in why, why
    rng = np.random.default_rng(0)
    pos = rng.random((4000, 3)) @ cube
    spec, _ = plan_domains(pos, cube, 8, _cells_spec(skin=0.5), grid=(2, 2, 2))
    # stage halos grow with the stage (the later ones carry the earlier halos' edges)
    assert spec.grid == (2, 2, 2) and spec.halo[0] < spec.halo[1] < spec.halo[2], spec
    assert spec.axes == (0, 1, 2) and spec.local == spec.owned + 2 * sum(spec.halo)
