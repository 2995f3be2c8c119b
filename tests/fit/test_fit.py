"""Self-consistency (fit back a known MTP), L-BFGS/Adam runs, kill & resume."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtpjax.fit.data import pack_buckets
from mtpjax.fit.loss import LossWeights
from mtpjax.fit.lstsq import solve_linear
from mtpjax.fit.trainer import FitConfig, StopTraining, Trainer
from mtpjax.model import ModelSpec
from mtpjax.params import perturb


def _energy_mae(result_final):
    return result_final["train"]["energy_mae"]


def test_lstsq_recovers_linear_coefficients(pot_l08, labelled):
    spec = ModelSpec.from_potential(pot_l08)
    true = pot_l08.params()
    start = perturb(true, seed=0, scale=0.5)
    w = LossWeights(1.0, 0.01, 0.001)
    batches = [b.batch for b in pack_buckets(labelled, atoms_per_group=32)]
    solved, resid = solve_linear(spec, w, start, batches)
    assert resid < 1e-16
    np.testing.assert_allclose(solved["moment_coeffs"], true["moment_coeffs"],
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(solved["species_coeffs"], true["species_coeffs"], rtol=1e-9)


def test_lstsq_equals_dense_lstsq_with_ridge_and_norms(pot_l08, labelled):
    """Radial coefficients perturbed (non-zero residual): the device QR solve equals a dense
    numpy lstsq of the stacked rows to 1e-10, with a ridge it equals the ridge normal
    equations, and the column norms are those of the dense design matrix."""
    import jax

    from tests.fit.conftest import dense_lstsq, group_rows

    spec = ModelSpec.from_potential(pot_l08)
    params = perturb(pot_l08.params(), seed=3, scale=0.05, group="radial")
    w = LossWeights(1.0, 0.1, 0.001)
    batches = [b.batch for b in pack_buckets(labelled[:8], atoms_per_group=32)]
    solved, resid, norms = solve_linear(spec, w, params, batches, return_norms=True)
    ref, ref_resid = dense_lstsq(spec, w, params, batches)
    assert ref_resid > 1e-6
    got = np.concatenate([solved["species_coeffs"], solved["moment_coeffs"]])
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    np.testing.assert_allclose(resid, ref_resid, rtol=1e-9)
    rows = group_rows(spec, w)
    A = np.concatenate([np.asarray(rows(jnp.asarray(params["radial_coeffs"]),
                                        jax.tree.map(lambda x, k=k: jnp.asarray(x[k]), b))[0])
                        for b in batches for k in range(b.nbr_idx.shape[0])])
    np.testing.assert_allclose(norms, np.linalg.norm(A, axis=0), rtol=1e-10)
    ridge = 1e-3 * float(np.max(norms)) ** 2
    solved_r, _ = solve_linear(spec, w, params, batches, ridge=ridge)
    b = np.concatenate([np.asarray(rows(jnp.asarray(params["radial_coeffs"]),
                                        jax.tree.map(lambda x, k=k: jnp.asarray(x[k]), bb))[1])
                        for bb in batches for k in range(bb.nbr_idx.shape[0])])
    ref_r = np.linalg.solve(A.T @ A + ridge * np.eye(A.shape[1]), A.T @ b)
    got_r = np.concatenate([solved_r["species_coeffs"], solved_r["moment_coeffs"]])
    np.testing.assert_allclose(got_r, ref_r, rtol=1e-8)


def test_lstsq_rows_follow_the_loss_weighting(pot_l08, labelled):
    """The least-squares rows (A θ − b), the LM normal equations and the radial column norms
    are those of the loss of :mod:`mtpjax.fit.loss` (energy, force and stress terms, size
    exponents, here of ``structures``): ‖Aθ − b‖² = loss, rᵀr = loss, 2 Jᵀr = its gradient,
    Σ J² = diag JᵀJ."""
    import jax

    from mtpjax.fit.loss import make_loss_fn
    from mtpjax.fit.lstsq import group_normal_eq, radial_rows
    from tests.fit.conftest import group_rows

    spec = ModelSpec.from_potential(pot_l08)
    params = {k: jnp.asarray(v) for k, v in
              perturb(pot_l08.params(), seed=3, scale=0.05).items()}
    w = LossWeights(1.0, 0.1, 0.01, "structures")  # every size exponent non-zero
    batch = pack_buckets(labelled[:5], atoms_per_group=64)[0].batch
    g = jax.tree.map(lambda x: jnp.asarray(x[0]), batch)
    loss, grad = jax.value_and_grad(make_loss_fn(spec, w)[0])(
        params, (jax.tree.map(lambda x: x[None], g),))
    A, b = group_rows(spec, w)(params["radial_coeffs"], g)
    theta = jnp.concatenate([params["species_coeffs"], params["moment_coeffs"]])
    assert float(jnp.sum((A @ theta - b) ** 2)) == pytest.approx(float(loss), rel=1e-10)
    ones = jax.tree.map(jnp.ones_like, params)
    N, v, rr = jax.jit(group_normal_eq(spec, w))(params, ones, g)
    assert float(rr) == pytest.approx(float(loss), rel=1e-10)
    flat = jax.flatten_util.ravel_pytree(grad)[0]
    np.testing.assert_allclose(np.asarray(2 * v), np.asarray(flat), rtol=1e-8,
                               atol=1e-10 * float(jnp.max(jnp.abs(flat))))
    col = jax.jit(radial_rows(spec, w))(params, g)
    n_rad = params["radial_coeffs"].size
    order = list(jax.flatten_util.ravel_pytree(
        {k: jnp.full(v.shape, i, float) for i, (k, v) in enumerate(params.items())})[0])
    rad = [i for i, k in enumerate(order) if list(params)[int(k)] == "radial_coeffs"]
    assert len(rad) == n_rad
    np.testing.assert_allclose(np.asarray(col), np.asarray(jnp.diag(N))[rad], rtol=1e-10)


def _perturbed(pot):
    return perturb(perturb(pot.params(), seed=1, scale=0.3, group="linear"),
                   seed=2, scale=0.02, group="radial")


def test_lm_fits_known_mtp_back(pot_l08, labelled):
    """Linear and radial coefficients perturbed; Levenberg–Marquardt + polish → ~zero error."""
    cfg = FitConfig(optimizer="lm", init_params="same", max_iter=25, force_weight=0.1,
                    eval_every=5, checkpoint_every=0)
    trainer = Trainer(pot_l08.with_params(_perturbed(pot_l08)), labelled, None, cfg)
    res = trainer.run()
    assert trainer.history[0]["train"]["energy_mae"] > 1e-2
    assert _energy_mae(res["final"]) < 1e-6
    assert res["final"]["train"]["force_rmse"] < 1e-5


def test_lbfgs_from_perturbed_known_mtp(pot_l08, labelled):
    """L-BFGS on the same problem: the loss falls by orders of magnitude in 40 iterations."""
    cfg = FitConfig(optimizer="lbfgs", init_params="same", max_iter=40, force_weight=0.1,
                    eval_every=20, checkpoint_every=0, lstsq_polish=False)
    trainer = Trainer(pot_l08.with_params(_perturbed(pot_l08)), labelled, None, cfg)
    res = trainer.run()
    assert res["final"]["train"]["loss"] < 1e-3 * trainer.history[0]["train"]["loss"]


def test_relinearize_sets_least_squares_linear_coefficients(template_l08, labelled):
    """The periodic re-solve: radial coefficients kept, linear ones = the least-squares
    solution for them, loss not increased, and the line search's cached value invalidated."""
    cfg = FitConfig(optimizer="lbfgs", force_weight=0.1, checkpoint_every=0,
                    skip_preinit=True, precondition=False)
    trainer = Trainer(template_l08, labelled[:6], None, cfg)
    params, scaling = trainer.initial_params()
    params["moment_coeffs"] = np.full_like(params["moment_coeffs"], 1e-3)
    state = trainer._fresh_state(params, scaling)
    before = trainer.evaluate(params, trainer.train_batches)["loss"]
    state["opt"] = optax.tree_utils.tree_set(state["opt"], value=jnp.asarray(before))
    new = trainer._relinearize(state)
    got = {k: np.asarray(v) for k, v in trainer._params(new).items()}
    expected, resid = trainer.lstsq(params)
    np.testing.assert_array_equal(got["radial_coeffs"], params["radial_coeffs"])
    np.testing.assert_allclose(got["moment_coeffs"], expected["moment_coeffs"], rtol=1e-12)
    after = trainer.evaluate(got, trainer.train_batches)["loss"]
    assert after < before
    np.testing.assert_allclose(after, resid, rtol=1e-8)
    assert np.isinf(float(optax.tree_utils.tree_get(new["opt"], "value")))


def test_subsampled_lm_fits_known_mtp_back(pot_l08, labelled):
    """Gauss–Newton matrix from half of the groups per step, full gradient: the loss still
    falls by orders of magnitude (linear rather than quadratic convergence)."""
    cfg = FitConfig(optimizer="lm", init_params="same", max_iter=15, force_weight=0.1,
                    eval_every=5, checkpoint_every=0, lstsq_atoms=32,
                    lm_hessian_fraction=0.5, lstsq_polish=False)
    trainer = Trainer(pot_l08.with_params(_perturbed(pot_l08)), labelled, None, cfg)
    res = trainer.run()
    assert sum(int((a > 0).sum()) for a in trainer._lm_groups()[1]) >= 4
    assert res["final"]["train"]["loss"] < 1e-3 * trainer.history[0]["train"]["loss"]


def test_random_start_lbfgs_and_adam_reduce_loss(template_l08, labelled):
    for opt, extra in (("lbfgs", {}), ("adam", {"learning_rate": 0.02, "batch_size": 5})):
        cfg = FitConfig(optimizer=opt, max_iter=15, force_weight=0.1, eval_every=5,
                        checkpoint_every=0, lstsq_polish=False, **extra)
        trainer = Trainer(template_l08, labelled[:8], labelled[8:], cfg)
        res = trainer.run()
        losses = [r["train"]["loss"] for r in trainer.history if "train" in r]
        assert losses[-1] < losses[0], (opt, losses)
        assert all(np.isfinite(v).all() for v in res["best_params"].values())
        assert any(r.get("best") for r in trainer.history)


@pytest.mark.parametrize("optimizer", ["lbfgs", "bfgs", "adam"])
def test_kill_and_resume_reproduces(tmp_path, template_l08, labelled, optimizer):
    # bfgs: also a linear re-solve every 5 iterations, before (5) and after (10) the kill at 7
    kw = dict(optimizer=optimizer, max_iter=12, force_weight=0.1, eval_every=4,
              checkpoint_every=3, batch_size=5, learning_rate=0.02,
              relinearize_every=5 if optimizer == "bfgs" else 0)
    full = Trainer(template_l08, labelled, None, FitConfig(**kw), workdir=tmp_path / "a").run()

    def kill_at_7(it, rec):
        if it == 7:
            raise StopTraining

    wd = tmp_path / "b"
    first = Trainer(template_l08, labelled, None, FitConfig(**kw), workdir=wd).run(kill_at_7)
    assert first == {"stopped": True, "iteration": 7}
    resumed = Trainer(template_l08, labelled, None, FitConfig(**kw), workdir=wd).run()
    for key in full["params"]:
        np.testing.assert_array_equal(full["params"][key], resumed["params"][key])
        np.testing.assert_array_equal(full["best_params"][key], resumed["best_params"][key])
    iters = [r["iter"] for r in resumed["history"] if not r.get("final")]
    assert iters == list(range(13))  # the log was continued, not duplicated
