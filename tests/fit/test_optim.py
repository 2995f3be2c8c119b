"""Dense BFGS (optax transform): convergence on small problems, agreement with theory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtpjax.fit.optim import bfgs


def _minimise(fn, x0, steps):
    opt = bfgs()
    value_and_grad = optax.value_and_grad_from_state(fn)

    @jax.jit
    def step(x, state):
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fn)
        return optax.apply_updates(x, updates), state, optax.tree_utils.tree_norm(grad)

    x, state = x0, opt.init(x0)
    for k in range(steps):
        x_new, state, gnorm = step(x, state)
        if float(gnorm) < 1e-10:
            return x, k
        x = x_new
    return x, steps


def test_bfgs_solves_ill_conditioned_quadratic_in_few_steps():
    """Condition number 1e4: gradient descent would need ~1e4 steps; BFGS (Wolfe line
    searches, not exact ones) needs a small multiple of n."""
    rng = np.random.default_rng(0)
    n = 12
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = jnp.asarray(q @ np.diag(np.logspace(0, 4, n)) @ q.T)
    b = jnp.asarray(rng.normal(size=n))
    x_star = jnp.linalg.solve(A, b)

    def fn(x):
        return 0.5 * x @ A @ x - b @ x

    x, steps = _minimise(jax.jit(fn), jnp.zeros(n), 200)
    np.testing.assert_allclose(x, x_star, rtol=1e-6, atol=1e-8)
    assert steps <= 10 * n


def test_bfgs_rosenbrock_and_pytree_params():
    def fn(p):
        x, y = p["x"][0], p["y"]
        return (1 - x) ** 2 + 100 * (y - x * x) ** 2

    x, steps = _minimise(jax.jit(fn), {"x": jnp.array([-1.2]), "y": jnp.array(1.0)}, 200)
    np.testing.assert_allclose(float(x["x"][0]), 1.0, atol=1e-6)
    np.testing.assert_allclose(float(x["y"]), 1.0, atol=1e-6)
    assert steps < 100
