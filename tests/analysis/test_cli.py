import json

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import GPa

from md.analysis.calculators import stillinger_weber_si
from md.analysis.crystals import build_crystal
from mtpjax.cli import main


def _compression_run(directory, scales=(1.0, 0.99, 0.98), seed=0):
    """A tiny 'compression trajectory' of rattled diamond with SW energies and stresses."""
    calc, rng = stillinger_weber_si(), np.random.default_rng(seed)
    frames, rows = [], ["step,time,T,P,V,E"]
    for k, s in enumerate(scales):
        atoms = build_crystal("diamond").repeat(2)
        atoms.set_cell(atoms.cell * s, scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        atoms.calc = calc
        energy, stress = atoms.get_potential_energy(), atoms.get_stress()
        rows.append(f"{10 * k},{k},300,{-stress[:3].mean() / GPa},{atoms.get_volume()},{energy}")
        atoms.calc = None
        atoms.info["step"] = 10 * k
        frames.append(atoms)
    directory.mkdir(parents=True, exist_ok=True)
    ase.io.write(directory / "traj.extxyz", frames)
    (directory / "thermo.csv").write_text("\n".join(rows) + "\n")
    return directory / "traj.extxyz", directory / "thermo.csv"


def test_analyze_single_run_writes_json_and_figures(tmp_path, capsys):
    traj, thermo = _compression_run(tmp_path / "run")
    out = tmp_path / "out"
    rc = main(["analyze", str(traj), "--thermo", str(thermo), "--reference-calc", "sw",
               "--crystals", "diamond,sh", "--p-step", "2", "--cell-filter", "unit",
               "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "analysis.json").read_text())
    m = result["metrics"]
    assert m["N4"] == 100.0 and m["n_atoms"] == 64
    assert 100 < m["theta_mean_deg"] < 115 and m["theta_std_deg"] > 0.5
    assert 0 < m["delta_E_eV_per_atom"] < 0.2
    assert m["fsdp_inverse_height"] == pytest.approx(1 / m["fsdp_height"])
    series = result["series"]
    assert series["pressure_GPa"][0] < series["pressure_GPa"][-1]
    assert len(series["thermo_volume_per_atom_A3"]) == 3
    assert series["thermo_volume_per_atom_A3"][0] == pytest.approx(series["volume_per_atom_A3"][0])
    assert series["reference_mode"].startswith("pressure-adjusted")
    assert min(series["similarity"]["diamond"]) > 0.99 > max(series["similarity"]["sh"])
    refs = ase.io.read(out / "references.extxyz", ":")
    assert {a.info["crystal"] for a in refs} == {"diamond", "sh"}
    for name in ("sq.png", "bond_angles.png", "pv.png", "similarity_pressure.png"):
        assert (out / name).stat().st_size > 0
    assert "N3 (%)" in capsys.readouterr().out


def test_analyze_compare_mode_prints_table_one_row_per_model(tmp_path, capsys):
    traj_a, _ = _compression_run(tmp_path / "a", scales=(1.0,), seed=1)
    traj_b, _ = _compression_run(tmp_path / "b", scales=(1.0,), seed=2)
    first = tmp_path / "first"
    assert main(["analyze", str(traj_a), "--no-soap", "--out", str(first)]) == 0
    out = tmp_path / "cmp"
    rc = main(["analyze", str(first / "analysis.json"), str(traj_b), "--labels", "M16", "GAP",
               "--no-soap", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("Model"))
    for column in ("N3 (%)", "N5 (%)", "H^-1", "theta (deg)", "dtheta (deg)", "dE (eV/atom)"):
        assert column in header
    assert any(line.startswith("M16") for line in printed.splitlines())
    assert any(line.startswith("GAP") for line in printed.splitlines())
    table = (out / "table.md").read_text().splitlines()
    assert table[0].startswith("| Model") and len(table) == 4
    assert set(json.loads((out / "table.json").read_text())) == {"M16", "GAP"}
    assert (out / "GAP" / "analysis.json").is_file()


def test_analyze_empty_trajectory_fails_cleanly(tmp_path, capsys):
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    assert main(["analyze", str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "empty.extxyz" in err and "empty trajectory" in err


def test_analyze_frame_without_cell_fails_cleanly(tmp_path, capsys):
    cluster = Atoms("Si5", positions=np.random.default_rng(0).uniform(0, 6, (5, 3)))
    cluster.calc = SinglePointCalculator(cluster, energy=0.0)
    path = tmp_path / "cluster.xyz"
    ase.io.write(path, cluster)
    assert main(["analyze", str(path), "--no-soap", "--out", str(tmp_path / "o")]) == 2
    assert "3-D periodic cell" in capsys.readouterr().err


def test_analyze_unknown_crystal_fails_cleanly(tmp_path, capsys):
    traj, _ = _compression_run(tmp_path / "run", scales=(1.0,))
    rc = main(["analyze", str(traj), "--crystals", "diamond,unobtainium",
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "unknown crystal 'unobtainium'" in capsys.readouterr().err


def test_analyze_per_run_reference_calculators(tmp_path, capsys):
    traj_a, _ = _compression_run(tmp_path / "a", scales=(1.0,), seed=1)
    traj_b, _ = _compression_run(tmp_path / "b", scales=(1.0,), seed=2)
    out = tmp_path / "cmp"
    rc = main(["analyze", str(traj_a), str(traj_b), "--labels", "A", "B", "--no-soap",
               "--reference-calc", "none", "--reference-calc", "sw", "--cell-filter", "unit",
               "--markdown", "--out", str(out)])
    assert rc == 0
    rows = json.loads((out / "table.json").read_text())
    assert "delta_E_eV_per_atom" not in rows["A"] and rows["B"]["delta_E_eV_per_atom"] > 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("| Model") and printed[2].startswith("| A | ")
    assert printed[2].endswith("| - |")  # no ΔE for A
    assert main(["analyze", str(traj_a), str(traj_b), "--reference-calc", "sw", "--no-soap",
                 "--reference-calc", "sw", "--reference-calc", "sw", "--out", str(out)]) == 2
    assert "3 --reference-calc specs for 2 runs" in capsys.readouterr().err


def test_default_labels_are_unique():
    from pathlib import Path

    from md.analysis.cli import _default_labels

    assert _default_labels([Path("m16/traj.xyz"), Path("gap/traj.xyz")]) == ["m16-traj", "gap-traj"]
    assert _default_labels([Path("r/M16/analysis.json"), Path("q.traj")]) == ["M16", "q"]
