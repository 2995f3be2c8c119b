"""Closed-form least squares for the linear coefficients (species and moment coefficients).

With the radial coefficients held fixed, energies, forces and virials are linear in
θ = (species_coeffs [C], moment_coeffs [S]): E = E₀ + J_E θ, F = F₀ + J_F θ, V = V₀ + J_V θ.
The rows are those of the weighted residuals r(θ) of :func:`mtpjax.fit.loss.group_residuals`
(the one definition of the loss weighting): A = ∂r/∂θ from ``jax.jacfwd`` (forward mode over
C + S tangents of the energy/force/virial pass), b = −r(0) (E₀/F₀/V₀ at θ = 0 are non-zero
only for ``RBChebyshev_repuls``). They are reduced
group by group into a triangular factor with a streaming QR (TSQR): memory stays at
(P+1)² no matter how many configurations, and the solve is as well conditioned as a direct
``lstsq`` on the full design matrix (no normal equations).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtpjax.fit.data import Batch
from mtpjax.fit.loss import LossWeights, group_residuals
from mtpjax.model import ModelSpec


def _split(theta, C):
    return theta[:C], theta[C:]


def make_group_rows(spec: ModelSpec, weights: LossWeights):
    """Jit-compiled ``rows(radial_coeffs, group) -> (A [M, P], b [M])`` for one group: the
    weighted residuals r(θ) = A θ − b of :func:`mtpjax.fit.loss.group_residuals` (rows of
    zero-weight parts left out)."""
    C = spec.species_count

    def rows(radial, g: Batch):
        P = C + spec.basis.scalar_count

        def residual(theta):
            sc, mc = _split(theta, C)
            params = {"radial_coeffs": radial, "species_coeffs": sc, "moment_coeffs": mc}
            r = group_residuals(spec, weights, params, g)
            return r, r

        A, r0 = jax.jacfwd(residual, has_aux=True)(jnp.zeros(P, g.positions.dtype))
        return A, -r0

    return jax.jit(rows)


class StreamingQR:
    """Accumulate rows [A | b] into an upper-triangular R (TSQR); solve min ‖Aθ − b‖."""

    def __init__(self, n_cols: int):
        self.R = np.zeros((0, n_cols + 1))
        self.sq_total = 0.0  # ‖b‖² of all rows (for the residual)

    def add(self, A, b):
        A = np.asarray(A, np.float64)
        b = np.asarray(b, np.float64)
        keep = np.any(A != 0, axis=1) | (b != 0)
        block = np.vstack([self.R, np.column_stack([A[keep], b[keep]])])
        self.R = np.linalg.qr(block, mode="r")
        self.sq_total += float(b @ b)

    def solve(self, ridge: float = 0.0, rcond: float = 1e-13):
        """θ minimising ‖Aθ − b‖² + ridge·‖θ‖²; also returns the residual ‖Aθ − b‖²."""
        P = self.R.shape[1] - 1
        R = self.R
        if ridge > 0:
            R = np.vstack([R, np.column_stack([np.sqrt(ridge) * np.eye(P), np.zeros(P)])])
            R = np.linalg.qr(R, mode="r")
        Rt, z = R[:P, :P], R[:P, P]
        theta, *_ = np.linalg.lstsq(Rt, z, rcond=rcond)
        resid = float(R[P, P] ** 2) if R.shape[0] > P else 0.0
        return theta, resid

    def column_norms(self) -> np.ndarray:
        """‖A e_j‖ of every column (QR keeps column norms): a Jacobi preconditioner."""
        return np.linalg.norm(self.R[:, :-1], axis=0)


def solve_linear(spec: ModelSpec, weights: LossWeights, params: dict, batches,
                 ridge: float = 0.0, rows_fn=None, return_norms: bool = False):
    """Optimal species/moment coefficients for the given radial coefficients.

    Args:
        batches: :class:`Batch` es (numpy or JAX arrays, any G); groups are processed one at a
            time, so use small groups (a few hundred atoms) to bound memory: the Jacobian
            holds (C + S) tangents of the whole group.
        ridge: Tikhonov term λ‖θ‖² (0: plain least squares with a tiny rcond cut-off).
    Returns:
        (params with new linear coefficients as numpy arrays, weighted residual = loss value)
        and, with ``return_norms``, the design-matrix column norms (species then moments).
    """
    rows_fn = rows_fn or make_group_rows(spec, weights)
    C = spec.species_count
    P = C + spec.basis.scalar_count
    radial = jnp.asarray(params["radial_coeffs"])
    qr = StreamingQR(P)
    for batch in batches:
        G = batch.nbr_idx.shape[0]
        for k in range(G):
            if not np.any(np.asarray(batch.atom_mask[k])):
                continue
            g = jax.tree.map(lambda x, k=k: jnp.asarray(x[k]), batch)
            A, b = rows_fn(radial, g)
            qr.add(A, b)
    theta, resid = qr.solve(ridge=ridge)
    out = {k: np.asarray(v) for k, v in params.items()}
    out["species_coeffs"], out["moment_coeffs"] = theta[:C].copy(), theta[C:].copy()
    if return_norms:
        return out, resid, qr.column_norms()
    return out, resid


def make_radial_rows(spec: ModelSpec, weights: LossWeights):
    """Jit-compiled ``rows(params, group) -> [C·C·K·R]``: squared column norms of the weighted
    residual Jacobian (:func:`mtpjax.fit.loss.group_residuals`) w.r.t. the radial coefficients
    (linear coefficients held), for Gauss–Newton scaling."""

    def rows(params, g: Batch):
        shape = params["radial_coeffs"].shape

        def residual(flat):
            return group_residuals(spec, weights, {**params, "radial_coeffs": flat.reshape(shape)},
                                   g)

        J = jax.jacfwd(residual)(params["radial_coeffs"].reshape(-1))
        return jnp.sum(J**2, 0)

    return jax.jit(rows)


def radial_column_norms(spec: ModelSpec, weights: LossWeights, params: dict, batches,
                        rows_fn=None) -> np.ndarray:
    """‖∂r/∂c_radial‖ per radial coefficient (shape of ``radial_coeffs``): the Gauss–Newton
    diagonal, used to scale the radial coefficients for the optimisers."""
    rows_fn = rows_fn or make_radial_rows(spec, weights)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    total = 0.0
    for batch in batches:
        for k in range(batch.nbr_idx.shape[0]):
            if not np.any(np.asarray(batch.atom_mask[k])):
                continue
            g = jax.tree.map(lambda x, k=k: jnp.asarray(x[k]), batch)
            total = total + np.asarray(rows_fn(p, g))
    return np.sqrt(np.asarray(total)).reshape(np.shape(params["radial_coeffs"]))


def make_group_normal_eq(spec: ModelSpec, weights: LossWeights):
    """Jit-compiled ``neq(u, scales, group) -> (JᵀJ, Jᵀr, rᵀr)`` over *all* coefficients.

    ``u`` are scaled variables (θ = u·s leaf by leaf, :class:`mtpjax.fit.optim.Scaling`); the
    Jacobian of the weighted residuals r (:func:`mtpjax.fit.loss.group_residuals`, whose
    squared norm is the loss) is taken w.r.t. the flattened u by forward mode. For
    Gauss–Newton / Levenberg–Marquardt steps.
    """

    def neq(u, scales, g: Batch):
        from jax.flatten_util import ravel_pytree

        flat, unravel = ravel_pytree(u)

        def residual(x):
            params = jax.tree.map(lambda a, s: a * s, unravel(x), scales)
            r = group_residuals(spec, weights, params, g)
            return r, r

        J, r = jax.jacfwd(residual, has_aux=True)(flat)
        return J.T @ J, J.T @ r, r @ r

    return jax.jit(neq)
