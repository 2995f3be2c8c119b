"""`.mtp` and `.cfg` readers/writers: round trips and errors that name file and line."""

import numpy as np
import pytest

from mtpjax.io.cfg import Configuration, read_cfg, write_cfg
from mtpjax.io.errors import FileFormatError
from mtpjax.io.mtp_file import format_mtp, read_mtp, write_mtp
from tests.conftest import PARITY, TEMPLATES


@pytest.mark.parametrize("path", [PARITY / "species2_L16" / "pot.mtp", TEMPLATES / "12.mtp"])
def test_mtp_round_trip_keeps_every_number(tmp_path, path):
    pot = read_mtp(path)
    out = tmp_path / "copy.mtp"
    write_mtp(out, pot)
    again = read_mtp(out)
    for name in ("alpha_index_basic", "alpha_index_times", "alpha_moment_mapping"):
        assert np.array_equal(getattr(pot.basis, name), getattr(again.basis, name))
    for name in ("radial_coeffs", "species_coeffs", "moment_coeffs"):
        a, b = getattr(pot, name), getattr(again, name)
        assert (a is None and b is None) or np.array_equal(a, b)  # bit-exact
    assert (pot.min_dist, pot.max_dist, pot.scaling) == (
        again.min_dist,
        again.max_dist,
        again.scaling,
    )
    assert format_mtp(again) == out.read_text()


def _corrupt(tmp_path, src, old, new):
    text = src.read_text()
    assert old in text
    bad = tmp_path / "bad.mtp"
    bad.write_text(text.replace(old, new, 1))
    return bad


def test_malformed_mtp_names_file_and_line(tmp_path):
    src = PARITY / "si_L08" / "pot.mtp"
    bad = _corrupt(tmp_path, src, "species_count = 1", "species_count = one")
    with pytest.raises(FileFormatError, match=r"bad\.mtp:\d+: bad value for species_count"):
        read_mtp(bad)
    bad = _corrupt(tmp_path, src, "alpha_index_times_count = 14", "alpha_index_times_count = 15")
    with pytest.raises(FileFormatError, match=r"bad\.mtp:\d+: alpha_index_times_count = 15"):
        read_mtp(bad)
    bad = _corrupt(tmp_path, src, "{0, 0, 1, 11}", "{0, 0, 1, 99}")
    with pytest.raises(FileFormatError, match="alpha_moments_count"):
        read_mtp(bad)
    with pytest.raises(FileFormatError, match="cannot read"):
        read_mtp(tmp_path / "missing.mtp")


def test_cfg_round_trip_with_optional_fields(tmp_path):
    configs = read_cfg(PARITY / "si_L08" / "configs.cfg")
    labelled = read_cfg(PARITY / "si_L08" / "efs.cfg")
    assert len(configs) == 34 and configs[-1].cell is None and not configs[-1].pbc.any()
    assert labelled[0].forces.shape == (len(labelled[0]), 3) and labelled[0].energy is not None
    labelled[1].features["source"] = "test"
    out = tmp_path / "out.cfg"
    write_cfg(out, labelled)
    again = read_cfg(out)
    for a, b in zip(labelled, again, strict=True):
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.types, b.types)
        assert a.energy == b.energy and np.array_equal(a.forces, b.forces)
        assert (a.plus_stress is None) == (b.plus_stress is None)
    assert again[1].features["source"] == "test"


def test_cfg_slab_keeps_partial_periodicity(tmp_path):
    cfg = Configuration(
        positions=np.zeros((1, 3)),
        types=np.zeros(1, int),
        cell=np.diag([3.0, 4.0, 0.0]),
        pbc=np.array([True, True, False]),
    )
    write_cfg(tmp_path / "s.cfg", [cfg])
    (back,) = read_cfg(tmp_path / "s.cfg")
    assert back.pbc.tolist() == [True, True, False] and np.allclose(back.cell[:2], cfg.cell[:2])


@pytest.mark.parametrize(
    "old, new, message",
    [
        (" Size\n    63", " Size\n    sixty", "bad Size"),
        ("    1 0 7.514403865696", "    1 0 7.5144x", "expected 6 columns|expected a number"),
        ("    2 0 3.859817712660", "    2 -1 3.859817712660", "integer ≥ 0"),
        ("END_CFG", "", "BEGIN_CFG inside|not closed"),
    ],
)
def test_malformed_cfg_names_file_and_line(tmp_path, old, new, message):
    text = (PARITY / "si_L08" / "configs.cfg").read_text()
    assert old in text
    bad = tmp_path / "bad.cfg"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(FileFormatError, match=rf"bad\.cfg:\d+: .*({message})"):
        read_cfg(bad)
