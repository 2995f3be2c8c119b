"""Teacher MD protocols and the RSS / compression test-set builders."""

from __future__ import annotations

import numpy as np
import pytest

from distill import sampling, testsets
from md.analysis.calculators import stillinger_weber_si
from md.structures import random_structure


def test_berendsen_moves_towards_target():
    assert sampling.berendsen_scale(5.0, 0.0, 1.0, 100.0, 0.01) > 1.0  # too high: expand
    assert sampling.berendsen_scale(0.0, 5.0, 1.0, 100.0, 0.01) < 1.0  # too low: shrink
    assert sampling.berendsen_scale(1e6, 0.0, 1.0, 1.0, 1.0) == pytest.approx(1.01)  # clipped


def test_protocol_compresses_and_snapshots():
    atoms = random_structure(16, 2.3, "Si", 2.1, seed=3)
    v0 = atoms.get_volume()
    stages = sampling.sampling_stages(10, 60, 500.0, 0.0, 30.0, tau_p_fs=50.0)
    snaps, thermo = sampling.run_protocol(atoms, stillinger_weber_si(), stages, 1.0, seed=0,
                                          snapshot_every=20, thermo_every=10)
    assert [s.info["step"] for s in snaps] == [20, 40, 60]
    assert [r.step for r in thermo] == list(range(10, 71, 10))
    assert thermo[-1].V < v0  # a ramp to 30 GPa shrinks the cell
    assert all(np.isfinite([r.E, r.P, r.T]).all() for r in thermo)
    assert snaps[0].calc is None and "pressure_GPa" in snaps[0].info


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rss_cells_meet_the_constraints(seed):
    s = testsets.RSSSettings(max_atoms=24)
    rng = np.random.default_rng(seed)
    for _ in range(10):
        atoms, group = testsets.random_symmetric_cell(s, rng)
        order = len(next(g for k in testsets.GROUPS.values() for g in k if g[0] == group)[1])
        assert 1 <= len(atoms) <= 24 and len(atoms) % order == 0
        assert 15.0 <= atoms.get_volume() / len(atoms) <= 25.0
        assert testsets.min_distance(atoms) >= 2.0


def test_orbit_merges_special_positions():
    ops = testsets.GROUPS[2][0][1]  # identity and inversion
    assert len(testsets.orbit(np.array([[0.5, 0.0, 0.5]]), ops)) == 1
    assert len(testsets.orbit(np.array([[0.1, 0.2, 0.3]]), ops)) == 2


def test_rss_set_relaxes_at_exponential_pressures():
    s = testsets.RSSSettings(n_structures=3, max_atoms=6, relax_steps=5)
    cells, stats = testsets.rss_set(stillinger_weber_si(), s, seed=0)
    assert stats["n"] + stats["failed"] + stats["unbuilt"] == 3
    assert all(c.info["rss_pressure_GPa"] >= 0 for c in cells)
    snaps = [c.copy() for c in cells]
    for p, a in zip([1.0, 6.0, 30.0], snaps, strict=False):
        a.info["pressure_GPa"] = p
    assert len(testsets.in_pressure_window(snaps, 5.0, 20.0)) == (len(snaps) >= 2)
