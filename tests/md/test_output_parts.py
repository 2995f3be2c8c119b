"""Per-process MD output (md/io.py, ``Simulation(per_process_output=True)``): part files
(atoms with their global ids) merge into exactly the gathered trajectory and restart, the
merge checks that every atom is there once, and a run resumes from restart parts in a
whole-system run (the multi-process version is in test_multihost.py)."""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from md import io as mdio
from md.config import StageConfig
from md.runner import Simulation

from .conftest import diamond

STAGE = dict(temperature_K=1500.0, temperature_end_K=1500.0, thermostat="langevin",
             tau_t_fs=50.0)


def _run(pot, out, steps, per_process, restart=None, **kw):
    kw = dict(timestep_fs=1.0, seed=2, chunk_steps=10, output_dir=out, trajectory_every=5,
              restart_every=10, trajectory_formats=("extxyz", "traj"),
              per_process_output=per_process, **kw)
    if restart is None:
        sim = Simulation(pot, diamond(2), temperature_K=1500.0, **kw)
    else:
        sim = Simulation.from_restart(restart, pot, **kw)
    sim.run_stage(StageConfig("s", "nvt", steps, **STAGE), start_step=0)
    sim.close()
    return sim


def _same_frames(a_frames, b_frames, tol=1e-9):
    """Equal frames: exactly with ``tol`` 0, else to ``tol`` (Å, eV, eV/Å; relative for the
    stress and the info values: the summation order of energies and virials may differ in
    the last bit between two runs)."""
    assert [a.info["step"] for a in a_frames] == [b.info["step"] for b in b_frames]

    def same(x, y, rel=False):
        x, y = np.asarray(x, float), np.asarray(y, float)
        if tol == 0:
            return np.array_equal(x, y)
        return np.allclose(x, y, rtol=tol * 1e-3 if rel else 0, atol=0 if rel else tol)

    for a, b in zip(a_frames, b_frames, strict=True):
        assert np.array_equal(a.numbers, b.numbers)
        assert same(a.positions, b.positions) and same(a.cell.array, b.cell.array)
        assert np.allclose(a.get_velocities(), b.get_velocities(), rtol=0, atol=1e-12)
        assert same(a.get_forces(), b.get_forces())
        assert same(a.get_potential_energy(), b.get_potential_energy())
        assert same(a.get_stress(), b.get_stress(), rel=True)
        assert a.info.keys() == b.info.keys()
        assert all(same(v, b.info[k], rel=True) for k, v in a.info.items())


def test_part_files_equal_gathered_output_and_resume_in_whole_run(pot_path, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    ref = _run(pot_path, whole, 30, False)
    # a per-process run that "crashed" at step 15: frames 5, 10, 15, restart at step 10
    _run(pot_path, parts, 15, True)
    assert (parts / "trajectory.p0.extxyz").exists() and (parts / "trajectory.p0.traj").exists()
    assert not (parts / "trajectory.extxyz").exists() and not (parts / "restart.npz").exists()
    assert mdio.latest_restart(parts) == parts / mdio.RESTART_PARTS
    for fmt in ("extxyz", "traj"):
        _same_frames(mdio.read_trajectory(whole, fmt)[:3], mdio.read_trajectory(parts, fmt))
    # resumed from the parts as a whole-system run: part frames after step 10 are cut, the
    # whole-system file continues, and the merged trajectory equals the uninterrupted one
    sim = _run(pot_path, parts, 30, False, restart=mdio.latest_restart(parts))
    assert sim.step == 30
    assert [a.info["step"] for a in mdio.read_trajectory(parts / "trajectory.p0.extxyz")] \
        == [5, 10]
    for fmt in ("extxyz", "traj"):
        _same_frames(mdio.read_trajectory(whole, fmt), mdio.read_trajectory(parts, fmt))
    frac = (sim.positions() - ref.positions()) @ np.linalg.inv(ref.cell())  # modulo the cell
    assert np.abs((frac - np.round(frac)) @ ref.cell()).max() < 1e-9
    # both restarts are there now; the newer (the whole one, step 30) is taken
    sim.write_restart(parts / "restart.npz")
    assert mdio.latest_restart(parts) == parts / "restart.npz"


def _frame(n, seed):
    rng = np.random.default_rng(seed)
    a = Atoms(numbers=rng.choice([14, 32], n), positions=rng.random((n, 3)) * 8.0,
              cell=np.diag([8.0, 8.0, 8.0]), pbc=True)
    a.set_velocities(rng.normal(size=(n, 3)))
    a.calc = SinglePointCalculator(a, energy=-4.5 * n, forces=rng.normal(size=(n, 3)),
                                   stress=rng.normal(size=6))
    return a


@pytest.mark.parametrize("fmt", ["extxyz", "traj"])
def test_shuffled_parts_merge_in_atom_order(tmp_path, fmt):
    frames = [_frame(10, s) for s in range(3)]
    rng = np.random.default_rng(7)
    (tmp_path / "whole").mkdir()
    whole = mdio.TrajectoryWriter(tmp_path / "whole" / "trajectory", (fmt,))
    for step, a in enumerate(frames):
        a.info = {"step": step * 10}
        whole.write(a)
        # atoms migrate: each frame splits them differently over 3 processes (one empty)
        owner = rng.choice([0, 2], len(a)) if step else np.zeros(len(a), int)
        for part in range(3):
            ids = rng.permutation(np.nonzero(owner == part)[0])
            sub = a[ids]
            sub.calc = SinglePointCalculator(sub, energy=a.get_potential_energy(),
                                             forces=a.get_forces()[ids], stress=a.get_stress())
            sub.info = {**a.info, "n_atoms": len(a), "part": part, "n_parts": 3}
            if len(ids):
                mdio.TrajectoryWriter(tmp_path / "trajectory", (fmt,), part=part).write(sub, ids)
    # merged: bit-equal to the same frames written whole
    _same_frames(mdio.read_trajectory(tmp_path / "whole", fmt),
                 mdio.read_trajectory(tmp_path, fmt), tol=0)
    # a lost part file: the steps it held are incomplete
    (tmp_path / f"trajectory.p2.{fmt}").unlink()
    with pytest.raises(ValueError, match="not each of the 10 atoms once"):
        mdio.read_trajectory(tmp_path, fmt)


def test_restart_parts_merge_and_are_checked(tmp_path):
    n = 12
    rng = np.random.default_rng(0)
    whole = {"positions": rng.random((n, 3)), "velocities": rng.random((n, 3)),
             "numbers": rng.choice([14, 32], n)}
    shared = {"cell": np.eye(3) * 9.0, "chain_xi": np.zeros(3), "chain_v": np.ones(3),
              "key": np.array([0, 5], np.uint32), "bath": np.asarray(0.25)}
    folder = tmp_path / mdio.RESTART_PARTS
    mdio.save_restart_part(folder, 3, 4, [], {k: v[:0] for k, v in whole.items()} | shared,
                           {"step": 1, "n_atoms": n})  # a stale part of an older 4-process run
    split = np.array_split(rng.permutation(n), 2)
    for part, ids in enumerate(split):
        mdio.save_restart_part(folder, part, 2, ids, {k: v[ids] for k, v in whole.items()}
                               | shared, {"step": 40, "n_atoms": n, "timestep_fs": 1.0})
    assert sorted(p.name for p in folder.iterdir()) == ["p0.npz", "p1.npz"]
    arrays, meta = mdio.load_restart(folder)
    assert meta == {"step": 40, "n_atoms": n, "timestep_fs": 1.0, "frames": {}}
    for k, v in (whole | shared).items():
        assert np.array_equal(arrays[k], v), k
    assert mdio.restart_step(folder) == 40 and mdio.latest_restart(tmp_path) == folder
    # a part of another step (a run stopped while writing its restart)
    ids = split[1]
    mdio.save_restart_part(folder, 1, 2, ids, {k: v[ids] for k, v in whole.items()} | shared,
                           {"step": 30, "n_atoms": n})
    with pytest.raises(ValueError, match="p1.npz is of step 30"):
        mdio.load_restart(folder)
    mdio.save_restart_part(folder, 1, 2, ids[1:], {k: v[ids[1:]] for k, v in whole.items()}
                           | shared, {"step": 40, "n_atoms": n})
    with pytest.raises(ValueError, match="not each of the 12 atoms once"):
        mdio.load_restart(folder)
