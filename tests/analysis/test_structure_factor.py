import numpy as np
import pytest
from ase import Atoms
from matscipy.neighbours import neighbour_list

from md.analysis import (
    build_crystal,
    debye_structure_factor,
    direct_structure_factor,
    first_sharp_diffraction_peak,
    radial_distribution,
    structure_factor_from_gr,
)
from md.analysis.structure_factor import max_radius, window_function

from .conftest import A_SI


def _bragg(h, k, l):
    return 2.0 * np.pi * np.sqrt(h * h + k * k + l * l) / A_SI


@pytest.mark.parametrize("hkl", [(1, 1, 1), (2, 2, 0), (3, 1, 1)])
def test_direct_sq_has_diamond_bragg_peaks_at_their_positions(diamond, hkl):
    q, s = direct_structure_factor(diamond, q_max=4.2, dq=0.01)
    target = _bragg(*hkl)
    near = np.abs(q - target) < 0.15
    peak_q = q[near][np.argmax(s[near])]
    assert abs(peak_q - target) < 0.02
    assert s[near].max() > 0.1 * len(diamond)  # a Bragg peak, S ∝ N


def test_direct_sq_has_no_forbidden_222_peak(diamond):
    q, s = direct_structure_factor(diamond, q_max=4.2, dq=0.01)
    assert s[np.abs(q - _bragg(2, 2, 2)) < 0.02].max() < 1e-6


def test_three_strongest_low_q_peaks_are_111_220_311(diamond):
    q, s = direct_structure_factor(diamond, q_max=4.2, dq=0.01)
    top = np.sort(q[np.argsort(s)[-3:]])
    assert np.allclose(top, [_bragg(1, 1, 1), _bragg(2, 2, 0), _bragg(3, 1, 1)], atol=0.02)


def test_gr_route_matches_debye_sum(rattled):
    rdf = radial_distribution(rattled, dr=0.005)
    q, s_gr = structure_factor_from_gr(rdf, np.arange(0.02, 10.0, 0.02))
    _, s_debye = debye_structure_factor(rattled, q, rdf.r_max)
    assert np.max(np.abs(s_gr - s_debye)) < 0.01
    peak = first_sharp_diffraction_peak(q, s_gr)
    assert abs(peak.q - _bragg(1, 1, 1)) < 0.1  # broadened (111) reflection


def test_large_cell_gr_route_places_bragg_peaks(diamond):
    big = build_crystal("diamond").repeat(8)  # 4096 atoms, g(r) up to 21.7 Å
    big.positions += np.random.default_rng(1).normal(0.0, 0.05, big.positions.shape)
    q, s = structure_factor_from_gr(radial_distribution(big, dr=0.005))
    for hkl in [(1, 1, 1), (2, 2, 0), (3, 1, 1)]:
        near = np.abs(q - _bragg(*hkl)) < 0.2
        assert abs(q[near][np.argmax(s[near])] - _bragg(*hkl)) < 0.03


def test_gr_is_normalised(rattled):
    rdf = radial_distribution(rattled, dr=0.01)
    first_shell = rdf.r < 2.85
    dr = rdf.r[1] - rdf.r[0]
    n_first = np.sum(4 * np.pi * rdf.r[first_shell] ** 2 * rdf.g[first_shell]) * dr * rdf.rho
    assert n_first == pytest.approx(4.0, rel=0.02)
    assert rdf.r_max <= max_radius(rattled) + 1e-9
    shells = 4 / 3 * np.pi * ((rdf.r + dr / 2) ** 3 - (rdf.r - dr / 2) ** 3)
    n_all = np.sum(shells * rdf.g) * rdf.rho
    expected = len(neighbour_list("i", rattled, rdf.r_max)) / len(rattled)
    assert n_all == pytest.approx(expected, rel=1e-9)


def test_fsdp_of_a_synthetic_peak():
    q = np.arange(0.01, 6.0, 0.01)
    s = 1.0 + 0.8 * np.exp(-0.5 * ((q - 2.003) / 0.15) ** 2)
    peak = first_sharp_diffraction_peak(q, s)
    assert peak.q == pytest.approx(2.003, abs=1e-3)
    assert peak.height == pytest.approx(1.8, abs=1e-3)
    assert peak.inverse_height == pytest.approx(1 / 1.8, abs=1e-3)


def test_lorch_window():
    r = np.array([0.0, 5.0, 10.0])
    assert np.allclose(window_function(r, 10.0), [1.0, 2 / np.pi, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="unknown window"):
        window_function(r, 10.0, "hann")


def test_frame_without_cell_is_rejected():
    molecule = Atoms("Si2", positions=[[0, 0, 0], [0, 0, 2.3]])
    for f in (radial_distribution, direct_structure_factor, debye_structure_factor):
        with pytest.raises(ValueError, match="3-D periodic cell"):
            f(molecule)


def test_fsdp_window_without_points():
    with pytest.raises(ValueError, match="FSDP window"):
        first_sharp_diffraction_peak(np.array([5.0, 6.0]), np.array([1.0, 1.0]))


def test_fsdp_flags_a_maximum_on_the_window_edge():
    q = np.arange(0.01, 6.0, 0.01)
    s = 1.0 + np.exp(-0.5 * ((q - 2.8) / 0.2) ** 2)  # liquid-like: first peak above the window
    peak = first_sharp_diffraction_peak(q, s)
    assert peak.at_window_edge and peak.q == pytest.approx(2.6, abs=0.011)
    assert not first_sharp_diffraction_peak(q, s, (2.0, 3.5)).at_window_edge
