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


def test_md_like_moves_repack_and_rebuild_without_compiles_and_exactly():
    """A ballistic trajectory (0.01 Å per step per component): the packed list is repacked
    (atoms moved > INNER_SKIN_A / 2) and the skin list rebuilt (> skin / 2) along the way, with
    no compile, and every call equals a calculator that rebuilds its list on every call."""
    pot = PARITY / "si_L08" / "pot.mtp"
    calc = MTPCalculator(pot, species=["Si"], skin=0.5)
    fresh = MTPCalculator(pot, species=["Si"], skin=0.0)  # a new pair search every call
    atoms = rattled_diamond(repeat=2, amplitude=0.05, seed=4)
    other = atoms.copy()
    atoms.calc, other.calc = calc, fresh
    evaluate(atoms)
    evaluate(other)
    ev = calc.evaluator
    pos0 = atoms.positions.copy()
    velocity = 0.01 * np.random.default_rng(5).standard_normal(pos0.shape)
    rebuilds = repacks = compiles = 0
    for k in range(1, 21):
        atoms.positions = other.positions = pos0 + k * velocity
        nl, packed = ev._nl, ev._nbrs_dev
        with count_compiles() as events:
            e, f, s, _ = evaluate(atoms)
        compiles += len(events)
        rebuilds += ev._nl is not nl
        repacks += ev._nbrs_dev is not packed
        e_ref, f_ref, s_ref, _ = evaluate(other)
        assert abs(e - e_ref) < 1e-10 * len(atoms)
        np.testing.assert_allclose(f, f_ref, atol=1e-10)
        np.testing.assert_allclose(s, s_ref, atol=1e-12)
    assert compiles == 0
    assert rebuilds >= 1 and repacks > rebuilds  # both levels were exercised
