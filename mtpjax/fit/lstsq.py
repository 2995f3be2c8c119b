"""Closed-form least squares for the linear coefficients (species and moment coefficients).

With the radial coefficients held fixed, energies, forces and virials are linear in
θ = (species_coeffs [C], moment_coeffs [S]): E = E₀ + J_E θ, F = F₀ + J_F θ, V = V₀ + J_V θ.
The Jacobians come from ``jax.jacfwd`` of the group prediction w.r.t. θ (forward mode over
C + S tangents of the energy/force/virial pass), E₀/F₀/V₀ from θ = 0 (non-zero only for
``RBChebyshev_repuls``). The rows, weighted exactly as in :mod:`mtpjax.fit.loss`, are reduced
group by group into a triangular factor with a streaming QR (TSQR): memory stays at
(P+1)² no matter how many configurations, and the solve is as well conditioned as a direct
``lstsq`` on the full design matrix (no normal equations).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtpjax.fit.data import Batch
from mtpjax.fit.loss import LossWeights, predict_group
from mtpjax.model import ModelSpec


def _split(theta, C):
    return theta[:C], theta[C:]


def make_group_rows(spec: ModelSpec, weights: LossWeights):
    """Jit-compiled ``rows(radial_coeffs, group) -> (A [M, P], b [M])`` for one group."""
    C = spec.species_count
    pE, pF, pS = weights.exponents

    def rows(radial, g: Batch):
        P = C + spec.basis.scalar_count
        dtype = g.positions.dtype

        def predict(theta):
            sc, mc = _split(theta, C)
            params = {"radial_coeffs": radial, "species_coeffs": sc, "moment_coeffs": mc}
            return predict_group(spec, params, g)

        theta0 = jnp.zeros(P, dtype)
        E0, F0, V0 = predict(theta0)
        JE, JF, JV = jax.jacfwd(predict)(theta0)  # [Cg, P], [A, 3, P], [Cg, 3, 3, P]
        n = g.n_atoms
        n_atom = n[jnp.minimum(g.atom_conf, n.shape[0] - 1)]
        w_atom = jnp.where(g.atom_mask, g.weight[jnp.minimum(g.atom_conf, n.shape[0] - 1)], 0.0)
        sE = jnp.sqrt(weights.energy * g.weight / n**pE) * g.has_energy
        sF = jnp.sqrt(weights.forces * w_atom / n_atom**pF) * g.has_forces
        sS = jnp.sqrt(weights.stress * g.weight / n**pS) * g.has_stress
        A = jnp.concatenate([
            sE[:, None] * JE,
            (sF[:, None, None] * JF).reshape(-1, P),
            (sS[:, None, None, None] * JV).reshape(-1, P),
        ])
        b = jnp.concatenate([
            sE * (g.energy - E0),
            (sF[:, None] * (g.forces - F0)).reshape(-1),
            (sS[:, None, None] * (g.virial - V0)).reshape(-1),
        ])
        return A, b

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
    """Jit-compiled ``rows(params, group) -> J [M, C·C·K·R]``: weighted residual Jacobian
    w.r.t. the radial coefficients (linear coefficients held), for Gauss–Newton scaling."""
    pE, pF, pS = weights.exponents

    def rows(params, g: Batch):
        shape = params["radial_coeffs"].shape

        def predict(flat):
            p = {**params, "radial_coeffs": flat.reshape(shape)}
            return predict_group(spec, p, g)

        JE, JF, JV = jax.jacfwd(predict)(params["radial_coeffs"].reshape(-1))
        Q = JE.shape[-1]
        n = g.n_atoms
        n_atom = n[jnp.minimum(g.atom_conf, n.shape[0] - 1)]
        w_atom = jnp.where(g.atom_mask, g.weight[jnp.minimum(g.atom_conf, n.shape[0] - 1)], 0.0)
        sE = jnp.sqrt(weights.energy * g.weight / n**pE) * g.has_energy
        sF = jnp.sqrt(weights.forces * w_atom / n_atom**pF) * g.has_forces
        sS = jnp.sqrt(weights.stress * g.weight / n**pS) * g.has_stress
        return (jnp.sum((sE[:, None] * JE) ** 2, 0)
                + jnp.sum(((sF[:, None, None] * JF).reshape(-1, Q)) ** 2, 0)
                + jnp.sum(((sS[:, None, None, None] * JV).reshape(-1, Q)) ** 2, 0))

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
    Jacobian of the weighted residuals r (whose squared norm is the loss) is taken w.r.t. the
    flattened u by forward mode. For Gauss–Newton / Levenberg–Marquardt steps.
    """
    pE, pF, pS = weights.exponents

    def neq(u, scales, g: Batch):
        from jax.flatten_util import ravel_pytree

        flat, unravel = ravel_pytree(u)

        def residual(x):
            v = unravel(x)
            params = jax.tree.map(lambda a, s: a * s, v, scales)
            E, F, V = predict_group(spec, params, g)
            n = g.n_atoms
            n_atom = n[jnp.minimum(g.atom_conf, n.shape[0] - 1)]
            w_atom = jnp.where(g.atom_mask,
                               g.weight[jnp.minimum(g.atom_conf, n.shape[0] - 1)], 0.0)
            sE = jnp.sqrt(weights.energy * g.weight / n**pE) * g.has_energy
            sF = jnp.sqrt(weights.forces * w_atom / n_atom**pF) * g.has_forces
            sS = jnp.sqrt(weights.stress * g.weight / n**pS) * g.has_stress
            return jnp.concatenate([
                sE * (E - g.energy),
                (sF[:, None] * (F - g.forces)).reshape(-1),
                (sS[:, None, None] * (V - g.virial)).reshape(-1),
            ])

        r = residual(flat)
        J = jax.jacfwd(residual)(flat)
        return J.T @ J, J.T @ r, r @ r

    return jax.jit(neq)
