"""`mtpjax label`: labelling, splits and exports from the command line; clear input errors."""

from __future__ import annotations

import ase.io
import pytest

from distill.store import open_store
from mtpjax.cli import main
from tests.distill.conftest import make_structures

EMT = "ase:ase.calculators.emt:EMT"


@pytest.fixture
def cells(tmp_path):
    path = tmp_path / "cells.xyz"
    ase.io.write(path, make_structures(6))
    return path


def test_label_split_export(cells, tmp_path, capsys):
    db = tmp_path / "d.db"
    argv = [
        "label",
        "--teacher",
        EMT,
        "--in",
        str(cells),
        "--db",
        str(db),
        "--workers",
        "0",
        "--no-progress",
        "--source",
        "cli",
        "--splits",
        "4,1,1",
        "--seed",
        "1",
        "--export-xyz",
        str(tmp_path / "all.xyz"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "6 labelled, 0 failed" in out and "train 4, validation 1, test 1" in out
    assert len(ase.io.read(tmp_path / "all.xyz", index=":")) == 6
    assert main(argv) == 0
    assert "0 labelled, 0 failed, 6 already in" in capsys.readouterr().out
    rows = list(open_store(db).select())
    assert len(rows) == 6 and {r.source for r in rows} == {"cli"}


def test_export_only_of_one_split(cells, tmp_path):
    db = str(tmp_path / "d.db")
    assert (
        main(
            [
                "label",
                "--teacher",
                EMT,
                "--in",
                str(cells),
                "--db",
                db,
                "--workers",
                "0",
                "--no-progress",
                "--splits",
                "0.5,0.5,0",
            ]
        )
        == 0
    )
    assert (
        main(
            ["label", "--db", db, "--split", "validation", "--export-xyz", str(tmp_path / "v.xyz")]
        )
        == 0
    )
    assert len(ase.io.read(tmp_path / "v.xyz", index=":")) == 3


@pytest.mark.parametrize(
    ("teacher", "inputs", "message"),
    [
        ("dft:x", None, "unknown teacher kind 'dft'"),
        ("gap:/nowhere/gap.xml", None, "model file not found: /nowhere/gap.xml"),
        ("mtp:/nowhere/p.mtp:Si", None, "model file not found: /nowhere/p.mtp"),
        (EMT, "missing.xyz", "missing.xyz: structure file not found"),
        (EMT, "broken.xyz", "broken.xyz:61: structure 6 (0-based, starting on this line)"),
        (EMT, "empty.xyz", "empty.xyz: no structures found"),
    ],
)
def test_bad_input_gives_clear_errors(cells, tmp_path, capsys, teacher, inputs, message):
    good = (tmp_path / "cells.xyz").read_text()
    broken = '2\nLattice="3 0 0 0 3 0 0 0 3"\nCu 0 0 0\nCu 1 1 x\n'
    (tmp_path / "broken.xyz").write_text(good + broken)
    (tmp_path / "empty.xyz").write_text("")
    path = tmp_path / inputs if inputs else cells
    argv = ["label", "--teacher", teacher, "--in", str(path), "--db", str(tmp_path / "d.db")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
