"""The Python API of the input checks: exceptions with ``path``/``line``, the ``.mtp`` typo,
MLIP-3 ``.cfg`` fields, coincident atoms, stress units, config ranges per key class."""

from __future__ import annotations

import pickle
import tomllib
from pathlib import Path

import numpy as np
import pytest

from mtpjax.errors import GeometryError, InputError
from mtpjax.io.cfg import read_cfg
from mtpjax.io.errors import FileFormatError
from mtpjax.io.mtp_file import read_mtp

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "data" / "bad_inputs"
POT = ROOT / "tests" / "data" / "parity" / "si_L08" / "pot.mtp"


# ------------------------------------------------------------------ .mtp


def test_mtp_typo_is_refused_not_defaulted(tmp_path):
    with pytest.raises(FileFormatError) as err:
        read_mtp(BAD / "mtp_typo_key.mtp")
    e = err.value
    assert isinstance(e, InputError) and isinstance(e, ValueError)
    assert e.path.endswith("mtp_typo_key.mtp") and e.line == 4
    assert "'scalng'" in e.message and "did you mean 'scaling'" in e.message
    for key in ("scaling", "min_dist", "moment_coeffs"):
        assert key in e.message  # the expected keys are listed
    assert read_mtp(POT).scaling != 1.0  # the original reads, with its scaling


def test_mtp_bad_coefficient_reports_path_and_line_in_order():
    # regression: _parse_numbers used to receive (text, line, path)
    with pytest.raises(FileFormatError) as err:
        read_mtp(BAD / "mtp_species_coeffs_number.mtp")
    assert err.value.path == str(BAD / "mtp_species_coeffs_number.mtp")
    assert err.value.line == 23
    assert str(err.value).startswith(f"{BAD / 'mtp_species_coeffs_number.mtp'}:23: ")


def test_mtp_repeated_key_and_unknown_radial_block(tmp_path):
    text = POT.read_text()
    bad = tmp_path / "twice.mtp"
    bad.write_text(text.replace("species_count = 1\n", "species_count = 1\nspecies_count = 1\n"))
    with pytest.raises(FileFormatError, match=r"twice\.mtp:6: species_count given twice"):
        read_mtp(bad)
    bad.write_text(text.replace("\t\t0-0\n", "\t\t0-1\n"))
    with pytest.raises(FileFormatError, match="block 0-1 but species_count = 1"):
        read_mtp(bad)


def test_input_error_pickles_with_location():
    err = FileFormatError("a.cfg", 3, "bad")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is FileFormatError and (again.path, again.line) == ("a.cfg", 3)
    assert str(again) == "a.cfg:3: bad"
    geo = pickle.loads(pickle.dumps(GeometryError("x", atoms=[2, 5])))
    assert geo.atoms == (2, 5) and geo.path is None and str(geo) == "x"


# ------------------------------------------------------------------ .cfg

MLIP3 = """BEGIN_CFG
 Size
    2
 Supercell
    0.0 2.715 2.715
    2.715 0.0 2.715
    2.715 2.715 0.0
 AtomData:  id type cartes_x cartes_y cartes_z fx fy fz nbh_grades
    1 0 0.0 0.0 0.0 0.1 0.0 0.0 1.5
    2 0 1.3575 1.3575 1.3575 -0.1 0.0 0.0 2.5
 Energy
    -10.79
 PlusStress:  xx yy zz yz xz xy
    0.5 0.5 0.5 0.0 0.0 0.0
 Stress:  xx yy zz yz xz xy
    1.0 1.0 1.0 0.0 0.0 0.0
 EnergyWeight
    2.0
 MV_grade
    1.25
 Feature   MV_grade\t3.5
 Feature   EFS_by\tVASP
END_CFG
"""


def test_mlip3_fields_are_read(tmp_path):
    path = tmp_path / "m3.cfg"
    path.write_text(MLIP3 + "\n" + MLIP3.replace("    2.0\n", "    1.0\n"))
    a, b = read_cfg(path)
    assert a.energy == -10.79 and a.forces[1, 0] == -0.1 and a.plus_stress[0] == 0.5
    assert a.extra["EnergyWeight"].tolist() == [2.0] and b.extra["EnergyWeight"].tolist() == [1.0]
    assert a.extra["Stress"].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert a.extra["MV_grade"].tolist() == [1.25]
    assert a.extra["column nbh_grades"].tolist() == [1.5, 2.5]
    assert a.features == {"MV_grade": "3.5", "EFS_by": "VASP"}
    assert (a.index, a.line, b.index, b.line) == (0, 1, 1, MLIP3.count("\n") + 2)
    assert a.atom_lines.tolist() == [9, 10]


@pytest.mark.parametrize("field", ["EnergyWeight", "MV_grade", "Stress:  xx yy zz yz xz xy"])
def test_mlip3_field_without_value(tmp_path, field):
    text = MLIP3.replace(" Feature   MV_grade\t3.5\n Feature   EFS_by\tVASP\n", "")
    head = f" {field}\n"
    start = text.index(head)
    nxt = text.index("\n", start + len(head)) + 1
    path = tmp_path / "m3.cfg"
    path.write_text(text[:start] + text[nxt:].replace("END_CFG", head + "END_CFG"))
    with pytest.raises(FileFormatError, match="without a value") as err:
        read_cfg(path)
    assert err.value.line == path.read_text().splitlines().index(head.rstrip("\n")) + 1


def test_coincident_atoms_name_atoms():
    from mtpjax.neighbors import pair_list

    pos = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    with pytest.raises(GeometryError, match="atoms 1 and 2 coincide") as err:
        pair_list(pos, None, [False] * 3, 3.0)
    assert err.value.atoms == (1, 2)
    cell = np.eye(3) * 3.0
    with pytest.raises(GeometryError, match="periodic image"):
        pair_list(np.array([[0.0, 0, 0], [3.0, 0, 0]]), cell, [True] * 3, 2.0)
    from mtpjax.neighbors import find_duplicate_atoms

    assert find_duplicate_atoms(pos) == (1, 2)
    assert find_duplicate_atoms(np.array([[0.0, 0, 0], [3.0, 0, 0]]), cell, [True] * 3) == (0, 1)
    assert find_duplicate_atoms(np.random.default_rng(0).random((500, 3)) * 10) is None


# ------------------------------------------------------------------ stress units


def test_stress_units_convert_and_check(tmp_path):
    from mtpjax.fit.data import TrainingDataError, check_samples, read_samples
    from mtpjax.units import EV_A3_IN_GPA, implausible_stress, stress_factor

    assert stress_factor("GPa") == pytest.approx(1 / EV_A3_IN_GPA)
    assert stress_factor("kbar", "vasp") == pytest.approx(-0.1 / EV_A3_IN_GPA)
    assert implausible_stress(np.array([0.5, -3.0])) is None
    assert "kbar" in implausible_stress(np.array([5000.0]))
    assert "GPa" in implausible_stress(np.array([35.0]))

    path = BAD / "xyz_stress_gpa.xyz"
    with pytest.raises(TrainingDataError, match="implausible") as err:
        check_samples(read_samples(path, species=["Si"]))
    assert err.value.line == 5 and err.value.path == str(path)
    samples = read_samples(path, species=["Si"], stress_unit="GPa")
    check_samples(samples, stress_unit="GPa")
    volume = abs(np.linalg.det(samples[1].cell))
    assert samples[1].virial[0, 0] == pytest.approx(35.0 / EV_A3_IN_GPA * volume)
    flipped = read_samples(path, species=["Si"], stress_unit="GPa", stress_sign="vasp")
    assert flipped[1].virial[0, 0] == pytest.approx(-samples[1].virial[0, 0])


def test_calc_errors_stress_unit_option(capsys):
    from mtpjax.cli import main

    data = str(BAD / "cfg_stress_kbar.cfg")
    assert main(["calc-errors", str(POT), data, "--quiet"]) == 2
    assert "--stress-unit" in capsys.readouterr().err
    assert main(["calc-errors", str(POT), data, "--quiet", "--stress-unit", "kbar"]) == 0


# ------------------------------------------------------------------ config ranges

TINY = ROOT / "tests" / "pipeline" / "tiny.toml"


def _pipeline(edits: dict):
    from distill.stages.config import validate

    raw = tomllib.loads(TINY.read_text())
    for dotted, value in edits.items():
        *path, key = dotted.split(".")
        table = raw
        for p in path:
            table = table.setdefault(p, {})
        table[key] = value
    return validate(raw, source=str(TINY), base=TINY.parent)


@pytest.mark.parametrize("edits, key, words", [
    ({"sample.timestep_fs": -1.0}, "sample.timestep_fs", "> 0"),         # time step
    ({"compression.timestep_fs": 50.0}, "compression.timestep_fs", "[-∞, 20]"),
    ({"sample.density_g_cm3": 0.0}, "sample.density_g_cm3", "> 0"),      # density
    ({"sample.temperature_K": -5.0}, "sample.temperature_K", "≥ 0"),     # temperature
    ({"compression.pressure_end_GPa": 5000.0}, "compression.pressure_end_GPa", "1000"),  # pressure
    ({"labels.workers": -3}, "labels.workers", "≥ 0"),                   # counts
    ({"rss.n_structures": 0}, "rss.n_structures", "[1, ∞]"),
    ({"fit.max_iter": -1}, "fit.max_iter", "≥ 0"),
    ({"fit.min_dist_A": 6.0}, "fit.max_dist_A", "min_dist_A < max_dist_A"),  # relations
    ({"rss.min_atoms": 9}, "rss.min_atoms", "min_atoms ≤ max_atoms"),
    ({"sample.snapshot_every": 500}, "sample.snapshot_every", "no snapshot"),
    ({"rss.volume_spread_A3": 25.0}, "rss.volume_spread_A3", "volume_per_atom_A3"),
    ({"sample.min_distance_A": 4.0}, "sample.min_distance_A", "cannot be met"),
    ({"fit.optimizer": "sgd"}, "fit.optimizer", "unknown optimiser"),  # choices
    ({"run.species": ["Si", "Si"]}, "run.species", "twice"),           # species
    ({"fit.energy_weight": 0.0, "fit.force_weight": 0.0}, "fit.energy_weight", "nothing to fit"),
])
def test_pipeline_config_ranges(edits, key, words):
    from distill.stages.config import PipelineConfigError

    with pytest.raises(PipelineConfigError) as err:
        _pipeline(edits)
    assert err.value.message.startswith(key + ":") and words in err.value.message
    assert err.value.path == str(TINY)


def test_pipeline_species_reach_md_protocols():
    from distill.stages.config import PipelineConfigError

    edits = {"run.species": ["C"], "d0.max_structures": 1}
    with pytest.raises(PipelineConfigError, match=r"element\(s\) Si not in species"):
        _pipeline(edits)  # D0 holds Si only: named, not silently relabelled
    from distill.stages.config import OPTIMIZERS
    from mtpjax.fit.trainer import OPTIMIZERS as TRAINER_OPTIMIZERS

    assert set(OPTIMIZERS) == set(TRAINER_OPTIMIZERS)


MD = (BAD / "md_good.toml").read_text()


@pytest.mark.parametrize("old, new, key", [
    ("timestep_fs = 1.0", "timestep_fs = 0.0", "run.timestep_fs"),
    ("timestep_fs = 1.0", "timestep_fs = 25.0", "run.timestep_fs"),
    ("temperature_K = 600.0\noutput", "temperature_K = -1.0\noutput", "run.temperature_K"),
    ("density_g_cm3 = 2.3", "density_g_cm3 = 40.0", "structure.random.density_g_cm3"),
    ("pressure_end_GPa = 5.0", "pressure_end_GPa = -500.0", "stage[1].pressure_end_GPa"),
    ("steps = 40\n\n", "steps = -4\n\n", "stage[0].steps"),
    ('ensemble = "nvt"\ntemperature_K = 600.0', 'ensemble = "nvt"\ntemperature_K = 0.0',
     "stage[0].temperature_K"),
    ('species = ["Si"]', 'species = ["Si", "Qq"]', "potential.species"),
])
def test_md_config_ranges_with_lines(tmp_path, old, new, key):
    from md.config import ConfigError, load_config

    assert old in MD
    path = tmp_path / "bad.toml"
    path.write_text(MD.replace(old, new, 1).replace("../parity/si_L08/pot.mtp", str(POT)))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    e = err.value
    assert e.message.startswith(key + ":") and e.path == str(path)
    k = next(i for i, (a, b) in enumerate(zip(old.split("\n"), new.split("\n"), strict=True))
             if a != b)
    assert e.line == MD[: MD.index(old)].count("\n") + k + 1  # the edited line


def test_toml_key_line():
    from mtpjax.config_check import toml_key_line

    text = TINY.read_text()
    lines = text.splitlines()
    assert lines[toml_key_line(text, "labels.executor") - 1].startswith("executor")
    assert lines[toml_key_line(text, "compression.n_atoms") - 1] == "n_atoms = 16"
    assert toml_key_line(text, "compression.n_atoms") > toml_key_line(text, "sample.n_atoms")
    line = toml_key_line(text, "md.protocol.compress.stage[1].tau_p_fs")
    assert '"compress"' in lines[line - 1]
    assert toml_key_line(text, "nowhere.key") is None


def test_md_structure_file_with_coincident_atoms(tmp_path, capsys):
    import ase.io
    from ase.build import bulk

    from mtpjax.cli import main

    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions[3] = atoms.positions[1]
    ase.io.write(tmp_path / "start.extxyz", atoms)
    text = MD.replace("../parity/si_L08/pot.mtp", str(POT)).replace(
        "random = { n_atoms = 16, density_g_cm3 = 2.3, min_distance_A = 2.1, seed = 1 }",
        'file = "start.extxyz"')
    (tmp_path / "md.toml").write_text(text)
    assert main(["md", str(tmp_path / "md.toml"), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtpjax: error: ") and "start.extxyz: frame -1: atoms 1 and 3" in err


def test_fit_options_name_toml_line_or_flag(tmp_path):
    import argparse

    from mtpjax.fit.cli import add_arguments, build_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    toml = tmp_path / "fit.toml"
    toml.write_text('species = ["Si"]\n[fit]\noptimizer = "lbfgs"\nforce_weight = -0.1\n')
    with pytest.raises(InputError) as err:
        build_config(parser.parse_args(["a.mtp", "b.cfg", "--config", str(toml)]))
    assert (err.value.path, err.value.line) == (str(toml), 4)
    assert err.value.message.startswith("fit.force_weight: force_weight must be")
    with pytest.raises(InputError) as err:
        build_config(parser.parse_args(["a.mtp", "b.cfg", "--config", str(toml),
                                        "--force-weight", "0.1", "--max-iter", "-2"]))
    assert err.value.path is None and err.value.message.startswith("--max-iter: ")
