"""`.mtp` files written by mtpjax are what MLIP-2's reader (``mlp``, LAMMPS ``pair_style mlip``)
needs: a strict replay of ``MLMTPR::Load`` reads them with every value intact, and, where the
``mlp`` binary is available (``MLP_BIN``), ``mlp calc-efs`` on them equals ``MTPCalculator``."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from mtpjax.calculator import MTPCalculator
from mtpjax.io.cfg import read_cfg
from mtpjax.io.mtp_file import format_mtp, read_mtp, write_mtp
from tests.conftest import PARITY, TEMPLATES
from tests.lammps.mlip_reader import MlipReadError, read_like_mlip

MLIP_FILES = [PARITY / c / "pot.mtp" for c in ("si_L08", "species2_L16")] + [
    TEMPLATES / f"{level:02d}.mtp" for level in (2, 12, 22)
]


def _assert_same(parsed: dict, pot) -> None:
    """Every value MLIP reads equals the potential's (bit for bit)."""
    k = pot.basis.radial_funcs_needed
    assert parsed["species_count"] == pot.species_count
    assert parsed["radial_basis_type"] == pot.radial_basis_type
    assert (parsed["min_dist"], parsed["max_dist"]) == (pot.min_dist, pot.max_dist)
    assert parsed["radial_basis_size"] == pot.radial_basis_size
    assert parsed["radial_funcs_count"] == k
    assert parsed["scaling"] == pot.scaling
    b = pot.basis
    assert parsed["alpha_moments_count"] == b.alpha_moments_count
    np.testing.assert_array_equal(parsed["alpha_index_basic"], b.alpha_index_basic)
    np.testing.assert_array_equal(parsed["alpha_index_times"], b.alpha_index_times.reshape(-1, 4))
    np.testing.assert_array_equal(parsed["alpha_moment_mapping"], b.alpha_moment_mapping)
    if pot.is_trained:
        np.testing.assert_array_equal(parsed["radial_coeffs"], pot.radial_coeffs[:, :, :k])
        np.testing.assert_array_equal(parsed["species_coeffs"], pot.species_coeffs)
        np.testing.assert_array_equal(parsed["moment_coeffs"], pot.moment_coeffs)
    else:
        assert parsed["radial_coeffs"] is None and parsed["moment_coeffs"] is None


@pytest.mark.parametrize("path", MLIP_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_replayed_reader_reads_mlip_files(path):
    """The replay agrees with mtpjax's reader on files that mlp itself wrote."""
    _assert_same(read_like_mlip(path.read_text()), read_mtp(path))


def _awkward(pot, rng):
    """``pot`` with what MLIP's reader cannot take as such: a name of several words, a tag
    over two lines and (when trained) two radial functions no basic moment uses."""
    extra = {"potential_name": "my  Si potential", "potential_tag": "fitted\nby mtpjax"}
    if pot.is_trained:
        c, _, k, r = pot.radial_coeffs.shape
        extra["radial_coeffs"] = np.concatenate(
            [pot.radial_coeffs, rng.normal(size=(c, c, 2, r))], axis=2)
        extra["radial_funcs_count"] = k + 2
    return dataclasses.replace(pot, **extra)


@pytest.mark.parametrize("path", MLIP_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_written_files_parse_as_mlip_reads_them(tmp_path, path):
    pot = _awkward(read_mtp(path), np.random.default_rng(0))
    out = tmp_path / "pot.mtp"
    write_mtp(out, pot)
    text = out.read_text()
    parsed = read_like_mlip(text)
    _assert_same(parsed, pot)
    assert parsed["potential_name"] == "my_Si_potential"
    assert "potential_tag = fitted by mtpjax\n" in text
    lines = text.splitlines()
    assert lines[:2] == ["MTP", "version = 1.1.0"]
    for line in lines[2:]:  # every key = value with the single-space separator
        if "=" in line:
            key, _, value = line.strip().partition(" = ")
            assert key.isidentifier() and value == value.strip(), line
    # mtpjax reads its own file back to the same potential (less the unused radial functions)
    again = read_mtp(out)
    assert format_mtp(again) == text


def test_dropped_radial_functions_change_nothing(tmp_path):
    pot = read_mtp(PARITY / "si_L08" / "pot.mtp")
    padded = _awkward(pot, np.random.default_rng(1))
    out = tmp_path / "pot.mtp"
    write_mtp(out, padded)
    atoms = Atoms("Si5", positions=[[0, 0, 0], [2.1, 0.3, 0], [0.2, 2.2, 0.4], [1.1, 1.0, 1.9],
                                      [2.4, 2.0, 1.3]], cell=np.eye(3) * 5.6, pbc=True)
    results = []
    for p in (padded, read_mtp(out)):
        atoms.calc = MTPCalculator(p, species=["Si"])
        results.append((atoms.get_potential_energy(), atoms.get_forces()))
    # equal up to rounding (the einsums run over a different number of radial functions)
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-14)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("potential_name = MTP1m", "potential_name = MTP 1m", "expected species_count"),
        ("version = 1.1.0", "version = 1.1.0 ", "version"),
        ("species_count = 2", "species_count=2", "expected species_count"),
        ("alpha_moments_count = ", "alpha_moments_count = x", "an integer"),
        ("radial_funcs_count = 4", "radial_funcs_count = 5", "stream fails"),
        ("species_coeffs = {", "species_coeffs =  {", "a double"),
    ],
)
def test_replayed_reader_is_strict(old, new, message):
    """The replay fails where MLIP fails, so passing it means something."""
    text = (PARITY / "species2_L16" / "pot.mtp").read_text()
    assert old in text
    with pytest.raises(MlipReadError, match=message):
        read_like_mlip(text.replace(old, new, 1))


def test_replayed_reader_wants_radial_funcs_count_exact():
    text = (TEMPLATES / "12.mtp").read_text()
    assert "radial_funcs_count = 3" in text
    read_like_mlip(text)
    with pytest.raises(MlipReadError, match="Wrong number of radial functions"):
        read_like_mlip(text.replace("radial_funcs_count = 3", "radial_funcs_count = 4"))


MLP_BIN = os.environ.get("MLP_BIN")


@pytest.mark.skipif(not MLP_BIN, reason="MLP_BIN (the mlp binary of MLIP-2) is not set")
def test_mlp_calc_efs_on_written_potential_equals_calculator(tmp_path):
    """``mlp calc-efs`` reads an mtpjax-written potential (two species, a name of several
    words, unused radial functions) and gives MTPCalculator's energies and forces (to the
    digits mlp prints: 12 decimals for energies, 6 for forces)."""
    case = PARITY / "species2_L16"
    pot = _awkward(read_mtp(case / "pot.mtp"), np.random.default_rng(2))
    write_mtp(tmp_path / "pot.mtp", pot)
    configs = read_cfg(case / "configs.cfg")[:4]
    from mtpjax.io.cfg import write_cfg

    write_cfg(tmp_path / "in.cfg", configs)
    run = subprocess.run([MLP_BIN, "calc-efs", str(tmp_path / "pot.mtp"), str(tmp_path / "in.cfg"),
                          str(tmp_path / "out.cfg")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    ours = read_cfg(tmp_path / "out.cfg")
    assert len(ours) == len(configs)
    calc = MTPCalculator(pot, species=["Si", "O"])
    for cfg, ref in zip(configs, ours, strict=True):
        atoms = Atoms(numbers=[14 if t == 0 else 8 for t in cfg.types], positions=cfg.positions,
                      cell=cfg.cell, pbc=cfg.pbc)
        atoms.calc = calc
        assert abs(atoms.get_potential_energy() - ref.energy) <= 1e-9 * len(atoms)
        assert np.abs(atoms.get_forces() - ref.forces).max() <= 1e-6


MLIP_INTERFACE_LIB = os.environ.get("MLIP_INTERFACE_LIB")


@pytest.mark.skipif(not MLIP_INTERFACE_LIB,
                    reason="MLIP_INTERFACE_LIB (MLIP-2's lib_mlip_interface.a) is not set")
def test_pair_style_mlip_path_on_written_potential(tmp_path):
    """What ``pair_style mlip`` runs (MLIP_init on an mlip.ini, MLIP_calc_nbh over a full
    neighbour list of local atoms with ghosts, newton on), driven without LAMMPS by
    mlip_nbh_driver.cpp, on an mtpjax-written two-species potential: MTPCalculator's energy
    and forces (ghost forces folded onto their owners)."""
    from ase.build import bulk

    from tests.lammps.lammps_style import fold_ghost_forces, full_edges, local_and_ghosts

    driver = tmp_path / "driver"
    # link flags of MLIP-2's make/config.mk (OpenBLAS, gfortran); MLIP_LDFLAGS overrides them
    ldflags = os.environ.get(
        "MLIP_LDFLAGS", "-L/lib -l:libopenblas.a -L/usr/local/gfortran/lib -lgfortran").split()
    build = subprocess.run(
        ["g++", "-O2", str(Path(__file__).with_name("mlip_nbh_driver.cpp")),
         MLIP_INTERFACE_LIB, *ldflags, "-o", str(driver)],
        capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    pot = _awkward(read_mtp(PARITY / "species2_L16" / "pot.mtp"), np.random.default_rng(4))
    write_mtp(tmp_path / "pot.mtp", pot)
    (tmp_path / "mlip.ini").write_text("mtp-filename    pot.mtp\nselect          FALSE\n")
    atoms = bulk("SiO", "zincblende", a=5.0, cubic=True)
    atoms.positions += np.random.default_rng(8).normal(scale=0.08, size=atoms.positions.shape)
    types = np.array([0 if s == "Si" else 1 for s in atoms.get_chemical_symbols()])
    n = len(atoms)
    x, owner = local_and_ghosts(atoms.positions, atoms.cell.array, pot.max_dist + 1.0)
    senders, receivers = full_edges(x, pot.max_dist + 1.0)
    lines = [f"{n} {len(x) - n} 2"]
    lines += [f"{types[o] + 1} {a!r} {b!r} {c!r}"
              for o, (a, b, c) in zip(owner, x.tolist(), strict=True)]
    for i in range(n):
        js = receivers[senders == i]
        lines.append(" ".join(str(v) for v in [len(js), *js]))
    run = subprocess.run([str(driver), "mlip.ini"], input="\n".join(lines) + "\n", cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout.splitlines()
    start = next(k for k, line in enumerate(out) if line.startswith("cutoff"))
    assert float(out[start].split()[1]) == pot.max_dist
    energy = float(out[start + 1].split()[1])
    forces = np.array([[float(v) for v in line.split()] for line in out[start + 2:]])
    atoms.calc = MTPCalculator(pot, species=["Si", "O"])
    assert abs(energy - atoms.get_potential_energy()) <= 1e-10
    folded = fold_ghost_forces(forces, owner, n)
    assert np.abs(folded - atoms.get_forces()).max() <= 1e-10
