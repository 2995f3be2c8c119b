import time

import numpy as np
import pytest

from md.analysis import AnalysisOptions, build_crystal, structure_metrics


@pytest.mark.slow
def test_100k_atom_frame_is_analysed_within_a_minute():
    atoms = build_crystal("diamond").repeat((23, 23, 24))
    atoms.positions += np.random.default_rng(0).normal(0.0, 0.15, atoms.positions.shape)
    start = time.perf_counter()
    result = structure_metrics(atoms, AnalysisOptions())
    elapsed = time.perf_counter() - start
    assert len(atoms) > 100_000
    assert elapsed < 60.0
    m = result["metrics"]
    assert m["N4"] > 90.0 and 100.0 < m["theta_mean_deg"] < 115.0
    assert 1.9 < m["fsdp_q_invA"] < 2.1
