"""Variable projection: the exact linear re-solve on the device, and fitting a known MTP back."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mtpjax.fit.data import pack_buckets
from mtpjax.fit.loss import LossWeights, make_loss_fn
from mtpjax.fit.lstsq import solve_linear
from mtpjax.fit.trainer import FitConfig, Trainer
from mtpjax.fit.varpro import VarPro, join_params
from mtpjax.model import ModelSpec
from mtpjax.params import perturb

W = LossWeights(1.0, 0.1, 0.001)


def _batches(samples, atoms=32):
    return tuple(jax_batch(b.batch) for b in pack_buckets(samples, atoms_per_group=atoms))


def jax_batch(batch):
    return type(batch)(*(jnp.asarray(x) for x in batch))


def test_linear_resolve_is_the_least_squares_optimum(pot_l08, labelled):
    """Fixed (perturbed) radial coefficients: the device solve equals the host QR lstsq to
    1e-10 and its loss value equals the loss of the solved coefficients."""
    spec = ModelSpec.from_potential(pot_l08)
    params = perturb(pot_l08.params(), seed=3, scale=0.05, group="radial")
    batches = _batches(labelled)
    vp = VarPro(spec, W, batches)
    theta, value = vp.solve_linear(jnp.asarray(params["radial_coeffs"]))
    host, resid = solve_linear(spec, W, params, [b for b in batches])
    ref = np.concatenate([host["species_coeffs"], host["moment_coeffs"]])
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
