"""Config validation (errors before any compute, naming file and key), the `mtpjax md` CLI,
output files (thermo CSV/JSONL, extxyz, .traj, restart) and resume after a crash."""

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest

import md.runner
from md import io as mdio
from md.analysis.thermo import read_thermo
from md.config import ConfigError, load_config
from mtpjax.cli import main

GOOD = """
[potential]
file = "{pot}"
species = ["Si"]

[structure]
crystal = {{ name = "diamond", a_A = 5.43, repeat = [2, 2, 2] }}

[run]
timestep_fs = 1.0
temperature_K = 600.0
output_dir = "{out}"
thermo_every = 10
thermo_format = "{fmt}"
trajectory_every = 20
trajectory_formats = ["extxyz", "traj"]
restart_every = 40
chunk_steps = 40
progress = false

[[stage]]
name = "heat"
ensemble = "nvt"
thermostat = "langevin"
temperature_K = 600.0
steps = 40

[[stage]]
name = "squeeze"
ensemble = "npt"
thermostat = "langevin"
temperature_K = 600.0
pressure_GPa = 0.0
pressure_end_GPa = 5.0
steps = 40
"""


def _write(tmp_path, pot_path, text=None, fmt="csv", name="run.toml"):
    path = tmp_path / name
    path.write_text(text if text is not None else GOOD.format(pot=pot_path,
                                                              out=tmp_path / "out", fmt=fmt))
    return path


@pytest.fixture
def no_compute(monkeypatch):
    """Any attempt to build a structure or a simulation fails the test."""
    def boom(*a, **k):
        raise AssertionError("computation started before the config was validated")

    monkeypatch.setattr(md.runner, "Simulation", boom)
    monkeypatch.setattr(md.runner, "build_structure", boom)


@pytest.mark.parametrize("edit, key, words", [
    (("[run]", "[run]\ntime_step = 2.0"), "run.time_step", "unknown key"),
    (("timestep_fs = 1.0", "timestep_fs = -1.0"), "run.timestep_fs", "must be > 0"),
    (("steps = 40\n\n[[stage]]", "steps = 40\nfoo = 1\n\n[[stage]]"), "stage[0].foo",
     "unknown key"),
    (('ensemble = "npt"', 'ensemble = "npe"'), "stage[1].ensemble", "must be one of"),
    (("[structure]", "[structur]"), "structur", "unknown key"),
    (('temperature_K = 600.0\nsteps = 40\n\n[[stage]]',
      'temperature_K = 600.0\n\n[[stage]]'), "stage[0]", "exactly one of steps"),
])
def test_bad_config_fails_before_compute(tmp_path, pot_path, capsys, no_compute, edit, key,
                                         words):
    text = GOOD.format(pot=pot_path, out=tmp_path / "out", fmt="csv")
    assert edit[0] in text
    path = _write(tmp_path, pot_path, text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and key in str(err.value) and words in str(err.value)
    assert main(["md", str(path)]) == 2
    msg = capsys.readouterr().err
    assert key in msg and str(path) in msg
    assert not (tmp_path / "out").exists()


def test_missing_potential_file_named(tmp_path, pot_path, capsys, no_compute):
    text = GOOD.format(pot="nowhere/pot.mtp", out=tmp_path / "out", fmt="csv")
    path = _write(tmp_path, pot_path, text)
    assert main(["md", str(path)]) == 2
    msg = capsys.readouterr().err
    assert "potential.file" in msg and "nowhere/pot.mtp" in msg and "not found" in msg


def test_shipped_configs_validate():
    root = Path(__file__).resolve().parents[2]
    for name in ("compress_20GPa.toml", "melt_quench.toml"):
        cfg = load_config(root / "md" / "configs" / name)
        assert cfg.total_steps > 1000
    quench = load_config(root / "md" / "configs" / "melt_quench.toml").stages[-1]
    assert quench.steps == round((1800 - 500) / 1e14 * 1e15)  # rate_K_per_s → steps
    compress = load_config(root / "md" / "configs" / "compress_20GPa.toml").stages[-1]
    assert compress.ensemble == "npt" and compress.pressure_end_GPa == 20.0


@pytest.mark.parametrize("fmt", ["csv", pytest.param("jsonl", marks=pytest.mark.slow)])
def test_cli_run_outputs_and_resume(tmp_path, pot_path, monkeypatch, fmt):
    path = _write(tmp_path, pot_path, fmt=fmt)
    out = tmp_path / "out"
    assert main(["md", str(path), "--no-progress"]) == 0
    thermo = read_thermo(out / f"thermo.{fmt}")
    np.testing.assert_array_equal(thermo["step"], np.arange(0, 81, 10))
    for col in ("T", "P", "V", "time", "E_tot", "conserved"):
        assert col in thermo and np.all(np.isfinite(thermo[col]))
    assert thermo["P_target_GPa"][-1] == 5.0 and thermo["P_target_GPa"][4] == 0.0
    frames = ase.io.read(out / "trajectory.extxyz", ":")
    assert [a.info["step"] for a in frames] == [20, 40, 60, 80]
    assert len(ase.io.read(out / "trajectory.traj", ":")) == 4
    ref = np.load(out / "restart.npz")["positions"]

    # a crashed run: the restart file stops at step 40, logs and frames went on to step 60
    out2 = tmp_path / "crash"
    write = md.runner.Simulation.write_restart
    events = md.runner.Simulation._io_events

    def write_40(self, p):
        if self.step == 40:
            write(self, p)

    def crash_60(self, *a):
        events(self, *a)
        if self.step == 60:
            raise KeyboardInterrupt

    monkeypatch.setattr(md.runner.Simulation, "write_restart", write_40)
    monkeypatch.setattr(md.runner.Simulation, "_io_events", crash_60)
    with pytest.raises(KeyboardInterrupt):
        main(["md", str(path), "-o", str(out2), "--no-progress"])
    monkeypatch.undo()
    assert read_thermo(out2 / f"thermo.{fmt}")["step"][-1] == 60
    assert main(["md", str(path), "-o", str(out2), "--no-progress"]) == 2  # refuses to clobber
    assert main(["md", str(path), "-o", str(out2), "--resume", "--no-progress"]) == 0
    np.testing.assert_array_equal(read_thermo(out2 / f"thermo.{fmt}")["step"],
                                  np.arange(0, 81, 10))
    steps = [a.info["step"] for a in ase.io.read(out2 / "trajectory.extxyz", ":")]
    assert steps == [20, 40, 60, 80]
    assert len(ase.io.read(out2 / "trajectory.traj", ":")) == 4
    resumed = np.load(out2 / "restart.npz")["positions"]
    cell = np.load(out2 / "restart.npz")["cell"]
    frac = (resumed - ref) @ np.linalg.inv(cell)  # the resumed run wrapped its atoms
    assert np.abs((frac - np.round(frac)) @ cell).max() < 1e-8
    meta = json.loads(str(np.load(out2 / "restart.npz")["__meta__"]))
    assert meta["step"] == 80


@pytest.fixture
def no_simulation(monkeypatch):
    """Any attempt to compute (a simulation from scratch or from a restart) fails the test."""
    def boom(*a, **k):
        raise AssertionError("computation started before the inputs were checked")

    monkeypatch.setattr(md.runner.Simulation, "__init__", boom)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtpjax: error: "), err
    return lines[0]


def _restart_parts(folder, n_parts=2, n_atoms=64):
    """Restart parts of a 64-atom Si cell split over ``n_parts`` processes (as md.io writes)."""
    rng = np.random.default_rng(0)
    whole = {"positions": rng.random((n_atoms, 3)) * 10.86,
             "velocities": rng.normal(size=(n_atoms, 3)) * 1e-3,
             "numbers": np.full(n_atoms, 14)}
    shared = {"cell": np.eye(3) * 10.86, "chain_xi": np.zeros(3), "chain_v": np.zeros(3),
              "key": np.array([0, 5], np.uint32), "bath": np.asarray(0.0)}
    for part, ids in enumerate(np.array_split(rng.permutation(n_atoms), n_parts)):
        mdio.save_restart_part(folder, part, n_parts, ids,
                                {k: v[ids] for k, v in whole.items()} | shared,
                                {"step": 40, "n_atoms": n_atoms, "timestep_fs": 1.0})
    return whole, shared


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _overlapping_ids(folder):
    arrays, meta = mdio.load_restart(folder / "p1.npz")
    arrays["ids"][0] = mdio.load_restart(folder / "p0.npz")[0]["ids"][0]  # an atom twice
    mdio.save_restart(folder / "p1.npz", arrays, meta)


def _short_ids(folder):
    arrays, meta = mdio.load_restart(folder / "p1.npz")
    arrays["ids"] = arrays["ids"][1:]
    mdio.save_restart(folder / "p1.npz", arrays, meta)


@pytest.mark.parametrize("corrupt, where, words", [
    (lambda f: (f / "p1.npz").unlink(), "restart.parts/p1.npz", "no such restart file"),
    (lambda f: _truncate(f / "p1.npz"), "restart.parts/p1.npz", "cannot read restart file"),
    (lambda f: _truncate(f / "p0.npz"), "restart.parts/p0.npz", "cannot read restart file"),
    (lambda f: (f / "p0.npz").write_text("not an npz"), "restart.parts/p0.npz",
     "cannot read restart file"),
    (_overlapping_ids, "restart.parts:", "not each of the 64 atoms once"),
    (_short_ids, "restart.parts/p1.npz", "31 ids but 32 rows of positions"),
])
def test_resume_from_bad_restart_parts_one_error_line(tmp_path, pot_path, capsys,
                                                      no_simulation, corrupt, where, words):
    path = _write(tmp_path, pot_path)
    folder = tmp_path / "out" / mdio.RESTART_PARTS
    _restart_parts(folder)
    corrupt(folder)
    assert main(["md", str(path), "--resume", "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert str(tmp_path / "out" / where) in line and words in line, line


def test_resume_without_restart_names_both(tmp_path, pot_path, capsys, no_simulation):
    path = _write(tmp_path, pot_path)
    (tmp_path / "out").mkdir()
    assert main(["md", str(path), "--resume", "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert str(tmp_path / "out") in line and "restart.npz" in line and "restart.parts" in line


def test_existing_output_refused_before_compute(tmp_path, pot_path, capsys, monkeypatch):
    """The check is collective (process 0's verdict broadcast) and comes before any
    computation, so in a multi-process run no process waits in a collective for one that
    failed; here on one process through the same code path, and as process 1 told by
    process 0 (the broadcast) that the output exists although it sees none itself."""
    from jax.experimental import multihost_utils

    def boom(*a, **k):
        raise AssertionError("computation started before the output directory was checked")

    monkeypatch.setattr(md.runner, "_cached_engine", boom)
    path = _write(tmp_path, pot_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "trajectory.p1.extxyz").write_text("")
    assert main(["md", str(path), "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert f"{tmp_path / 'out'} already holds MD output" in line

    seen = []
    monkeypatch.setattr(md.runner.jax, "process_index", lambda: 1)
    monkeypatch.setattr(multihost_utils, "broadcast_one_to_all",
                        lambda x: seen.append(int(x)) or np.int32(1))
    out2 = tmp_path / "empty"
    assert main(["md", str(path), "-o", str(out2), "--no-progress"]) == 2
    assert seen == [0]  # process 1 did not look itself
    assert f"{out2} already holds MD output" in _one_error_line(capsys)


def test_per_process_output_key(tmp_path, pot_path, capsys, no_compute):
    text = GOOD.format(pot=pot_path, out=tmp_path / "out", fmt="csv")
    assert load_config(_write(tmp_path, pot_path, text)).per_process_output is None
    for value, expect in (("true", True), ("false", False), ('"auto"', None)):
        path = _write(tmp_path, pot_path, text.replace(
            "progress = false", f"progress = false\nper_process_output = {value}"))
        assert load_config(path).per_process_output is expect
    path = _write(tmp_path, pot_path, text.replace(
        "progress = false", 'progress = false\nper_process_output = "yes"'))
    line_no = path.read_text().splitlines().index('per_process_output = "yes"') + 1
    assert main(["md", str(path)]) == 2
    line = _one_error_line(capsys)
    assert line == (f"mtpjax: error: {path}:{line_no}: run.per_process_output: expected true, "
                    "false or \"auto\", got 'yes'")


def test_cli_per_process_output_writes_parts_and_resumes(tmp_path, pot_path):
    text = GOOD.format(pot=pot_path, out=tmp_path / "out", fmt="csv").replace(
        "progress = false", "progress = false\nper_process_output = true")
    text = text[: text.index('[[stage]]\nname = "squeeze"')]  # the NVT stage only: 40 steps
    path = _write(tmp_path, pot_path, text)
    out = tmp_path / "out"
    assert main(["md", str(path), "--no-progress"]) == 0
    assert (out / "trajectory.p0.extxyz").is_file() and not (out / "trajectory.extxyz").exists()
    assert not (out / "restart.npz").exists() and mdio.restart_step(out / "restart.parts") == 40
    frames = mdio.read_trajectory(out)
    assert [a.info["step"] for a in frames] == [20, 40] and len(frames[0]) == 64
    # --resume takes the parts (nothing left to run: the outputs stay as they are)
    assert main(["md", str(path), "--resume", "--no-progress"]) == 0
    np.testing.assert_array_equal(read_thermo(out / "thermo.csv")["step"], np.arange(0, 41, 10))
    assert [a.info["step"] for a in mdio.read_trajectory(out)] == [20, 40]
