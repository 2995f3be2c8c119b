"""Parity with MLIP-2 `mlp calc-efs` 2.1.2 on every shared case (SPEC §2, tests/data/parity)."""

import numpy as np
import pytest

from tests.conftest import PARITY_CASES
from tests.core.helpers import evaluate_batch, load_case, voigt


@pytest.mark.parametrize("case", PARITY_CASES)
def test_parity_with_mlp(case):
    pot, frames = load_case(case)
    results = evaluate_batch(pot, frames)
    assert len(results) == 34
    for k, (frame, (energy, forces, virial)) in enumerate(zip(frames, results, strict=True)):
        n = len(frame["positions"])
        assert abs(energy - frame["energy"]) / n <= 1e-9, f"{case} cfg {k}: energy"
        assert np.abs(forces - frame["forces"]).max() <= 2e-6, f"{case} cfg {k}: forces"
        if frame["stress"] is not None:
            volume = abs(np.linalg.det(frame["cell"]))
            plus_ours = -voigt(virial)
            plus_ref = -frame["stress"] * volume
            assert np.abs(plus_ours - plus_ref).max() <= 2e-5, f"{case} cfg {k}: PlusStress"
