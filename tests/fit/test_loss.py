"""Batched predictions, loss conventions, padding invariance, gradients vs finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtpjax.fit.data import pack_buckets
from mtpjax.fit.loss import LossWeights, make_loss_fn, predict_group
from mtpjax.model import ModelSpec
from mtpjax.params import init_params, perturb


def _batches(samples, **kw):
    return tuple(jax.tree.map(jnp.asarray, b.batch) for b in pack_buckets(samples, **kw))


def test_grouped_prediction_matches_core(pot_l08, labelled):
    spec = ModelSpec.from_potential(pot_l08)
    params = {k: jnp.asarray(v) for k, v in pot_l08.params().items()}
    for b in pack_buckets(labelled, atoms_per_group=24):
        for g, members in enumerate(b.groups):
            group = jax.tree.map(lambda x, g=g: jnp.asarray(x[g]), b.batch)
            E, F, V = predict_group(spec, params, group)
            start = 0
            for c, k in enumerate(members):
                s = labelled[k]
                assert float(E[c]) == pytest.approx(s.energy, rel=1e-12, abs=1e-10)
                np.testing.assert_allclose(F[start:start + len(s)], s.forces, atol=1e-10)
                np.testing.assert_allclose(V[c], s.virial, atol=1e-9)
                start += len(s)


@pytest.mark.parametrize("weighting", ["vibrations", "molecules", "structures"])
def test_loss_conventions_by_hand(pot_l08, labelled, weighting):
    spec = ModelSpec.from_potential(pot_l08)
    params = perturb(pot_l08.params(), seed=3, scale=0.05)
    w = LossWeights(1.0, 0.1, 0.01, weighting)
    loss_fn, _ = make_loss_fn(spec, w)
    got = float(loss_fn(params, _batches(labelled)))
    # reference: predictions with the true params shifted by the perturbation, by hand
    pE, pF, pS = {"vibrations": (1, 0, 1), "molecules": (0, 0, 0),
                  "structures": (2, 1, 2)}[weighting]
    from tests.fit.conftest import label_with

    pert = pot_l08.with_params(params)
    atoms_like = []
    for s in labelled:
        from ase import Atoms

        atoms_like.append(Atoms(f"Si{len(s)}", positions=s.positions, cell=s.cell, pbc=True))
    pred = label_with(pert, atoms_like)
    expect = 0.0
    for s, p in zip(labelled, pred, strict=True):
        n = len(s)
        expect += 1.0 * (p.energy - s.energy) ** 2 / n**pE
        expect += 0.1 * np.sum((p.forces - s.forces) ** 2) / n**pF
        expect += 0.01 * np.sum((p.virial - s.virial) ** 2) / n**pS
    assert got == pytest.approx(expect, rel=1e-10)


def test_padding_and_grouping_invariance(template_l08, labelled):
    spec = ModelSpec.from_potential(template_l08)
    params = init_params(spec, seed=0, radial_scale=0.01)
    params["moment_coeffs"] = np.linspace(-1, 1, spec.basis.scalar_count)
    loss_fn, _ = make_loss_fn(spec, LossWeights(1, 0.1, 0.001))
    vg = jax.value_and_grad(loss_fn)
    v1, g1 = vg(params, _batches(labelled))
    v2, g2 = vg(params, _batches(labelled, atoms_per_group=24, capacity_step=16))
    assert float(v1) == pytest.approx(float(v2), rel=1e-12)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-10, atol=1e-12 * np.abs(g1[k]).max())


def test_gradient_matches_finite_differences(template_l08, labelled):
    spec = ModelSpec.from_potential(template_l08)
    params = init_params(spec, seed=2, radial_scale=0.01)
    params["species_coeffs"] = np.array([-5.0])
    params["moment_coeffs"] = np.random.default_rng(0).normal(0, 0.5, spec.basis.scalar_count)
    batches = _batches(labelled[:6])
    loss_fn, _ = make_loss_fn(spec, LossWeights(1, 0.1, 0.001))
    f = jax.jit(loss_fn)
    grad = jax.grad(loss_fn)(params, batches)
    rng = np.random.default_rng(5)
    for _ in range(3):
        d = {k: rng.normal(size=np.shape(v)) * (0.01 if k == "radial_coeffs" else 1.0)
             for k, v in params.items()}
        h = 1e-5
        plus = {k: params[k] + h * d[k] for k in params}
        minus = {k: params[k] - h * d[k] for k in params}
        fd = (float(f(plus, batches)) - float(f(minus, batches))) / (2 * h)
        an = sum(float(np.sum(np.asarray(grad[k]) * d[k])) for k in params)
        assert an == pytest.approx(fd, rel=1e-6)


def test_loss_and_residuals_share_the_weighting(pot_l08, labelled):
    """group_terms (Adam/BFGS, the reported parts) and group_residuals (VarPro, LM, lstsq)
    weigh rows by the same row_weights: with per-configuration weights, a weight-0
    configuration and missing energy/force/stress labels, ‖r‖² = the loss, the residual scales
    are √ the weighted row weights, and the force count is 3 × the labelled atoms of weight
    > 0."""
    import dataclasses

    from mtpjax.fit.loss import group_residuals, group_terms, residual_scales, row_weights

    spec = ModelSpec.from_potential(pot_l08)
    params = {k: jnp.asarray(v) for k, v in perturb(pot_l08.params(), seed=3, scale=0.05).items()}
    s = list(labelled[:5])
    s[0] = dataclasses.replace(s[0], weight=0.5, virial=None)
    s[1] = dataclasses.replace(s[1], forces=None)
    s[2] = dataclasses.replace(s[2], weight=0.0)
    s[3] = dataclasses.replace(s[3], energy=None, weight=2.0)
    w = LossWeights(1.0, 0.1, 0.01, "structures")
    (bucket,) = pack_buckets(s, atoms_per_group=512)
    (members,) = bucket.groups  # one group: the configurations in this order
    g = jax.tree.map(lambda x: jnp.asarray(x[0]), bucket.batch)
    terms = group_terms(spec, w, params, g)
    r = group_residuals(spec, w, params, g)
    assert float(r @ r) == pytest.approx(float(terms["loss"]), rel=1e-12)
    unweighted = row_weights(w, g, (1.0, 1.0, 1.0))
    for sc, u, f in zip(residual_scales(w, g), unweighted, (1.0, 0.1, 0.01), strict=True):
        np.testing.assert_allclose(np.asarray(sc) ** 2, f * np.asarray(u), rtol=1e-14)
    n_forces = sum(len(x) for x in s if x.forces is not None and x.weight > 0)
    assert float(terms["force_count"]) == 3 * n_forces
    wE = np.asarray(unweighted[0])[: len(s)]
    expect = [s[k].weight / len(s[k]) ** 2 * (s[k].energy is not None) for k in members]
    np.testing.assert_allclose(wE, expect, rtol=1e-14)


def test_no_strain_path_equals_strain_path(pot_l08, labelled):
    """``virials=False`` (no strain differentiated: fits with stress weight 0) gives the same
    energies and forces as the strain path, and the residuals of a stress-free loss (what
    VarPro differentiates) are those of the strain path's predictions."""
    from mtpjax.fit.loss import group_residuals, residual_scales

    spec = ModelSpec.from_potential(pot_l08)
    params = {k: jnp.asarray(v) for k, v in perturb(pot_l08.params(), seed=1, scale=0.05).items()}
    w = LossWeights(1.0, 0.1, 0.0)
    for b in pack_buckets(labelled, atoms_per_group=24):
        for g in range(len(b.groups)):
            group = jax.tree.map(lambda x, g=g: jnp.asarray(x[g]), b.batch)
            E, F, V = predict_group(spec, params, group)
            E0, F0, V0 = predict_group(spec, params, group, virials=False)
            assert V0 is None and V.shape == (group.energy.shape[0], 3, 3)
            np.testing.assert_allclose(E0, E, rtol=1e-14, atol=1e-12)
            np.testing.assert_allclose(F0, F, rtol=1e-13, atol=1e-13)
            sE, sF, _ = residual_scales(w, group)
            expect = jnp.concatenate([sE * (E - group.energy),
                                      (sF[:, None] * (F - group.forces)).reshape(-1)])
            np.testing.assert_allclose(group_residuals(spec, w, params, group), expect,
                                       rtol=1e-13, atol=1e-13)
            # and its Jacobian w.r.t. the linear coefficients (VarPro's linear pass)
            def res(mc, group=group):
                return group_residuals(spec, w, {**params, "moment_coeffs": mc}, group)

            def res_strain(mc, group=group, sE=sE, sF=sF):
                p = {**params, "moment_coeffs": mc}
                e, f, _ = predict_group(spec, p, group)
                return jnp.concatenate([sE * (e - group.energy),
                                        (sF[:, None] * (f - group.forces)).reshape(-1)])

            np.testing.assert_allclose(jax.jacfwd(res)(params["moment_coeffs"]),
                                       jax.jacfwd(res_strain)(params["moment_coeffs"]),
                                       rtol=1e-12, atol=1e-12)
