"""MD with MaxVol grades: ``gamma_select`` saves configurations (``Feature MV_grade``) and
``gamma_break`` stops the run with one clear message (MLIP's LAMMPS ``select:threshold`` /
``select:threshold-break``), from the Python API, the config file and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from md.config import ConfigError, StageConfig, load_config
from md.runner import ExtrapolationBreak, Simulation
from mtpjax import grade as G
from mtpjax.cli import main
from mtpjax.io.cfg import read_cfg
from tests.conftest import DATA
from tests.md.conftest import diamond

REF = DATA / "grade" / "si_L08"
POT = REF / "pot.mtp"


@pytest.fixture(scope="module")
def grader():
    return G.training_grader(POT, read_cfg(REF / "train.cfg"))


@pytest.fixture(scope="module")
def state_file(grader, tmp_path_factory):
    path = tmp_path_factory.mktemp("als") / "state.als"
    grader.save(path)
    return path


def _sim(tmp_path, grader, **kw):
    return Simulation(POT, diamond(2), timestep_fs=1.0, temperature_K=300, seed=2,
                      chunk_steps=8, thermo_every=4, output_dir=tmp_path, active_set=grader,
                      grade_every=5, **kw)


def test_gamma_select_saves_without_stopping(tmp_path, grader):
    # γ of this crystal against the mlearn training set is ~0.05–1: a low gamma_select saves
    # every graded frame and no gamma_break lets the run finish
    sim = _sim(tmp_path, grader, gamma_select=1e-6)
    sim.run_stage(StageConfig("nve", "nve", 15, 300.0, 300.0))
    sim.close()
    assert sim.step == 15 and [s for s, _ in sim.grades] == [5, 10, 15]
    saved = read_cfg(tmp_path / "preselected.cfg")
    assert len(saved) == len(sim.selected) == 3
    for cfg, (step, gamma) in zip(saved, sim.grades, strict=True):
        assert cfg.features["MD_step"] == str(step)
        assert float(cfg.features["MV_grade"]) == pytest.approx(gamma, rel=1e-6, abs=1e-6)
        assert cfg.energy is not None and cfg.forces.shape == (64, 3)
    # the saved geometry is the one that was graded
    np.testing.assert_allclose(grader.grade(saved), [g for _, g in sim.grades], rtol=1e-8)
    # the saved energy and stress are the MTP's at that geometry
    from ase import Atoms

    from mtpjax.calculator import MTPCalculator

    last = saved[-1]
    atoms = Atoms("Si64", positions=last.positions, cell=last.cell, pbc=True)
    atoms.calc = MTPCalculator(POT, species=["Si"])
    assert atoms.get_potential_energy() == pytest.approx(last.energy, rel=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), last.forces, atol=1e-8)
    np.testing.assert_allclose(last.stress, atoms.get_stress(voigt=True), atol=1e-8)

    # a threshold above every γ saves nothing
    sim = _sim(tmp_path / "high", grader, gamma_select=1e6)
    sim.run_stage(StageConfig("nve", "nve", 10, 300.0, 300.0))
    sim.close()
    assert sim.selected == [] and not (tmp_path / "high" / "preselected.cfg").exists()


def test_gamma_break_stops_with_message(tmp_path, grader):
    sim = _sim(tmp_path, grader, gamma_break=1e-6)
    with pytest.raises(ExtrapolationBreak) as info:
        sim.run_stage(StageConfig("nve", "nve", 40, 300.0, 300.0))
    sim.close()
    exc = info.value
    assert exc.step == 5 and sim.step == 5  # stopped at the first graded step
    assert exc.gamma == sim.grades[-1][1] > 1e-6
    msg = str(exc)
    assert "step 5" in msg and "gamma_break" in msg and str(tmp_path / "preselected.cfg") in msg
    assert f"{exc.gamma:.6g}" in msg and "\n" not in msg
    saved = read_cfg(tmp_path / "preselected.cfg")  # the offending configuration is saved
    assert len(saved) == 1 and float(saved[0].features["MV_grade"]) == pytest.approx(
        exc.gamma, rel=1e-6)


def test_bad_thresholds(grader):
    with pytest.raises(ValueError, match="grade_every"):
        Simulation(POT, diamond(1), gamma_break=2.0)
    with pytest.raises(ValueError, match="must not exceed"):
        Simulation(POT, diamond(1), active_set=grader, grade_every=5, gamma_select=3.0,
                   gamma_break=2.0)
    with pytest.raises(ValueError, match="> 0"):
        Simulation(POT, diamond(1), active_set=grader, grade_every=5, gamma_break=-1.0)


CONFIG = """
[potential]
file = "{pot}"
species = ["Si"]

[structure]
crystal = {{ name = "diamond", a_A = 5.43, repeat = [2, 2, 2] }}

[run]
temperature_K = 300.0
output_dir = "{out}"
thermo_every = 5
trajectory_every = 0
restart_every = 0
chunk_steps = 10
progress = false

[grade]
active_set = "{als}"
every = 5
{extra}

[[stage]]
ensemble = "nve"
steps = 20
"""


def test_md_cli_gamma_break(tmp_path, state_file, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG.format(pot=POT, out=tmp_path / "out", als=state_file,
                                 extra="gamma_select = 1e-6"))
    loaded = load_config(cfg)
    assert loaded.grade_every == 5 and loaded.gamma_select == 1e-6 and loaded.gamma_break is None
    rc = main(["md", str(cfg), "--gamma-break", "1e-6"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and len(err) == 1
    assert "step 5" in err[0] and "exceeds gamma_break = 1e-06" in err[0]
    assert len(read_cfg(tmp_path / "out" / "preselected.cfg")) == 1
    assert (tmp_path / "out" / "grades.csv").read_text().splitlines()[1].startswith("5,")


@pytest.mark.parametrize("extra, key", [
    ("gamma_select = 3.0\ngamma_break = 2.0", "grade.gamma_select"),
    ("gamma_break = -1", "grade.gamma_break"),
    ("gamma_brake = 2", "grade.gamma_brake"),
])
def test_grade_config_errors(tmp_path, state_file, extra, key):
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG.format(pot=POT, out=tmp_path / "out", als=state_file, extra=extra))
    with pytest.raises(ConfigError, match=key) as info:
        load_config(cfg)
    assert info.value.line is not None
