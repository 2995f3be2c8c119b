"""Variable projection: Levenberg–Marquardt on the radial coefficients, linear ones exact.

The weighted residuals r(c, θ) (whose squared norm is the loss, :func:`group_residuals`) are
affine in the linear coefficients θ = (species_coeffs [C], moment_coeffs [S]) and non-linear
only in the radial coefficients c [C, C, K, R]. Variable projection minimises the reduced
functional φ(c) = min_θ ‖r(c, θ)‖² (Golub & Pereyra; Kaufman's step):

1. at (c, θ*(c)) the full Jacobian J = [∂r/∂c, ∂r/∂θ] (forward mode, Q = |c| + P tangents) is
   reduced to the normal equations JᵀJ [Q, Q], Jᵀr [Q], rᵀr group by group on the device;
2. a Levenberg–Marquardt step (Marquardt's diagonal damping, λ×1/3 on success, ×4 on failure)
   of the full system gives δc (Kaufman's VarPro step: since Aᵀr = 0 at θ*, it is the
   Gauss–Newton step of the reduced problem);
3. at c + δc the linear coefficients are re-solved exactly: min_θ ‖A θ + r₀‖ with A = ∂r/∂θ
   (P tangents, r₀ = r(c + δc, 0)), by a streaming QR of [A | r₀] group after group (TSQR,
   as accurate as a direct least-squares solve: no normal equations) and a column-scaled
   least-squares solve of the triangular factor, in float64; φ = the last diagonal entry² of
   the factor. The step is kept when φ decreases.

Every pass is one jit-compiled program over all groups of all shape buckets (``lax.scan``),
data-parallel over a mesh (``shard_map``: each device reduces its own groups, then one
collective per pass: a ``psum`` of the normal equations, an all-gather of the triangular
factors). The solves are tiny (Q ≤ a few hundred) and run
on the device too; the host only reads the accepted loss to decide the next λ.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mtpjax.fit.loss import LossWeights, group_residuals
from mtpjax.model import ModelSpec


def split_linear(spec: ModelSpec, theta):
    """θ [P] → (species_coeffs [C], moment_coeffs [S])."""
    C = spec.species_count
    return theta[:C], theta[C:]


def join_params(spec: ModelSpec, radial, theta) -> dict:
    sc, mc = split_linear(spec, theta)
    return {"radial_coeffs": radial, "species_coeffs": sc, "moment_coeffs": mc}


def _sum_groups(fn, batches, init):
    """Σ over every group of every batch of ``fn(group)`` (a pytree), sequentially."""
    total = init
    for batch in batches:
        def body(carry, g):
            return jax.tree.map(jnp.add, carry, fn(g)), None

        total, _ = jax.lax.scan(body, total, batch)
    return total


def make_normal_eq_fns(spec: ModelSpec, weights: LossWeights, mesh=None, axis: str = "data"):
    """``(linear_neq, full_neq)``, both jit-compiled, over a tuple of :class:`Batch` es.

    ``linear_qr(radial, batches) -> R [P+1, P+1]``: the triangular factor of [A | r₀], the
    linear least-squares problem for fixed radial coefficients (r₀ the residuals at θ = 0).
    ``full_neq(radial, theta, batches) -> (JᵀJ [Q, Q], Jᵀr [Q], rᵀr)`` with the variables
    ordered (radial.ravel(), θ). With a mesh, the group axis is sharded over ``axis`` and the
    sums are ``psum``-reduced (one all-reduce per call).
    """
    P = spec.species_count + spec.basis.scalar_count

    def lin_group(radial, g):
        def res(theta):
            r = group_residuals(spec, weights, join_params(spec, radial, theta), g)
            return r, r

        A, r0 = jax.jacfwd(res, has_aux=True)(jnp.zeros(P, g.positions.dtype))
        return jnp.concatenate([A, r0[:, None]], axis=1)

    def full_group(radial, theta, g):
        shape = radial.shape

        def res(x):
            c, th = x[: radial.size].reshape(shape), x[radial.size:]
            r = group_residuals(spec, weights, join_params(spec, c, th), g)
            return r, r

        J, r = jax.jacfwd(res, has_aux=True)(jnp.concatenate([radial.reshape(-1), theta]))
        return J.T @ J, J.T @ r, r @ r

    def zeros(n, dtype):
        return (jnp.zeros((n, n), dtype), jnp.zeros(n, dtype), jnp.zeros((), dtype))

    def lin_local(radial, batches):
        R = jnp.zeros((P + 1, P + 1), radial.dtype)
        for batch in batches:
            def body(R, g):
                block = jnp.concatenate([R, lin_group(radial, g)], axis=0)
                return jnp.linalg.qr(block, mode="r"), None

            R, _ = jax.lax.scan(body, R, batch)
        return R

    def full_local(radial, theta, batches):
        Q = radial.size + P
        return _sum_groups(lambda g: full_group(radial, theta, g), batches,
                           zeros(Q, radial.dtype))

    if mesh is None:
        return jax.jit(lin_local), jax.jit(full_local)

    from jax.sharding import PartitionSpec as Ps

    def lin_reduce(radial, batches):
        R = jax.lax.all_gather(lin_local(radial, batches), axis, tiled=True)
        return jnp.linalg.qr(R, mode="r")

    def full_reduce(radial, theta, batches):
        return jax.lax.psum(full_local(radial, theta, batches), axis)

    def sharded(fn, n_rep):
        def wrapped(*args):
            *rep, batches = args
            in_specs = (*(Ps() for _ in range(n_rep)), jax.tree.map(lambda _: Ps(axis), batches))
            return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=Ps(),
                                 check_vma=False)(*args)

        return jax.jit(wrapped)

    return sharded(lin_reduce, 1), sharded(full_reduce, 2)


@jax.jit
def damped_solve(N, v, lam, rcond=1e-14):
    """δ minimising ‖Jδ + r‖² + λ‖D δ‖² from N = JᵀJ, v = Jᵀr (D² = diag N).

    Jacobi-scaled, symmetric eigendecomposition, eigenvalues below ``rcond``·max dropped
    (a pseudo-inverse: exact for full-rank problems, minimum-norm otherwise).
    """
    d = jnp.diag(N)
    d = jnp.sqrt(jnp.maximum(d, 1e-300 + 1e-30 * jnp.max(d)))
    Ns = N / d[:, None] / d[None, :]
    n = N.shape[0]
    Ns = Ns + lam * jnp.eye(n, dtype=N.dtype)
    w, V = jnp.linalg.eigh(Ns)
    inv = jnp.where(w > rcond * jnp.max(w), 1.0 / jnp.where(w > 0, w, 1.0), 0.0)
    return -(V @ (inv * (V.T @ (v / d)))) / d


@partial(jax.jit, static_argnames=("ridge", "rcond"))
def qr_solve(R, ridge=0.0, rcond=1e-13):
    """(θ minimising ‖A θ + r₀‖² + ridge‖θ‖², that minimum) from R = qr([A | r₀]).

    Columns scaled to unit norm, then a least-squares solve of the triangle (SVD, singular
    values below ``rcond``·max dropped: minimum-norm for rank-deficient problems)."""
    P = R.shape[1] - 1
    if ridge > 0:  # static: the Tikhonov rows √ridge·I appended
        eye = jnp.sqrt(ridge) * jnp.eye(P, dtype=R.dtype)
        R = jnp.linalg.qr(jnp.concatenate(
            [R, jnp.concatenate([eye, jnp.zeros((P, 1), R.dtype)], axis=1)]), mode="r")
    Rt, z = R[:P, :P], R[:P, P]
    d = jnp.linalg.norm(Rt, axis=0)
    d = jnp.where(d > 1e-300, d, 1.0)
    theta = jnp.linalg.lstsq(Rt / d, -z, rcond=rcond)[0] / d
    full = jnp.concatenate([theta, jnp.ones(1, R.dtype)])
    value = jnp.sum((R @ full) ** 2)
    if ridge > 0:
        value = value - ridge * jnp.sum(theta**2)
    return theta, value


class VarPro:
    """The iteration: ``solve_linear(radial)`` and ``step(radial, theta, value, lam)``.

    Args:
        spec, weights: the model and the loss weights.
        batches: :class:`Batch` es on the device(s) (small groups: each pass holds Q
            tangents of a whole group).
        mesh: as for :func:`make_normal_eq_fns`.
        ridge: Tikhonov term of the linear solve (0: plain least squares).
        max_trials: λ increases per iteration before giving up (then ``converged``).
        ftol: also ``converged`` after a step that lowers the loss by less than this
            fraction.
    """

    def __init__(self, spec: ModelSpec, weights: LossWeights, batches, mesh=None,
                 ridge: float = 0.0, max_trials: int = 20, ftol: float = 1e-9):
        self.spec = spec
        self.batches = batches
        self.ridge = float(ridge)
        self.max_trials = max_trials
        self.ftol = ftol
        self.linear_qr, self.full_neq = make_normal_eq_fns(spec, weights, mesh)
        self.converged = False

    def solve_linear(self, radial):
        """(θ*(radial) [P], φ = min_θ loss) on the device."""
        return qr_solve(self.linear_qr(radial, self.batches), self.ridge)

    def step(self, radial, theta, value: float, lam: float):
        """One VarPro–LM iteration from (radial, θ*(radial)) with loss ``value``.

        Returns (radial, theta, value, lam, grad_norm); unchanged coefficients and
        ``self.converged = True`` when no λ of ``max_trials`` decreases the loss.
        """
        N, v, _ = self.full_neq(radial, theta, self.batches)
        gnorm = 2.0 * float(host_value(jnp.linalg.norm(v)))
        n_rad = radial.size
        for _ in range(self.max_trials):
            delta = damped_solve(N, v, lam)
            trial = radial + delta[:n_rad].reshape(radial.shape)
            t_theta, t_value = self.solve_linear(trial)
            t_value = float(host_value(t_value))
            if math.isfinite(t_value) and t_value < value:
                self.converged = value - t_value <= self.ftol * value
                return trial, t_theta, t_value, max(lam / 3.0, 1e-12), gnorm
            lam = min(lam * 4.0, 1e16)
        self.converged = True
        return radial, theta, value, lam, gnorm


def host_value(x) -> np.ndarray:
    """A replicated (possibly multi-process) array as numpy."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    return np.asarray(x.addressable_data(0))
