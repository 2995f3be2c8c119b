"""VarPro's linear rows by the chain rule (CPU path) equal the forward-mode rows."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtpjax.fit import varpro
from mtpjax.fit.data import Sample, pack_buckets, precompute_neighbors
from mtpjax.fit.loss import LossWeights
from mtpjax.io.mtp_file import read_mtp
from mtpjax.model import ModelSpec
from mtpjax.params import init_params
from tests.fit.conftest import si_cells

STRESS = LossWeights(1.0, 0.1, 0.001)  # energy, force and virial rows
NO_STRESS = LossWeights(1.0, 0.1, 0.0, "structures")  # per-atom normalisation, no virials


def _template(templates_dir, level: int, species: int):
    pot = read_mtp(templates_dir / f"{level:02d}.mtp")
    return dataclasses.replace(pot, min_dist=1.5, max_dist=5.0, species_count=species)


def _samples(species: int, periodic: bool, seed: int):
    """6 small Si-like cells (random species, random labels; one without a virial, one with
    weight 2), periodic or as free clusters."""
    rng = np.random.default_rng(seed)
    out = []
    for k, atoms in enumerate(si_cells(6, seed=seed)):
        n = len(atoms)
        out.append(Sample(positions=atoms.positions.copy(),
                          types=rng.integers(0, species, n).astype(np.int32),
                          cell=atoms.cell.array.copy(), pbc=np.full(3, periodic),
                          energy=float(rng.normal(-5 * n, 1)), forces=rng.normal(0, 1, (n, 3)),
                          virial=None if k == 3 else rng.normal(0, 1, (3, 3)),
                          weight=2.0 if k == 5 else 1.0, index=k))
    precompute_neighbors(out, 5.0)
    return out


def _groups(samples):
    for bucket in pack_buckets(samples, atoms_per_group=64, capacity_step=64):
        batch = bucket.batch
        for k in range(batch.nbr_idx.shape[0]):
            yield type(batch)(*(jnp.asarray(x[k]) for x in batch))


@pytest.mark.parametrize("level, species, periodic, weights", [
    (8, 1, True, STRESS), (8, 2, False, NO_STRESS), (12, 2, True, STRESS),
    (12, 1, False, NO_STRESS)])
def test_chain_rows_equal_forward_mode_rows(templates_dir, level, species, periodic, weights):
    """[A | r₀] of :func:`linear_rows_chain` (blocks of 3 atoms, so several blocks and a
    padded one) equals that of :func:`linear_rows_jacfwd` to 1e-12 relative (max abs
    difference / max abs), group by group."""
    spec = ModelSpec.from_potential(_template(templates_dir, level, species))
    radial = jnp.asarray(init_params(spec, seed=level + species)["radial_coeffs"])
    ref = jax.jit(lambda r, g: varpro.linear_rows_jacfwd(spec, weights, r, g))
    chain = jax.jit(lambda r, g: varpro.linear_rows_chain(spec, weights, r, g, 3))
    count = 0
    for g in _groups(_samples(species, periodic, seed=level)):
        a, b = np.asarray(ref(radial, g)), np.asarray(chain(radial, g))
        assert a.shape == b.shape
        assert np.max(np.abs(a[:, :-1])) > 0
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(a))
        count += 1
    assert count >= 1


def test_varpro_step_same_with_chain_rows(templates_dir, monkeypatch):
    """A VarPro iteration (linear solve, normal equations, LM step with its linear
    re-solves) gives the same loss and coefficients with either way of forming the rows."""
    spec = ModelSpec.from_potential(_template(templates_dir, 8, 2))
    radial = jnp.asarray(init_params(spec, seed=4)["radial_coeffs"])
    batches = tuple(type(b.batch)(*(jnp.asarray(x) for x in b.batch))
                    for b in pack_buckets(_samples(2, True, seed=3), atoms_per_group=64,
                                                 capacity_step=64))
    results = {}
    for name in ("linear_rows_jacfwd", "linear_rows_chain"):
        monkeypatch.setattr(varpro, "linear_rows", getattr(varpro, name))
        vp = varpro.VarPro(spec, STRESS, batches)
        theta, value = vp.solve_linear(radial)
        results[name] = (float(value), *vp.step(radial, theta, float(value), 1e-3)[:3])
    (v0, r0, t0, s0), (v1, r1, t1, s1) = results.values()
    assert s0 < v0  # the step was accepted
    assert abs(v1 - v0) <= 1e-12 * v0 and abs(s1 - s0) <= 1e-12 * s0
    # the LM step solves a system conditioned far worse than the rows (equal to 1e-12): the
    # radial coefficients agree to rounding amplified by it (seen: 1.4e-10 relative, 1e-11
    # absolute at |r| ≤ 6), a wrong row would move them by O(|step|)
    np.testing.assert_allclose(np.asarray(r1), np.asarray(r0), rtol=1e-8,
                               atol=1e-10 * float(np.max(np.abs(r0))))
    np.testing.assert_allclose(np.asarray(t1), np.asarray(t0), rtol=1e-8,
                               atol=1e-10 * float(np.max(np.abs(t0))))
