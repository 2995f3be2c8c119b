"""Recompilation guard for the ASE calculator: after the first call, positions-only changes
(with or without a neighbour-list rebuild at the same capacity bucket) trace and compile nothing."""

from contextlib import contextmanager

import jax
import numpy as np
import pytest

from mtpjax.calculator import MTPCalculator
from tests.conftest import PARITY
from tests.core.helpers import rattled_diamond

# jax's monitoring events for a trace (jit cache miss) and an XLA compile (eager ops included)
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/backend_compile_duration")


@contextmanager
def count_compiles():
    events: list[str] = []

    def listener(event, duration, **kwargs):
        if event in COMPILE_EVENTS:
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def evaluate(atoms):
    return (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(),
            atoms.get_potential_energies())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_no_compile_after_first_call(dtype):
    calc = MTPCalculator(PARITY / "si_L08" / "pot.mtp", species=["Si"], dtype=dtype, skin=0.5)
    atoms = rattled_diamond(repeat=2, amplitude=0.05, seed=3)
    assert len(atoms) == 64
    atoms.calc = calc
    pos0 = atoms.positions.copy()
    with count_compiles() as first:
        evaluate(atoms)
    assert first, "the listener saw no compile on the first call (event names changed?)"
    ev = calc.evaluator
    nl0 = ev._nl
    rng = np.random.default_rng(0)

    # small moves: the neighbour list is reused, no compile
    with count_compiles() as events:
        for _ in range(10):
            atoms.positions = pos0 + 0.01 * rng.standard_normal(pos0.shape)
            evaluate(atoms)
    assert ev._nl is nl0
    assert events == []

    # translations beyond the skin: a rebuild per call at the same capacity bucket, no compile
    energies = []
    with count_compiles() as events:
        for k in range(1, 11):
            atoms.positions = pos0 + 0.3 * k + 0.001 * rng.standard_normal(pos0.shape)
            nl_before = ev._nl
            energies.append(evaluate(atoms)[0])
            assert ev._nl is not nl_before  # rebuilt
            assert ev._nl.capacity == nl0.capacity
    assert events == []
    # and the cached device arrays follow the rebuilt list: a fresh calculator agrees
    fresh = atoms.copy()
    fresh.calc = MTPCalculator(PARITY / "si_L08" / "pot.mtp", species=["Si"], dtype=dtype)
    tol = 1e-10 if dtype == "float64" else 1e-4
    assert abs(fresh.get_potential_energy() - energies[-1]) < tol * len(atoms)
    np.testing.assert_allclose(fresh.get_forces(), atoms.get_forces(),
                               atol=1e-9 if dtype == "float64" else 1e-3)
