"""The standardised ridge of the linear part (``refit_ridge_grid``): the solve from the QR
factor equals a dense numpy least-squares solution of the penalised problem, and the held-out
selection equals brute force."""

from __future__ import annotations

import numpy as np
import pytest

from mtpjax.fit.lstsq import ridge_solve, select_ridge


def _problem(rng, n=60, p=7):
    """A badly scaled design (columns over 6 decades) with a noisy target."""
    A = rng.normal(size=(n, p)) * np.logspace(-3, 3, p)
    theta = rng.normal(size=p)
    b = A @ theta + rng.normal(0, 0.5, n)
    return A, -b  # rows [A | r0] with r0 = -b: min ‖Aθ + r0‖ = min ‖Aθ − b‖


def _factor(A, r0):
    return np.linalg.qr(np.column_stack([A, r0]), mode="r")


@pytest.mark.parametrize("ridge", [0.0, 1e-6, 1e-2, 3.0])
def test_ridge_solve_equals_dense_standardised_ridge(ridge):
    rng = np.random.default_rng(0)
    A, r0 = _problem(rng)
    n_free = 2
    d = np.linalg.norm(A, axis=0)
    # the same problem as one dense least-squares fit in the standardised coefficients
    # u = d·θ the penalty acts on: rows [A/d; diag(√ridge on the penalised)] against [b; 0],
    # conditioned ~1.5-2.2 (θ itself is conditioned ~1e6: columns over 6 decades, so raw θ
    # carries ~1e-10 relative rounding in any solver, a normal-equation reference included)
    root = np.where(np.arange(A.shape[1]) < n_free, 0.0, np.sqrt(ridge))
    u = np.linalg.lstsq(np.vstack([A / d, np.diag(root)]),
                        np.concatenate([-r0, np.zeros(A.shape[1])]), rcond=None)[0]
    got = ridge_solve(_factor(A, r0), ridge, n_free=n_free)
    err = np.linalg.norm(d * got - u) / np.linalg.norm(u)
    assert err <= 1e-12, err  # seen: ≤ 1.3e-15
    if ridge > 0:  # the penalty acts: the penalised coefficients shrink, the free ones do not
        plain = ridge_solve(_factor(A, r0), 0.0, n_free=n_free)
        assert np.linalg.norm(d[n_free:] * got[n_free:]) < np.linalg.norm(d[n_free:]
                                                                          * plain[n_free:])


def test_select_ridge_is_the_held_out_minimum():
    rng = np.random.default_rng(1)
    A, r0 = _problem(rng, n=40, p=12)  # few rows per coefficient: over-fits, ridge helps
    Ah, r0h = _problem(np.random.default_rng(1), n=40, p=12)  # same θ, fresh noise/rows
    Ah, r0h = Ah[20:], r0h[20:]
    grid = [0.0, 1e-6, 1e-4, 1e-2, 1e-1, 1.0]
    ridge, losses = select_ridge(_factor(A, r0), _factor(Ah, r0h), grid, n_free=1)
    brute = [float(np.sum((Ah @ ridge_solve(_factor(A, r0), g, 1) + r0h) ** 2)) for g in grid]
    np.testing.assert_allclose(losses, brute, rtol=1e-10)
    assert ridge == grid[int(np.argmin(brute))]
    # ties go to the larger ridge
    held = np.zeros((2, 13))
    held[:, -1] = 1.0  # held-out loss independent of θ
    assert select_ridge(_factor(A, r0), held, grid, n_free=1)[0] == grid[-1]
