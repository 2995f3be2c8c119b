"""`mtpjax new`: untrained potentials in mlp's template format."""

from __future__ import annotations

import numpy as np
import pytest

from mtpjax.cli import main
from mtpjax.io.mtp_file import read_mtp
from tests.conftest import TEMPLATES  # noqa: E402


def test_new_level16_single_species(tmp_path, capsys):
    out = tmp_path / "init.mtp"
    rc = main(["new", "--level", "16", "--species", "Si", "--min-dist", "1.5",
               "--max-dist", "5.0", "-o", str(out)])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "type 0 = Si" in stdout
    pot = read_mtp(out)
    assert pot.species_count == 1
    assert (pot.min_dist, pot.max_dist) == (1.5, 5.0)
    assert pot.radial_basis_size == 8
    assert pot.radial_basis_type == "RBChebyshev"
    assert pot.radial_funcs_count == pot.basis.radial_funcs_needed == 4
    assert not pot.is_trained
    b = pot.basis
    assert (b.alpha_moments_count, b.basic_count, b.times_count, b.scalar_count) == (
        350, 130, 969, 92)
    text = out.read_text()
    assert text.startswith("MTP\nversion = 1.1.0\n")
    for key in ("radial_coeffs", "moment_coeffs", "species_coeffs", "scaling"):
        assert key not in text
    if (TEMPLATES / "16.mtp").exists():
        mlip = read_mtp(TEMPLATES / "16.mtp")
        # same keys, in the same order, as MLIP's template
        keys = [line.split("=")[0].strip() for line in text.splitlines() if "=" in line]
        mlip_keys = [line.split("=")[0].strip()
                     for line in (TEMPLATES / "16.mtp").read_text().splitlines() if "=" in line]
        assert keys == mlip_keys
        np.testing.assert_array_equal(b.alpha_index_basic, mlip.basis.alpha_index_basic)


def test_new_several_species_and_options(tmp_path, capsys):
    out = tmp_path / "x.mtp"
    rc = main(["new", "--level", "8", "--species", "Si,O", "--species", "C",
               "--min-dist", "1.2", "--max-dist", "4.5", "--radial-basis-size", "10",
               "--radial-funcs-count", "2", "-o", str(out)])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "type 0 = Si" in stdout and "type 1 = O" in stdout and "type 2 = C" in stdout
    pot = read_mtp(out)
    assert pot.species_count == 3
    assert (pot.min_dist, pot.max_dist, pot.radial_basis_size) == (1.2, 4.5, 10)
    assert pot.radial_funcs_count == 2
    assert pot.basis.scalar_count == 9


@pytest.mark.parametrize("level", ["17", "30", "0", "-4"])
def test_new_bad_level(tmp_path, capsys, level):
    out = tmp_path / "bad.mtp"
    rc = main(["new", "--level", level, "--species", "Si", "-o", str(out)])
    assert rc != 0
    assert "level" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--species", "Xx"], "unknown element"),
        (["--species", "Si,Si"], "more than once"),
        (["--species", "Si", "--radial-funcs-count", "1"], "radial_funcs_count"),
        (["--species", "Si", "--radial-funcs-count", "4"], "MLIP's reader"),
        (["--species", "Si", "--min-dist", "5", "--max-dist", "4"], "min_dist"),
    ],
)
def test_new_bad_arguments(tmp_path, capsys, extra, message):
    out = tmp_path / "bad.mtp"
    rc = main(["new", "--level", "10", *extra, "-o", str(out)])
    assert rc != 0
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_new_level_not_an_integer(tmp_path):
    with pytest.raises(SystemExit):
        main(["new", "--level", "sixteen", "--species", "Si", "-o", str(tmp_path / "x.mtp")])
