"""Every malformed input of tests/data/bad_inputs/ ends in one line, `mtpjax: error: FILE:LINE:
...`, exit status 2 and no traceback (issue 13).

The corpus runs in-process through ``mtpjax.cli.main`` (the same code path as the console
script, without paying the JAX import per case); a handful of cases run as real subprocesses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mtpjax.cli import main

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "data" / "bad_inputs"
POT = ROOT / "tests" / "data" / "parity" / "si_L08" / "pot.mtp"
TEMPLATE = ROOT / "tests" / "data" / "mlip_templates" / "08.mtp"


def _argv(name: str, tmp: Path) -> list[str]:
    f = str(BAD / name)
    if name.endswith(".mtp"):
        return ["calc-efs", f, str(BAD / "good.cfg"), str(tmp / "out.cfg"), "--quiet"]
    if name.startswith("cfg_stress"):
        return ["calc-errors", str(POT), f, "--quiet"]
    if name.endswith(".cfg"):
        return ["calc-efs", str(POT), f, str(tmp / "out.cfg"), "--quiet"]
    if name.endswith(".xyz"):
        return ["train", str(TEMPLATE), f, "--species", "Si", "--workdir", str(tmp / "run"),
                "--trained-pot-name", str(tmp / "t.mtp"), "--quiet"]
    if name.startswith("md_"):
        return ["md", f, "--check"]
    if name.startswith("distill_"):
        return ["distill", "check", f]
    raise AssertionError(name)


# file -> (line at fault or None, words the message must contain)
CASES = {
    "mtp_typo_key.mtp": (4, ["unknown key 'scalng'", "did you mean 'scaling'", "expected one of"]),
    "mtp_bad_version.mtp": (2, ["unsupported version '2.0.0'", "expected 1.1.0"]),
    "mtp_funcs_count.mtp": (15, ["has 2 rows", "radial_funcs_count = 3"]),
    "mtp_basic_count.mtp": (17, ["alpha_index_basic_count = 12", "has 11 entries"]),
    "mtp_min_ge_max.mtp": (8, ["min_dist < max_dist", "6.0"]),
    "mtp_no_mapping.mtp": (None, ["missing required key 'alpha_moment_mapping'"]),
    "mtp_radial_row.mtp": (14, ["row of 7 numbers", "radial_basis_size = 8"]),
    "mtp_truncated.mtp": (24, ["unbalanced braces", "truncated"]),
    "mtp_species_coeffs_number.mtp": (23, ["expected a number", "-3.5357x"]),
    "mtp_nan_coeff.mtp": (24, ["finite", "nan"]),
    "mtp_species_count.mtp": (12, ["block 0-1 missing", "species_count = 2"]),
    "cfg_garbage_row.cfg": (26, ["configuration 1", "expected a number", "1.35x500"]),
    "cfg_nan_position.cfg": (26, ["configuration 1", "finite", "nan"]),
    "cfg_inf_force.cfg": (26, ["finite", "inf"]),
    "cfg_missing_end.cfg": (17, ["not closed by END_CFG"]),
    "cfg_size_mismatch.cfg": (27, ["Size = 3", "2 atom rows"]),
    "cfg_unknown_type.cfg": (26, ["configuration 1", "atom type 1", "species_count = 1"]),
    "cfg_singular_cell.cfg": (20, ["singular Supercell"]),
    "cfg_energy_last.cfg": (29, ["Energy without a value"]),
    "cfg_plusstress_last.cfg": (29, ["PlusStress without a value"]),
    "cfg_unknown_field.cfg": (27, ["unknown field 'Enrgy'", "Energy"]),
    "cfg_coincident_atoms.cfg": (25, ["configuration 1", "atoms 0 and 1 coincide", "ids 1, 2"]),
    "cfg_coincident_image.cfg": (25, ["configuration 1", "atoms 0 and 1", "periodic image",
                                      "coincide"]),
    "cfg_stress_kbar.cfg": (30, ["configuration 1", "PlusStress", "implausible",
                                 "--stress-unit"]),
    "xyz_no_forces.xyz": (9, ["configuration 2", "no force labels", "REF_forces"]),
    "xyz_no_energy.xyz": (5, ["configuration 1", "no energy label", "REF_energy"]),
    "xyz_stress_gpa.xyz": (5, ["configuration 1", "implausible", "GPa"]),
    "md_negative_timestep.toml": (9, ["run.timestep_fs", "> 0"]),
    "md_stage_steps.toml": (25, ["stage[1].steps"]),
    "md_packing.toml": (6, ["structure.random.min_distance_A", "cannot be met"]),
    "md_tau.toml": (25, ["stage[1].tau_p_fs", "2 time steps"]),
    "md_invalid_toml.toml": (17, ["invalid TOML"]),
    "distill_workers.toml": (22, ["labels.workers", "≥ 0", "-3"]),
    "distill_dist_order.toml": (23, ["min_dist_A < max_dist_A"]),
    "distill_optimizer.toml": (26, ["fit.optimizer", "'sgd'", "lbfgs"]),
    "distill_md_timestep.toml": (49, ["md.protocol.compress.run.timestep_fs", "> 0"]),
    "distill_density.toml": (16, ["sample.density_g_cm3", "> 0"]),
    "distill_species.toml": (4, ["run.species", "'Xx'"]),
    "distill_d0_labels.toml": (10, ["d0.train", "xyz_no_forces.xyz:9", "no force labels"]),
}


def test_corpus_is_complete():
    files = {p.name for p in BAD.iterdir()} - {"good.cfg", "good.xyz", "md_good.toml",
                                               "README.md"}
    assert files == set(CASES) and len(CASES) >= 20


def _check_message(err: str, name: str, line, words) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    msg = lines[0]
    assert msg.startswith("mtpjax: error: ") and "Traceback" not in err, err
    where = re.escape(name) + (rf":{line}: " if line is not None else r": ")
    assert re.search(where, msg), (where, msg)
    for word in words:
        assert word in msg, (word, msg)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gives_one_line(name, tmp_path, capsys):
    line, words = CASES[name]
    assert main(_argv(name, tmp_path)) == 2
    _check_message(capsys.readouterr().err, name, line, words)
    assert not (tmp_path / "out.cfg").exists() and not (tmp_path / "run").exists()


def test_good_inputs_of_the_corpus_pass(tmp_path, capsys):
    assert main(["md", str(BAD / "md_good.toml"), "--check"]) == 0
    from mtpjax.fit.data import read_samples
    from mtpjax.io.cfg import read_cfg

    assert len(read_cfg(BAD / "good.cfg")) == 2
    assert len(read_samples(BAD / "good.xyz", species=["Si"])) == 2


def _cli(*args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "mtpjax.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)


@pytest.mark.parametrize("name", ["mtp_typo_key.mtp", "cfg_coincident_atoms.cfg",
                                  "md_negative_timestep.toml"])
def test_console_subprocess(name, tmp_path):
    line, words = CASES[name]
    proc = _cli(*_argv(name, tmp_path))
    assert proc.returncode == 2, proc.stderr
    _check_message(proc.stderr, name, line, words)


def test_debug_flag_shows_traceback(tmp_path):
    proc = _cli("--debug", *_argv("mtp_truncated.mtp", tmp_path))
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "FileFormatError" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("mtpjax: error: ")
