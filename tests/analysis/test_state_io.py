import json

import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from md.analysis import (
    build_crystal,
    density_g_cm3,
    diamond_energy_per_atom,
    energy_above_diamond,
    read_thermo,
    read_trajectory,
    relax_at_pressure,
)
from md.analysis.calculators import load_calculator, stillinger_weber_si
from md.analysis.thermo import pressures_for_frames


def test_delta_e_is_zero_for_relaxed_diamond_and_positive_when_rattled(rattled):
    calc = stillinger_weber_si()
    e_dia = diamond_energy_per_atom(calc, cell_filter="unit")
    assert e_dia == pytest.approx(-4.3366, abs=1e-3)  # SW: 2.1683 eV × 2 per atom
    assert energy_above_diamond(build_crystal("diamond").repeat(2), calc, e_dia) == pytest.approx(
        0.0, abs=1e-4)
    assert energy_above_diamond(rattled, calc, e_dia) > 0.01


def test_relax_at_pressure_reaches_the_target_pressure():
    relaxed = relax_at_pressure(build_crystal("diamond"), stillinger_weber_si(), 5.0)
    relaxed.calc = stillinger_weber_si()
    pressure = -relaxed.get_stress()[:3].mean() / 0.006241509074  # eV/Å³ per GPa
    assert pressure == pytest.approx(5.0, abs=0.05)
    assert relaxed.info["pressure_GPa"] == 5.0


def test_density_of_diamond(diamond):
    assert density_g_cm3(diamond) == pytest.approx(2.329, abs=2e-3)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("log.csv", "Step,Time,Temp,Press [bar],Volume,PotEng\n0,0,300,10000,100,-5\n"
                    "10,1,310,20000,99,-4\n"),
        ("log.txt", "# step time T P_GPa vol pe\n0 0 300 1.0 100 -5\n10 1 310 2.0 99 -4\n"),
        ("log.jsonl", '{"step": 0, "t_ps": 0, "temperature": 300, "pressure": 1.0, "V": 100,'
                      ' "E": -5}\n{"step": 10, "t_ps": 1, "temperature": 310, "pressure": 2.0,'
                      ' "V": 99, "E": -4}\n'),
    ],
)
def test_thermo_logs_with_different_column_names(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    log = read_thermo(path)
    assert np.allclose(log["P"], [1.0, 2.0])  # GPa (bar converted)
    assert np.allclose(log["T"], [300, 310])
    assert np.allclose(log["step"], [0, 10])
    assert np.allclose(log["V"], [100, 99])
    assert np.allclose(log["E"], [-5, -4])


def test_thermo_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="no such thermo log"):
        read_thermo(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.csv: empty thermo log"):
        read_thermo(empty)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("step,P\n1,2,3\n")
    with pytest.raises(ValueError, match="ragged.csv:2"):
        read_thermo(ragged)


def _write_frames(path, n=5):
    frames = []
    for k in range(n):
        atoms = build_crystal("diamond")
        atoms.info["step"] = 10 * k
        frames.append(atoms)
    ase.io.write(path, frames)
    return frames


def test_read_trajectory_every_keeps_the_last_frame(tmp_path):
    _write_frames(tmp_path / "t.extxyz", 5)
    traj = read_trajectory(tmp_path / "t.extxyz", every=3)
    assert traj.indices.tolist() == [0, 3, 4] and traj.n_total == 5


def test_empty_or_missing_trajectory_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.extxyz: empty trajectory"):
        read_trajectory(empty)
    with pytest.raises(ValueError, match="nothere.traj: no such trajectory"):
        read_trajectory(tmp_path / "nothere.traj")
    blank = tmp_path / "blank.extxyz"
    blank.write_text("\n\n")
    with pytest.raises(ValueError, match="blank.extxyz"):
        read_trajectory(blank)


def test_frame_pressures_from_stress_info_and_thermo(tmp_path):
    frames = _write_frames(tmp_path / "t.extxyz", 3)
    thermo = {"step": np.array([0.0, 20.0]), "P": np.array([0.0, 4.0])}
    p = pressures_for_frames(frames, np.arange(3), 3, thermo)
    assert np.allclose(p, [0.0, 2.0, 4.0])  # interpolated by step
    frames[0].info["pressure"] = 7.5
    stressed = frames[1]
    stressed.calc = SinglePointCalculator(stressed, stress=-np.r_[1, 1, 1, 0, 0, 0] * 0.00624151)
    p = pressures_for_frames(frames, np.arange(3), 3, None)
    assert p[0] == 7.5 and p[1] == pytest.approx(1.0, rel=1e-4) and np.isnan(p[2])


def test_calculator_specs():
    assert load_calculator("sw") is not None
    assert load_calculator("md.analysis.calculators:stillinger_weber_si") is not None
    with pytest.raises(ValueError, match="expected 'mtp:PATH'"):
        load_calculator("nonsense")
    with pytest.raises(ValueError, match="cannot load"):
        load_calculator("md.analysis.calculators:no_such_factory")
    with pytest.raises(ValueError, match="potential"):
        load_calculator("mtp:/no/such/file.mtp")


def test_json_ready_handles_numpy_and_nan():
    from md.analysis.summary import json_ready

    out = json_ready({"a": np.int64(3), "b": [np.float64(1.5), float("nan")], "c": (1, 2)})
    assert json.dumps(out) == '{"a": 3, "b": [1.5, null], "c": [1, 2]}'


def test_ase_traj_with_stored_stress_gives_frame_pressures(tmp_path):
    from ase.io.trajectory import Trajectory

    calc = stillinger_weber_si()
    with Trajectory(tmp_path / "run.traj", "w") as writer:
        for scale in (1.0, 0.98):
            atoms = build_crystal("diamond")
            atoms.set_cell(atoms.cell * scale, scale_atoms=True)
            atoms.calc = calc
            atoms.get_stress()
            writer.write(atoms)
    traj = read_trajectory(tmp_path / "run.traj")
    p = pressures_for_frames(traj.frames, traj.indices, traj.n_total)
    assert traj.n_total == 2 and abs(p[0]) < 0.1 and p[1] > 3.0
