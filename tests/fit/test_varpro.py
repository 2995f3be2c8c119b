"""Variable projection: the exact linear re-solve on the device, and fitting a known MTP back."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from mtpjax.fit.data import pack_buckets
from mtpjax.fit.loss import LossWeights, make_loss_fn
from mtpjax.fit.trainer import FitConfig, Trainer
from mtpjax.fit.varpro import VarPro, join_params
from mtpjax.model import ModelSpec
from mtpjax.params import perturb
from tests.fit.conftest import dense_lstsq

W = LossWeights(1.0, 0.1, 0.001)


def _batches(samples, atoms=32):
    return tuple(jax_batch(b.batch) for b in pack_buckets(samples, atoms_per_group=atoms))


def jax_batch(batch):
    return type(batch)(*(jnp.asarray(x) for x in batch))


def test_linear_resolve_is_the_least_squares_optimum(pot_l08, labelled):
    """Fixed (perturbed) radial coefficients: the device solve equals a dense lstsq to
    1e-10 and its loss value equals the loss of the solved coefficients."""
    spec = ModelSpec.from_potential(pot_l08)
    params = perturb(pot_l08.params(), seed=3, scale=0.05, group="radial")
    batches = _batches(labelled)
    vp = VarPro(spec, W, batches)
    theta, value = vp.solve_linear(jnp.asarray(params["radial_coeffs"]))
    ref, resid = dense_lstsq(spec, W, params, batches)
    assert resid > 1e-6  # a problem with a non-zero residual
    np.testing.assert_allclose(np.asarray(theta), ref, rtol=1e-10, atol=0)
    loss = make_loss_fn(spec, W)[0](join_params(spec, jnp.asarray(params["radial_coeffs"]),
                                                theta), batches)
    np.testing.assert_allclose(float(value), float(loss), rtol=1e-10)
    np.testing.assert_allclose(float(value), resid, rtol=1e-9)


def test_linear_resolve_recovers_exact_coefficients(pot_l08, labelled):
    """Labels from the model itself, true radial coefficients: zero loss, true θ."""
    spec = ModelSpec.from_potential(pot_l08)
    true = pot_l08.params()
    vp = VarPro(spec, W, _batches(labelled))
    theta, value = vp.solve_linear(jnp.asarray(true["radial_coeffs"]))
    ref = np.concatenate([true["species_coeffs"], true["moment_coeffs"]])
    np.testing.assert_allclose(np.asarray(theta), ref, rtol=1e-8, atol=1e-10)
    assert abs(float(value)) < 1e-14


def test_varpro_fits_known_mtp_back(pot_l08, labelled):
    """Radial and linear coefficients perturbed; a few VarPro iterations → ~zero error, and
    every accepted iteration lowers the loss."""
    start = perturb(perturb(pot_l08.params(), seed=1, scale=0.3, group="linear"),
                    seed=2, scale=0.02, group="radial")
    cfg = FitConfig(optimizer="varpro", init_params="same", max_iter=15, force_weight=0.1,
                    eval_every=5, checkpoint_every=0, jac_atoms=32)
    trainer = Trainer(pot_l08.with_params(start), labelled, None, cfg, mesh=None)
    res = trainer.run()
    losses = [r["loss"] for r in trainer.history if not r.get("final")]
    assert all(b <= a for a, b in zip(losses[1:], losses[2:], strict=False))
    assert res["final"]["train"]["energy_mae"] < 1e-6
    assert res["final"]["train"]["force_rmse"] < 1e-5
    # the damping λ in every iteration's record: from lm_lambda, ×4 per rejected trial and
    # ×1/3 on the accepted one (×4 per trial only, when no trial was accepted: converged)
    steps = [r for r in trainer.history if not r.get("final") and r["iter"] > 0]
    assert steps and all("lam" in r for r in steps)
    lams = [cfg.lm_lambda] + [r["lam"] for r in steps]
    for a, b in zip(lams, lams[1:], strict=False):
        up = math.log(b / a, 4)
        accepted = math.log(3 * b / a, 4)
        assert b == 1e-12 or abs(accepted - round(accepted)) < 1e-9 or \
            abs(up - round(up)) < 1e-9 and up >= 1, (a, b)


def test_normal_equations_reuse_the_linear_rows(pot_l08, labelled):
    """The normal equations built from the radial tangents plus the linear rows kept from the
    linear solve equal those of the joint forward-mode Jacobian [∂r/∂c, ∂r/∂θ] to 1e-10, and a
    step away from the last solved point recomputes the rows instead of reusing them."""
    import jax

    from mtpjax.fit.loss import group_residuals

    spec = ModelSpec.from_potential(pot_l08)
    params = perturb(pot_l08.params(), seed=5, scale=0.05, group="radial")
    radial = jnp.asarray(params["radial_coeffs"])
    batches = _batches(labelled)
    vp = VarPro(spec, W, batches)
    theta, _ = vp.solve_linear(radial)
    N, v, rr = vp.full_neq(radial, theta, vp._linear_rows(radial), batches)

    def res(x, g):
        c, th = x[: radial.size].reshape(radial.shape), x[radial.size:]
        return group_residuals(spec, W, join_params(spec, c, th), g)

    x = jnp.concatenate([radial.ravel(), theta])
    Nr, vr, rrr = 0.0, 0.0, 0.0
    for b in batches:
        for k in range(b.nbr_idx.shape[0]):
            g = jax.tree.map(lambda a, k=k: a[k], b)
            J, r = jax.jacfwd(res)(x, g), res(x, g)
            Nr, vr, rrr = Nr + J.T @ J, vr + J.T @ r, rrr + r @ r
    scale = float(jnp.max(jnp.abs(jnp.diag(Nr))))
    assert float(jnp.max(jnp.abs(N - Nr))) <= 1e-10 * scale
    np.testing.assert_allclose(np.asarray(v), np.asarray(vr), rtol=1e-10,
                               atol=1e-10 * float(jnp.max(jnp.abs(vr))))
    np.testing.assert_allclose(float(rr), float(rrr), rtol=1e-10)
    # rows of another point are not reused: after a solve elsewhere, the same N comes back
    vp.solve_linear(radial * 1.01)
    N2, _, _ = vp.full_neq(radial, theta, vp._linear_rows(radial), batches)
    np.testing.assert_allclose(np.asarray(N2), np.asarray(N), rtol=1e-12, atol=1e-12 * scale)


def test_jacobian_passes_do_not_depend_on_the_atom_blocks(pot_l08, labelled, monkeypatch):
    """The Jacobian passes evaluate the energies in blocks of atoms sized by their tangent
    count (:func:`jacobian_block_size`: smaller blocks for more tangents on CPU); with
    blocks of 2–4 atoms forced, the linear rows, the triangular factor and the normal
    equations equal those of one block per group to 1e-12."""
    import jax

    from mtpjax.fit import varpro
    from mtpjax.fit.varpro import jacobian_block_size, make_normal_eq_fns

    if jax.default_backend() == "cpu":
        assert [jacobian_block_size(t) for t in (10, 16, 32, 93, 1000)] == [32, 16, 8, 4, 1]
    spec = ModelSpec.from_potential(pot_l08)
    params = perturb(pot_l08.params(), seed=7, scale=0.05, group="radial")
    radial = jnp.asarray(params["radial_coeffs"])
    batches = _batches(labelled)
    results = {}
    for name, block in (("one block", None), ("small blocks", 2)):
        monkeypatch.setattr(varpro, "jacobian_block_size", lambda t, b=block: b)
        linear_qr, full_neq = make_normal_eq_fns(spec, W)
        R, blocks = linear_qr(radial, batches)
        theta = jnp.linspace(-1.0, 1.0, spec.species_count + spec.basis.scalar_count)
        results[name] = (R, blocks, *full_neq(radial, theta, blocks, batches))
    for a, b in zip(jax.tree.leaves(results["small blocks"]), jax.tree.leaves(results["one block"]),
                    strict=True):
        scale = float(jnp.max(jnp.abs(b)))
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-12 * scale
