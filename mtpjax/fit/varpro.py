"""Variable projection: Levenberg–Marquardt on the radial coefficients, linear ones exact.

The weighted residuals r(c, θ) (whose squared norm is the loss, :func:`group_residuals`) are
affine in the linear coefficients θ = (species_coeffs [C], moment_coeffs [S]) and non-linear
only in the radial coefficients c [C, C, K, R]. Variable projection minimises the reduced
functional φ(c) = min_θ ‖r(c, θ)‖² (Golub & Pereyra; Kaufman's step):

1. at (c, θ*(c)) the full Jacobian J = [∂r/∂c, ∂r/∂θ] is reduced to the normal equations
   JᵀJ [Q, Q], Jᵀr [Q], rᵀr (Q = |c| + P) group by group on the device: ∂r/∂c by forward mode
   (|c| tangents); ∂r/∂θ = A does not depend on θ and is the one of step 3 at the same c,
   kept on the device (the rows [A | r₀] of every group: ~3·atoms × (P+1) numbers), so the
   linear columns are computed once per accepted point, not twice;
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
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from mtpjax.fit.loss import LossWeights, group_residuals, residual_scales
from mtpjax.model import ModelSpec
from mtpjax.potential import CPU_BLOCK_SIZE, default_block_size, scalar_pair_jacobian

#: CPU: tangents × atoms per block of the energy/force evaluation inside a forward-mode
#: Jacobian pass (:func:`jacobian_block_size`)
JACOBIAN_BLOCK_BUDGET = 400


#: CPU: atoms per block of :func:`linear_rows_chain` (its per-block arrays are
#: [block, J, B, 3] and [S, block, B] numbers; 8 measured faster than 4, 16 or 32 at levels
#: 16 and 20)
CHAIN_BLOCK_SIZE = 8

#: CPU: fewest linear coefficients P for which :func:`linear_rows` uses the chain rule
CHAIN_MIN_LINEAR = 30


def split_linear(spec: ModelSpec, theta):
    """θ [P] → (species_coeffs [C], moment_coeffs [S])."""
    C = spec.species_count
    return theta[:C], theta[C:]


def join_params(spec: ModelSpec, radial, theta) -> dict:
    sc, mc = split_linear(spec, theta)
    return {"radial_coeffs": radial, "species_coeffs": sc, "moment_coeffs": mc}


def jacobian_block_size(tangents: int):
    """Atoms per block (``block_size`` of :func:`mtpjax.potential.site_energies`) in a
    forward-mode pass with ``tangents`` tangents: every per-pair intermediate of a block is
    ``tangents`` times that of a plain evaluation, so on CPU the block shrinks from
    ``CPU_BLOCK_SIZE`` by halving until tangents × atoms ≤ ``JACOBIAN_BLOCK_BUDGET`` (≥ 1) to
    keep them in cache; None (one block) on accelerators, as :func:`default_block_size`.

    The values do not depend on it. CPU time per group against the block size:
    ``benchmarks/results/bench_varpro_blocks.md``; of the whole step:
    ``benchmarks/results/bench_varpro_step.md``.
    """
    if default_block_size() is None:
        return None
    block = CPU_BLOCK_SIZE
    while block > 1 and block * tangents > JACOBIAN_BLOCK_BUDGET:
        block //= 2
    return block


def linear_rows(spec: ModelSpec, weights: LossWeights, radial, g):
    """Rows [A | r₀] [M, P+1] of one group: the weighted residuals r(θ) = A θ + r₀ of
    :func:`group_residuals` (M rows) are affine in θ = (species, moment coefficients) [P] for
    fixed ``radial`` coefficients; r₀ = r(0).

    On CPU with P ≥ ``CHAIN_MIN_LINEAR`` by the chain rule through the basic moments
    (:func:`linear_rows_chain`); else by forward mode (:func:`linear_rows_jacfwd`): measured
    (``benchmarks/results/bench_varpro_step.md``) the chain rule is faster at levels 12 and 16
    (P = 30, 93) and slower at level 8 (P = 10); on accelerators not measured against each
    other. Same values (to rounding)."""
    P = spec.species_count + spec.basis.scalar_count
    if default_block_size() is None or P < CHAIN_MIN_LINEAR:
        return linear_rows_jacfwd(spec, weights, radial, g)
    return linear_rows_chain(spec, weights, radial, g)


def linear_rows_jacfwd(spec: ModelSpec, weights: LossWeights, radial, g):
    """:func:`linear_rows` with A = ∂r/∂θ by forward mode: P tangents through the whole
    energy and force evaluation (atom blocks of :func:`jacobian_block_size`)."""
    P = spec.species_count + spec.basis.scalar_count
    block = jacobian_block_size(P)

    def res(theta):
        r = group_residuals(spec, weights, join_params(spec, radial, theta), g, block)
        return r, r

    A, r0 = jax.jacfwd(res, has_aux=True)(jnp.zeros(P, g.positions.dtype))
    return jnp.concatenate([A, r0[:, None]], axis=1)


def chain_block_size(spec: ModelSpec):
    """Atoms per block of :func:`linear_rows_chain`: ``CHAIN_BLOCK_SIZE`` on CPU, None (the
    whole group at once) on accelerators."""
    return None if default_block_size() is None else CHAIN_BLOCK_SIZE


def linear_rows_chain(spec: ModelSpec, weights: LossWeights, radial, g, block_size="auto"):
    """:func:`linear_rows` by the chain rule: the site energy is c_{t_i} + Σ_s θ_s B_s(i)
    (+ repulsion, θ-free), so the columns of A are, per configuration c and atom k,

    - species t: energy rows N_c(t) (atoms of species t), force and virial rows 0;
    - moment s: energy rows Σ_{i∈c} B_s(i); with g_ij = ∂B_s(i)/∂r_ij
      (:func:`mtpjax.potential.scalar_pair_jacobian`), force rows
      F_k = Σ_j g_kj − Σ_{(i,j): idx_ij = k} g_ij (as
      :func:`mtpjax.potential.forces_from_pair_gradients`) and virial rows
      sym(Σ_{i∈c, j} r_ij ⊗ g_ij) (as :func:`mtpjax.potential.virial_from_pair_gradients`),

    weighted as :func:`group_residuals` weights them (:func:`residual_scales`); r₀ is one plain
    evaluation of :func:`group_residuals` at θ = 0. ``block_size``: atoms per block ("auto":
    :func:`chain_block_size`; the values do not depend on it).
    """
    C = g.energy.shape[0]
    n_atoms, n_nbr = g.nbr_idx.shape
    dtype = g.positions.dtype
    n_species, S = spec.species_count, spec.basis.scalar_count
    P = n_species + S
    r0 = group_residuals(spec, weights, join_params(spec, radial, jnp.zeros(P, dtype)), g)
    stress = weights.stress > 0
    block = chain_block_size(spec) if block_size == "auto" else block_size
    block = n_atoms if block is None else min(block, n_atoms)
    blocks = -(-n_atoms // block)
    pad = blocks * block - n_atoms

    def split(x):
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
        return x.reshape((blocks, block) + x.shape[1:])

    vectors = g.positions[g.nbr_idx] - g.positions[:, None, :] + g.offsets  # r_ij [A, J, 3]
    params = {"radial_coeffs": radial}

    def body(gathered, x):
        v, t, nt, m, real, idx = x
        scalars, grad = scalar_pair_jacobian(spec, params, v, t, nt, m)
        scalars = jnp.where(real[:, None], scalars, 0.0)
        grad = jnp.where(real[:, None, None, None], grad, 0.0)  # [n, J, S, 3]
        gathered = gathered.at[idx.reshape(-1)].add(grad.reshape(-1, S, 3))
        out = (scalars, jnp.sum(grad, axis=1))
        if stress:
            out = out + (jnp.einsum("nja,njsb->nsab", v, grad),)
        return gathered, out

    xs = tuple(split(x) for x in (vectors, g.types, g.types[g.nbr_idx], g.nbr_mask,
                                  g.atom_mask, g.nbr_idx))
    gathered, outs = jax.lax.scan(body, jnp.zeros((n_atoms, S, 3), dtype), xs)
    outs = [y.reshape((blocks * block,) + y.shape[2:])[:n_atoms] for y in outs]
    scalars, own = outs[0], outs[1]

    def per_conf(x):
        return jax.ops.segment_sum(x, g.atom_conf, num_segments=C + 1)[:C]

    counts = jax.nn.one_hot(g.types, n_species, dtype=dtype) * g.atom_mask[:, None]
    sE, sF, sS = residual_scales(weights, g)
    parts = []
    if weights.energy > 0:
        parts.append(sE[:, None] * per_conf(jnp.concatenate([counts, scalars], axis=1)))
    if weights.forces > 0:
        forces = jnp.swapaxes(own - gathered, 1, 2)  # [A, 3, S]
        forces = jnp.concatenate([jnp.zeros((n_atoms, 3, n_species), dtype), forces], axis=2)
        parts.append((sF[:, None, None] * forces).reshape(-1, P))
    if stress:
        w = per_conf(outs[2])  # [C, S, 3, 3]
        virial = jnp.moveaxis(0.5 * (w + jnp.swapaxes(w, -1, -2)), 1, -1)  # [C, 3, 3, S]
        virial = jnp.concatenate([jnp.zeros((C, 3, 3, n_species), dtype), virial], axis=3)
        parts.append((sS[:, None, None, None] * virial).reshape(-1, P))
    A = jnp.concatenate(parts) if parts else jnp.zeros((1, P), dtype)
    return jnp.concatenate([A, r0[:, None]], axis=1)


@lru_cache(maxsize=32)  # one set of compiled functions per (model, weights, mesh)
def make_normal_eq_fns(spec: ModelSpec, weights: LossWeights, mesh=None, axis: str = "data"):
    """``(linear_qr, full_neq)``, both jit-compiled, over a tuple of :class:`Batch` es.

    ``linear_qr(radial, batches) -> (R [P+1, P+1], blocks)``: the triangular factor of
    [A | r₀], the linear least-squares problem for fixed radial coefficients (r₀ the residuals
    at θ = 0), and the rows [A | r₀] themselves, one array [G, M, P+1] per batch (M residual
    rows per group), kept for ``full_neq`` at the same radial coefficients.
    ``full_neq(radial, theta, blocks, batches) -> (JᵀJ [Q, Q], Jᵀr [Q], rᵀr)`` with the
    variables ordered (radial.ravel(), θ): only the radial columns ∂r/∂c are computed (forward
    mode, |c| tangents); the linear columns A = ∂r/∂θ (independent of θ) are those of
    ``blocks``. With a mesh, the group axis is sharded over ``axis`` (``blocks`` too) and the
    sums are reduced with one collective per call.
    """
    P = spec.species_count + spec.basis.scalar_count

    lin_group = partial(linear_rows, spec, weights)

    def full_group(radial, theta, block, g):
        shape = radial.shape
        atoms = jacobian_block_size(radial.size)

        def res(c):
            r = group_residuals(spec, weights, join_params(spec, c.reshape(shape), theta), g,
                                atoms)
            return r, r

        Jc, r = jax.jacfwd(res, has_aux=True)(radial.reshape(-1))
        A = block[:, :P]
        JcA = Jc.T @ A
        N = jnp.block([[Jc.T @ Jc, JcA], [JcA.T, A.T @ A]])
        return N, jnp.concatenate([Jc.T @ r, A.T @ r]), r @ r

    def lin_local(radial, batches):
        R = jnp.zeros((P + 1, P + 1), radial.dtype)
        blocks = []
        for batch in batches:
            def body(R, g):
                rows = lin_group(radial, g)
                block = jnp.concatenate([R, rows], axis=0)
                return jnp.linalg.qr(block, mode="r"), rows

            R, rows = jax.lax.scan(body, R, batch)
            blocks.append(rows)
        return R, tuple(blocks)

    def full_local(radial, theta, blocks, batches):
        Q = radial.size + P
        dtype = radial.dtype
        total = (jnp.zeros((Q, Q), dtype), jnp.zeros(Q, dtype), jnp.zeros((), dtype))
        for block, batch in zip(blocks, batches, strict=True):
            def body(carry, x):
                return jax.tree.map(jnp.add, carry, full_group(radial, theta, *x)), None

            total, _ = jax.lax.scan(body, total, (block, batch))
        return total

    if mesh is None:
        return jax.jit(lin_local), jax.jit(full_local)

    from jax.sharding import PartitionSpec as Ps

    def lin_reduce(radial, batches):
        R, blocks = lin_local(radial, batches)
        R = jax.lax.all_gather(R, axis, tiled=True)
        return jnp.linalg.qr(R, mode="r"), blocks

    def full_reduce(radial, theta, blocks, batches):
        return jax.lax.psum(full_local(radial, theta, blocks, batches), axis)

    def sharded(fn, n_rep, out_specs):
        def wrapped(*args):
            shard = jax.tree.map(lambda _: Ps(axis), args[n_rep:])
            in_specs = (*(Ps() for _ in range(n_rep)), *shard)
            return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                                 check_vma=False)(*args)

        return jax.jit(wrapped)

    return sharded(lin_reduce, 1, (Ps(), Ps(axis))), sharded(full_reduce, 2, Ps())


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
        self._rows = None  # (radial, blocks) of the last linear solve, for full_neq

    def solve_linear(self, radial):
        """(θ*(radial) [P], φ = min_θ loss) on the device."""
        R, blocks = self.linear_qr(radial, self.batches)
        self._rows = (radial, blocks)
        return qr_solve(R, self.ridge)

    def _linear_rows(self, radial):
        """The rows [A | r₀] at ``radial``: those of the last linear solve when it was at
        the same coefficients (the usual case: the accepted trial point), else recomputed."""
        if self._rows is not None:
            last, blocks = self._rows
            if last is radial or (np.shape(last) == np.shape(radial) and np.array_equal(
                    host_value(last), host_value(radial))):
                return blocks
        return self.linear_qr(radial, self.batches)[1]

    def step(self, radial, theta, value: float, lam: float):
        """One VarPro–LM iteration from (radial, θ*(radial)) with loss ``value``.

        Returns (radial, theta, value, lam, grad_norm); unchanged coefficients and
        ``self.converged = True`` when no λ of ``max_trials`` decreases the loss.
        """
        N, v, _ = self.full_neq(radial, theta, self._linear_rows(radial), self.batches)
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
