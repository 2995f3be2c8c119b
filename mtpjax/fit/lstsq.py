"""Closed-form least squares for the linear coefficients, and the Gauss–Newton sums, on the
device(s).

With the radial coefficients held fixed, energies, forces and virials are linear in
θ = (species_coeffs [C], moment_coeffs [S]): E = E₀ + J_E θ, F = F₀ + J_F θ, V = V₀ + J_V θ.
The rows are those of the weighted residuals r(θ) of :func:`mtpjax.fit.loss.group_residuals`
(the one definition of the loss weighting), :func:`mtpjax.fit.varpro.linear_rows`: A = ∂r/∂θ
by forward mode, r₀ = r(0) (non-zero only for ``RBChebyshev_repuls``). :func:`solve_linear`
reduces them group by group into a triangular factor with a streaming QR (TSQR) and solves
it — the linear pass and solve of :mod:`mtpjax.fit.varpro` (one definition), data-parallel
over a mesh like it: each device reduces its own groups, one all-gather of the factors, the
small solve replicated. Memory stays at (P+1)² no matter how many configurations, and the
solve is as well conditioned as a direct ``lstsq`` on the full design matrix (no normal
equations).

:func:`make_group_sums` sums a per-group quantity over all groups of all batches in one
jit-compiled program (``lax.scan``), data-parallel with one ``psum``: the radial column norms
(Gauss–Newton scaling) and the Levenberg–Marquardt normal equations.
"""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from mtpjax.fit.data import Batch
from mtpjax.fit.loss import LossWeights, group_residuals
from mtpjax.fit.varpro import host_value, jacobian_block_size, make_normal_eq_fns, qr_solve
from mtpjax.model import ModelSpec


@lru_cache(maxsize=32)  # one set of compiled functions per (model, weights, mesh)
def make_linear_qr(spec: ModelSpec, weights: LossWeights, mesh=None):
    """Jit-compiled ``qr(radial, batches) -> R [P+1, P+1]``: the triangular factor of
    [A | r₀] over all groups (the linear pass of :func:`mtpjax.fit.varpro.make_normal_eq_fns`
    without keeping the rows); ``batches`` sharded over ``mesh``'s axis when given."""
    linear_qr = make_normal_eq_fns(spec, weights, mesh)[0]
    return jax.jit(lambda radial, batches: linear_qr(radial, batches)[0])


def solve_linear(spec: ModelSpec, weights: LossWeights, params: dict, batches,
                 ridge: float = 0.0, qr_fn=None, return_norms: bool = False, mesh=None):
    """Optimal species/moment coefficients for the given radial coefficients, on the device.

    Args:
        batches: :class:`Batch` es (any G; with ``mesh``, placed with their group axis
            sharded over it, G a multiple of the device count); each group's pass holds
            (C + S) tangents of the whole group, so use small groups (a few hundred atoms).
        ridge: Tikhonov term λ‖θ‖² (0: plain least squares with a tiny rcond cut-off).
        qr_fn: a :func:`make_linear_qr` for the same spec, weights and mesh (reuse across
            calls: it is compiled once).
    Returns:
        (params with new linear coefficients as numpy arrays, weighted residual = loss value)
        and, with ``return_norms``, the design-matrix column norms (species then moments).
    """
    qr_fn = qr_fn or make_linear_qr(spec, weights, mesh)
    C = spec.species_count
    P = C + spec.basis.scalar_count
    radial = jnp.asarray(params["radial_coeffs"])
    R = qr_fn(radial, tuple(jax.tree.map(jnp.asarray, b) if mesh is None else b
                            for b in batches))
    theta, value = qr_solve(R, float(ridge))
    theta = host_value(theta).astype(np.float64)
    out = {k: np.asarray(v) for k, v in params.items()}
    out["species_coeffs"], out["moment_coeffs"] = theta[:C].copy(), theta[C:].copy()
    resid = float(host_value(value))
    if return_norms:  # QR keeps column norms: ‖A e_j‖ = ‖R e_j‖, a Jacobi preconditioner
        return out, resid, np.linalg.norm(host_value(R)[:, :P], axis=0)
    return out, resid


def ridge_solve(R, ridge: float, n_free: int = 0, rcond: float = 1e-13):
    """θ [P] minimising ‖A θ + r₀‖² + ridge · Σ_{j ≥ n_free} d_j² θ_j², from the triangular
    factor R [P+1, P+1] of [A | r₀] (host numpy, float64).

    d_j = ‖A e_j‖ (the column norms, from R): the penalty is a ridge on the *standardised*
    coefficients d_j θ_j, so ``ridge`` is relative to unit-norm columns (dimensionless) and
    the same strength means the same thing for every column and data-set size; the first
    ``n_free`` coefficients (the species coefficients, an intercept) are not penalised.
    ``ridge = 0`` is the plain least-squares solution (minimum-norm if rank-deficient).
    """
    R = np.asarray(R, np.float64)
    P = R.shape[1] - 1
    A, z = R[:, :P], R[:, P]
    d = np.linalg.norm(A, axis=0)
    d = np.where(d > 1e-300, d, 1.0)
    M, rhs = A / d, -z
    if ridge > 0:
        pen = np.sqrt(ridge) * np.eye(P)[n_free:]
        M, rhs = np.vstack([M, pen]), np.concatenate([rhs, np.zeros(P - n_free)])
    return np.linalg.lstsq(M, rhs, rcond=rcond)[0] / d


def select_ridge(R_fit, R_held, grid, n_free: int = 0) -> tuple[float, list[float]]:
    """The ridge of ``grid`` (see :func:`ridge_solve`) whose solution on the fitted rows
    (factor ``R_fit``) has the lowest loss on held-out rows (factor ``R_held``: the held-out
    loss of θ is ‖R_held [θ; 1]‖², no pass over the data). Returns (ridge, held-out loss of
    every grid value); ties go to the larger ridge."""
    losses = []
    for ridge in grid:
        theta = ridge_solve(R_fit, float(ridge), n_free)
        losses.append(float(np.sum((np.asarray(R_held) @ np.append(theta, 1.0)) ** 2)))
    best = min(range(len(grid)), key=lambda k: (losses[k], -float(grid[k])))
    return float(grid[best]), losses


def make_group_sums(fn, mesh=None, axis: str = "data"):
    """Jit-compiled ``sums(*args, batches, w) -> Σ_groups w_g · fn(*args, g)``.

    ``fn(*args, g)`` returns a pytree for one group; ``w`` is a tuple of per-group weights
    ([G] per batch); groups of weight 0 are skipped (``lax.cond``), so a random subset costs
    only its own groups. With a mesh, ``batches`` and ``w`` are sharded over ``axis``, each
    device sums its groups and one ``psum`` reduces them; ``args`` are replicated.
    """

    def local(args, batches, w):
        total = None
        for batch, wb in zip(batches, w, strict=True):
            g0 = jax.tree.map(lambda x: x[0], batch)
            zero = jax.tree.map(jnp.zeros_like, jax.eval_shape(fn, *args, g0))
            if total is None:
                total = zero

            def body(acc, x, zero=zero):
                g, wg = x
                term = jax.lax.cond(wg != 0, lambda: jax.tree.map(lambda t: wg * t,
                                                                  fn(*args, g)), lambda: zero)
                return jax.tree.map(jnp.add, acc, term), None

            total, _ = jax.lax.scan(body, total, (batch, wb))
        return total

    if mesh is None:
        return jax.jit(lambda *a: local(a[:-2], a[-2], a[-1]))

    from jax.sharding import PartitionSpec as Ps

    def sums(*a):
        args, batches, w = a[:-2], a[-2], a[-1]
        in_specs = (jax.tree.map(lambda _: Ps(), args),
                    jax.tree.map(lambda _: Ps(axis), batches), jax.tree.map(lambda _: Ps(axis), w))
        return jax.shard_map(lambda ar, b, ww: jax.lax.psum(local(ar, b, ww), axis), mesh=mesh,
                             in_specs=in_specs, out_specs=Ps(), check_vma=False)(args, batches, w)

    return jax.jit(sums)


def group_weights(host_batches, mesh=None):
    """Per-group weights 1 (0 for all-padding groups) of host (numpy) batches, placed like
    the batches (:func:`place_like`)."""
    return place_like(tuple(np.asarray(b.atom_mask).any(axis=1).astype(np.float64)
                            for b in host_batches), mesh)


def place_like(arrays, mesh=None, axis: str = "data"):
    """Host arrays (leading axis = groups) on the device(s): sharded over ``axis`` with a
    mesh (every process holds the whole host array and contributes its devices' shards)."""
    if mesh is None:
        return jax.tree.map(jnp.asarray, arrays)
    from jax.sharding import NamedSharding, PartitionSpec

    sharding = NamedSharding(mesh, PartitionSpec(axis))

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, arrays)


def radial_rows(spec: ModelSpec, weights: LossWeights):
    """``rows(params, group) -> [C·C·K·R]``: squared column norms of the weighted residual
    Jacobian (:func:`mtpjax.fit.loss.group_residuals`) w.r.t. the radial coefficients
    (linear coefficients held), for Gauss–Newton scaling. Energies in blocks of
    :func:`mtpjax.fit.varpro.jacobian_block_size` atoms (as every forward-mode pass)."""

    def rows(params, g: Batch):
        shape = params["radial_coeffs"].shape
        atoms = jacobian_block_size(params["radial_coeffs"].size)

        def residual(flat):
            return group_residuals(spec, weights, {**params, "radial_coeffs": flat.reshape(shape)},
                                   g, atoms)

        J = jax.jacfwd(residual)(params["radial_coeffs"].reshape(-1))
        return jnp.sum(J**2, 0)

    return rows


@lru_cache(maxsize=32)  # compiled once per (model, weights, mesh)
def radial_norm_sums(spec: ModelSpec, weights: LossWeights, mesh=None):
    """The :func:`make_group_sums` of :func:`radial_rows`: Σ over groups of (∂r/∂c)²."""
    return make_group_sums(radial_rows(spec, weights), mesh)


def radial_column_norms(spec: ModelSpec, weights: LossWeights, params: dict, batches,
                        w=None, sums_fn=None, mesh=None) -> np.ndarray:
    """‖∂r/∂c_radial‖ per radial coefficient (shape of ``radial_coeffs``): the Gauss–Newton
    diagonal, used to scale the radial coefficients for the optimisers. One pass over all
    groups on the device(s) (:func:`make_group_sums`; ``batches`` placed as for
    :func:`solve_linear`, ``w`` their :func:`group_weights`, computed here when None and
    there is no mesh)."""
    sums_fn = sums_fn or radial_norm_sums(spec, weights, mesh)
    if w is None:
        w = group_weights(batches, mesh)
    if mesh is None:
        batches = tuple(jax.tree.map(jnp.asarray, b) for b in batches)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    total = host_value(sums_fn(p, tuple(batches), w))
    return np.sqrt(np.asarray(total)).reshape(np.shape(params["radial_coeffs"]))


def group_normal_eq(spec: ModelSpec, weights: LossWeights):
    """``neq(u, scales, group) -> (JᵀJ, Jᵀr, rᵀr)`` over *all* coefficients.

    ``u`` are scaled variables (θ = u·s leaf by leaf, :class:`mtpjax.fit.optim.Scaling`); the
    Jacobian of the weighted residuals r (:func:`mtpjax.fit.loss.group_residuals`, whose
    squared norm is the loss) is taken w.r.t. the flattened u by forward mode. For
    Gauss–Newton / Levenberg–Marquardt steps (summed over groups by :func:`make_group_sums`).
    Energies in blocks of :func:`mtpjax.fit.varpro.jacobian_block_size` atoms.
    """

    def neq(u, scales, g: Batch):
        from jax.flatten_util import ravel_pytree

        flat, unravel = ravel_pytree(u)
        atoms = jacobian_block_size(flat.size)

        def residual(x):
            params = jax.tree.map(lambda a, s: a * s, unravel(x), scales)
            r = group_residuals(spec, weights, params, g, atoms)
            return r, r

        J, r = jax.jacfwd(residual, has_aux=True)(flat)
        return J.T @ J, J.T @ r, r @ r

    return neq
