"""Teacher specs: syntax, identity (file hashes) and clear errors."""

from __future__ import annotations

import json
import pickle

import pytest

from distill.compute import label_atoms
from distill.teachers import (
    TeacherSpec,
    build_calculator,
    check_teacher,
    model_files,
    parse_teacher,
    teacher_identity,
)


def test_parse_inline_specs():
    assert parse_teacher("gap:runs/g/gap.xml") == TeacherSpec("gap", "runs/g/gap.xml")
    assert parse_teacher("mtp:pot.mtp:Si,O") == TeacherSpec("mtp", "pot.mtp", ("Si", "O"))
    spec = parse_teacher('ase:ase.calculators.lj:LennardJones:{"sigma": 2.1, "rc": 5.0}')
    assert spec == TeacherSpec(
        "ase", "ase.calculators.lj:LennardJones", (), {"sigma": 2.1, "rc": 5.0}
    )


def test_parse_file_spec_resolves_relative_model(tmp_path):
    (tmp_path / "t.toml").write_text('kind = "mtp"\nmodel = "p.mtp"\nspecies = ["Si"]\n')
    assert parse_teacher(str(tmp_path / "t.toml")) == TeacherSpec(
        "mtp", str(tmp_path / "p.mtp"), ("Si",)
    )
    (tmp_path / "t.json").write_text(
        json.dumps({"kind": "ase", "model": "ase.calculators.emt:EMT"})
    )
    assert parse_teacher(str(tmp_path / "t.json")).model == "ase.calculators.emt:EMT"
    (tmp_path / "bad.toml").write_text('kind = "gap"\nmodle = "x"\n')
    with pytest.raises(ValueError, match="bad.toml.*modle"):
        parse_teacher(str(tmp_path / "bad.toml"))


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("foo:bar", ValueError, "unknown teacher kind 'foo'"),
        ("gap.xml", ValueError, "expected KIND"),
        ("ase:ase.calculators.emt:EMT:{bad", ValueError, "not JSON"),
        ("missing.toml", FileNotFoundError, "missing.toml"),
    ],
)
def test_parse_errors(text, error, match):
    with pytest.raises(error, match=match):
        parse_teacher(text)


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        (TeacherSpec("dft", "x"), ValueError, "unknown teacher kind 'dft'"),
        (TeacherSpec("gap", "/nowhere/gap.xml"), FileNotFoundError, "/nowhere/gap.xml"),
        (TeacherSpec("mtp", "/nowhere/p.mtp", ("Si",)), FileNotFoundError, "/nowhere/p.mtp"),
        (TeacherSpec("ase", "no_such_module:f"), ValueError, "cannot import no_such_module"),
        (TeacherSpec("ase", "ase.calculators.emt:Nope"), ValueError, "no callable 'Nope'"),
        (TeacherSpec("ase", "ase.calculators.emt"), ValueError, "module:function"),
    ],
)
def test_check_errors(spec, error, match):
    with pytest.raises(error, match=match):
        check_teacher(spec)


def test_gap_identity_covers_sparse_files_and_not_the_path(tmp_path):
    def write_model(folder, sparse_bytes):
        folder.mkdir()
        (folder / "gap.xml").write_text(
            '<GAP><gpCoordinates sparseX_filename="gap.xml.sparseX.A"/>'
        )
        (folder / "gap.xml.sparseX.A").write_bytes(sparse_bytes)
        return TeacherSpec("gap", str(folder / "gap.xml"))

    a = write_model(tmp_path / "a", b"123")
    assert [p.name for p in model_files(a)] == ["gap.xml", "gap.xml.sparseX.A"]
    moved = write_model(tmp_path / "b", b"123")
    edited = write_model(tmp_path / "c", b"124")
    ida, idb, idc = (teacher_identity(s)["teacher_id"] for s in (a, moved, edited))
    assert ida == idb != idc
    (tmp_path / "a" / "gap.xml.sparseX.A").unlink()
    with pytest.raises(FileNotFoundError, match="sparseX.A"):
        teacher_identity(a)


def test_gap_identity_ignores_the_fit_label_and_command_line(tmp_path):
    def write_model(folder, label, command, value="1.5"):
        folder.mkdir()
        (folder / "gap.xml").write_text(
            f'<{label}>\n<Potential label="{label}" init_args="IP GAP label={label}"/>\n'
            f'<GAP_params label="{label}"><gpCoordinates label="{label}1" value="{value}" '
            f'sparseX_filename="gap.xml.sparseX.{label}1"/>\n'
            f"<command_line><![CDATA[ at_file={command} rnd_seed=1]]></command_line>\n"
            f"</GAP_params></{label}>\n"
        )
        (folder / f"gap.xml.sparseX.{label}1").write_bytes(b"0.25 0.5")
        return TeacherSpec("gap", str(folder / "gap.xml"))

    first = write_model(tmp_path / "a", "GAP_2026_12_4_0_10_59_47_582", "/x/train.xyz")
    refit = write_model(tmp_path / "b", "GAP_2026_12_5_0_9_1_2_77", "/y/train.xyz")
    edited = write_model(tmp_path / "c", "GAP_2026_12_5_0_9_1_2_77", "/y/train.xyz", "1.6")
    ids = [teacher_identity(s) for s in (first, refit, edited)]
    assert ids[0]["files"][0]["sha256"] != ids[1]["files"][0]["sha256"]  # the bytes differ
    assert ids[0]["teacher_id"] == ids[1]["teacher_id"] != ids[2]["teacher_id"]


def test_identity_depends_on_settings_and_spec_pickles():
    lj = TeacherSpec("ase", "ase.calculators.lj:LennardJones", (), {"sigma": 2.0})
    lj2 = TeacherSpec("ase", "ase.calculators.lj:LennardJones", (), {"sigma": 2.1})
    assert teacher_identity(lj)["teacher_id"] != teacher_identity(lj2)["teacher_id"]
    assert pickle.loads(pickle.dumps(lj)) == lj
    assert teacher_identity(lj)["version"]


def test_label_atoms_periodic_stress_only():
    from tests.distill.conftest import make_structures

    cells = make_structures(5)
    calc = build_calculator(TeacherSpec("ase", "ase.calculators.emt:EMT"))
    periodic, cluster = label_atoms(cells[0], calc), label_atoms(cells[4], calc)
    assert periodic.ok and periodic.stress.shape == (6,) and periodic.forces.shape == (4, 3)
    assert cluster.ok and cluster.stress is None
