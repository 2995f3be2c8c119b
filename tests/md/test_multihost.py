"""Multi-process MD (jax.distributed on localhost, CPU collectives over gloo): 2 processes ×
2 host devices on spatial domains equal the single-process run; each process writes its own
trajectory and restart part, the parts merged equal the single-process files, and the
restart parts resume on 1 process with 1 device."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import ase.io
import numpy as np
import pytest

from md import io as mdio

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    mode, nproc, pid, port, out, steps = sys.argv[1:7]
    nproc, pid, steps, out = int(nproc), int(pid), int(steps), Path(out)
    from md.cli import init_distributed
    if nproc > 1:
        init_distributed(f"127.0.0.1:{port}", nproc, pid)
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from ase.build import bulk
    from md.config import StageConfig
    from md import io as mdio
    from md.runner import Simulation

    pot = "tests/data/parity/si_L08/pot.mtp"
    stage = StageConfig("s", "nvt", steps, 3000.0, 3000.0, thermostat="langevin",
                        tau_t_fs=50.0)
    kw = dict(timestep_fs=1.0, seed=3, skin_A=0.5, devices=len(jax.devices()), chunk_steps=50,
              thermo_every=10, restart_every=50, trajectory_every=50,
              trajectory_formats=("extxyz", "traj"))
    if mode == "resume":
        sim = Simulation.from_restart(mdio.latest_restart(out), pot, output_dir=out, **kw)
    else:
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((6, 3, 3))  # 32.6 A: 4 slabs
        atoms.rattle(0.1, seed=1)
        sim = Simulation(pot, atoms, temperature_K=3000.0, output_dir=out, **kw)
    sim.run_stage(stage)
    sim.write_restart(sim._out["restart"])
    sim.close()
    pos = sim.positions()  # every process takes part in the gather
    if jax.process_index() == 0:
        np.save(out / "final.npy", pos)
        np.save(out / "cell.npy", sim.cell())
        print(json.dumps({"step": sim.step, "decomposition": sim.decomposition,
                          "devices": sim.engine.n_devices, "processes": jax.process_count()}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(script, mode, nproc, out, steps, devices_per_process):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(script), mode, str(nproc), str(pid),
                               str(port), str(out), str(steps)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for pid in range(nproc)]
    results = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    return json.loads(results[0][0].strip().splitlines()[-1])


def _diff(out_a: Path, out_b: Path) -> float:
    a, b, cell = np.load(out_a / "final.npy"), np.load(out_b / "final.npy"), \
        np.load(out_a / "cell.npy")
    frac = (a - b) @ np.linalg.inv(cell)
    frac -= np.round(frac)
    return float(np.abs(frac @ cell).max())


def _same_trajectory(out_a: Path, out_b: Path, steps) -> None:
    """The merged trajectories of two output folders: same steps and atoms; in .traj (full
    precision) positions modulo the cell to 1e-9 Å, forces 1e-9 eV/Å, energies 1e-9 eV; in
    extxyz (8 decimals) positions to 1e-7 Å."""
    for fmt, tol in (("traj", 1e-9), ("extxyz", 1e-7)):
        a_frames, b_frames = mdio.read_trajectory(out_a, fmt), mdio.read_trajectory(out_b, fmt)
        assert [a.info["step"] for a in a_frames] == steps
        assert [b.info["step"] for b in b_frames] == steps
        for a, b in zip(a_frames, b_frames, strict=True):
            assert np.array_equal(a.numbers, b.numbers)
            frac = (a.positions - b.positions) @ np.linalg.inv(a.cell.array)
            assert np.abs((frac - np.round(frac)) @ a.cell.array).max() < tol
            assert np.abs(a.get_forces() - b.get_forces()).max() < tol
            assert abs(a.get_potential_energy() - b.get_potential_energy()) < 1e-9


@pytest.mark.slow
def test_two_processes_match_one_and_restart_on_one(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    multi, single = tmp_path / "multi", tmp_path / "single"
    res = _launch(script, "new", 2, multi, 100, 2)
    assert res == {"step": 100, "decomposition": "domain", "devices": 4, "processes": 2}
    assert (multi / "thermo.csv").read_text().count("\n") == 12  # header + steps 0..100
    # per-process files: each process's atoms with their global ids, no gathered copy
    names = {p.name for p in multi.iterdir()}
    assert {"trajectory.p0.extxyz", "trajectory.p1.extxyz", "restart.parts"} <= names
    assert "trajectory.extxyz" not in names and "restart.npz" not in names
    assert sorted(p.name for p in (multi / "restart.parts").iterdir()) == ["p0.npz", "p1.npz"]
    for r in (0, 1):  # each part holds some of the 432 atoms, with their global ids
        frames = ase.io.read(multi / f"trajectory.p{r}.extxyz", index=":")
        assert [a.info["step"] for a in frames] == [50, 100]
        assert all(0 < len(a) < 432 and a.info["part"] == r for a in frames)
        assert all(set(a.arrays["id"]) <= set(range(432)) for a in frames)
    ref = _launch(script, "new", 1, single, 100, 1)
    assert ref["processes"] == 1 and ref["devices"] == 1
    assert _diff(multi, single) < 1e-9
    _same_trajectory(multi, single, [50, 100])
    # the 2-process restart parts resume on 1 process / 1 device and equal the continued run
    assert _launch(script, "resume", 1, multi, 50, 1)["step"] == 150
    assert _launch(script, "resume", 1, single, 50, 1)["step"] == 150
    assert _diff(multi, single) < 1e-9
    _same_trajectory(multi, single, [50, 100, 150])  # parts, then the whole-system file


CONFIG = """
[potential]
file = "{pot}"
[structure]
crystal = {{ name = "diamond", a_A = 5.43, repeat = [2, 2, 2] }}
[run]
output_dir = "{out}"
progress = false
[[stage]]
name = "s"
ensemble = "nve"
steps = 10
"""


def test_two_processes_refuse_existing_output_together(tmp_path):
    """Process 0 finds MD output in the output folder: both processes exit with the same
    one-line error (before the fix the other process waited forever in a collective)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "thermo.csv").write_text("step\n")
    config = tmp_path / "md.toml"
    config.write_text(CONFIG.format(pot=ROOT / "tests/data/parity/si_L08/pot.mtp", out=out))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "mtpjax", "md", str(config), "--devices",
                               "all", "--coordinator", f"127.0.0.1:{port}", "--num-processes",
                               "2", "--process-id", str(pid)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for pid in range(2)]
    try:
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 2, err[-3000:]
        assert err.strip().splitlines() == [
            f"mtpjax: error: {out} already holds MD output; use resume or another output_dir"]


RESUMABLE = CONFIG.replace('progress = false\n', 'progress = false\ntrajectory_every = 5\n'
                           'restart_every = 5\nchunk_steps = 5\n')


def _resume_after_corrupt_trajectory(tmp_path, nproc):
    """A 10-step run with a restart at step 5 and a trajectory whose frames are then replaced
    by garbage; ``--resume`` on ``nproc`` processes → the processes' (returncode, stderr)."""
    out = tmp_path / "out"
    config = tmp_path / "md.toml"
    config.write_text(RESUMABLE.format(pot=ROOT / "tests/data/parity/si_L08/pot.mtp", out=out))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    first = subprocess.run([sys.executable, "-m", "mtpjax", "md", str(config)], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    traj = out / "trajectory.extxyz"
    assert traj.exists()
    traj.write_text("8\nnot an extxyz comment line\nSi x y z\n")
    port = _free_port()
    multi = ["--devices", "all", "--coordinator", f"127.0.0.1:{port}", "--num-processes",
             str(nproc)] if nproc > 1 else []
    procs = [subprocess.Popen([sys.executable, "-m", "mtpjax", "md", str(config), "--resume",
                               *multi, *(["--process-id", str(pid)] if nproc > 1 else [])],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for pid in range(nproc)]
    try:
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [(p.returncode, err) for p, (_, err) in zip(procs, results, strict=True)], traj


def test_resume_with_an_unreadable_trajectory_is_one_error_line(tmp_path):
    ((code, err),), traj = _resume_after_corrupt_trajectory(tmp_path, 1)
    assert code == 2, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mtpjax: error: {traj}: cannot trim it to "
                                                   "step 10 for resuming"), err[-3000:]


@pytest.mark.slow
def test_two_processes_stop_together_when_process_0_cannot_trim(tmp_path):
    """Process 0 cannot trim the trajectory for resuming: both processes exit with an error
    line (before the fix the other process waited forever in a collective)."""
    results, traj = _resume_after_corrupt_trajectory(tmp_path, 2)
    for code, err in results:
        assert code == 2, err[-3000:]
    assert results[0][1].strip().splitlines()[-1].startswith(f"mtpjax: error: {traj}: ")
    assert "process 0 could not trim" in results[1][1].strip().splitlines()[-1]
