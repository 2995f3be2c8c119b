"""Config validation (errors before any compute, naming file and key), the `mtpjax md` CLI,
output files (thermo CSV/JSONL, extxyz, .traj, restart) and resume after a crash."""

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest

import md.runner
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
