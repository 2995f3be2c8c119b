"""Optimisers (optax) and the diagonal change of variables they run in.

- :func:`lbfgs`: full-batch L-BFGS with the zoom (strong-Wolfe) line search — the counterpart
  of ``mlp train``'s BFGS. Each step reuses the value/gradient the line search computed at the
  accepted point (``optax.value_and_grad_from_state``), so an accepted unit step costs one
  loss+gradient evaluation.
- :func:`adamw`: minibatch Adam(W) with a warm-up + cosine (or constant) learning-rate schedule;
  weight decay only on the labelled ``radial`` group when requested
  (:func:`mtpjax.params.param_mask`).

Both run on *scaled* variables u = θ / s (elementwise): the moment coefficients are divided by
the inverse column norms of the least-squares design matrix, so that every linear direction
has unit curvature at the start (a Jacobi preconditioner; MLIP's ``linear_mults`` play the same
role). :class:`Scaling` converts between u and the coefficient pytree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from mtpjax.params import param_mask


@dataclass(frozen=True)
class Scaling:
    """θ = u · s leaf by leaf; ``s`` a pytree of positive arrays like the params."""

    scales: dict

    @classmethod
    def identity(cls, params) -> Scaling:
        return cls({k: np.ones(np.shape(v)) for k, v in params.items()})

    @classmethod
    def from_column_norms(cls, params, norms, species_count: int, floor: float = 1e-12):
        """Linear coefficients scaled by 1 / ‖column‖ (radial coefficients unscaled)."""
        norms = np.asarray(norms, np.float64)
        ref = max(float(np.max(norms)) if norms.size else 1.0, 1e-300)
        inv = 1.0 / np.maximum(norms, floor * ref)
        scales = {k: np.ones(np.shape(v)) for k, v in params.items()}
        scales["species_coeffs"] = inv[:species_count]
        scales["moment_coeffs"] = inv[species_count:]
        return cls(scales)

    def with_radial(self, radial_norms, linear_norms=None, floor: float = 1e-12) -> Scaling:
        """Also scale the radial coefficients by 1 / ‖Jacobian column‖ (Gauss–Newton diagonal).

        Coefficients with a zero column (unused radial functions) get the median scale.
        """
        r = np.asarray(radial_norms, np.float64)
        good = r > floor * max(float(r.max()) if r.size else 0.0, 1e-300)
        fill = float(np.median(r[good])) if good.any() else 1.0
        scales = dict(self.scales)
        scales["radial_coeffs"] = 1.0 / np.where(good, r, fill)
        return Scaling(scales)

    def to_params(self, u):
        return jax.tree.map(lambda x, s: x * jnp.asarray(s, x.dtype), u, self.scales)

    def from_params(self, params):
        return jax.tree.map(lambda x, s: jnp.asarray(x) / jnp.asarray(s, jnp.asarray(x).dtype),
                            params, self.scales)


def lbfgs(memory_size: int = 10,
          max_linesearch_steps: int = 20) -> optax.GradientTransformationExtraArgs:
    """optax L-BFGS with a zoom line search (strong Wolfe conditions)."""
    return optax.lbfgs(
        memory_size=memory_size,
        linesearch=optax.scale_by_zoom_linesearch(
            max_linesearch_steps=max_linesearch_steps, initial_guess_strategy="one"),
    )


class ScaleByBFGSState(NamedTuple):
    """Dense inverse-Hessian approximation H [n, n] of the flattened variables."""

    count: jax.Array
    params: optax.Params
    updates: optax.Updates
    inv_hessian: jax.Array


def scale_by_bfgs() -> optax.GradientTransformation:
    """Dense BFGS direction −H·g (chain with a line search, as :func:`bfgs` does).

    H starts as the identity (in the scaled variables of :class:`Scaling`, i.e. the Jacobi
    preconditioner, like mlp's ``linear_mults``), is rescaled once by sᵀy / yᵀy after the first
    step (Nocedal & Wright eq. 6.20) and then updated by the BFGS formula with every accepted
    step; a pair with sᵀy ≤ 0 (no curvature information) is skipped. Unlike L-BFGS, whose
    initial matrix γ_k·I changes every step, H accumulates all pairs, as ``mlp train`` does.
    Memory n²: meant for the ≲ 10³ coefficients of an MTP.
    """

    def init_fn(params):
        flat, _ = ravel_pytree(params)
        n = flat.shape[0]
        zeros = jax.tree.map(jnp.zeros_like, params)
        return ScaleByBFGSState(jnp.asarray(0, jnp.int32), zeros, zeros,
                                jnp.eye(n, dtype=flat.dtype))

    def update_fn(updates, state, params):
        g, unravel = ravel_pytree(updates)
        x, _ = ravel_pytree(params)
        x_prev, _ = ravel_pytree(state.params)
        g_prev, _ = ravel_pytree(state.updates)
        s, y = x - x_prev, g - g_prev
        sy = jnp.vdot(s, y)
        H = state.inv_hessian
        usable = (state.count > 0) & (sy > 1e-12 * jnp.linalg.norm(s) * jnp.linalg.norm(y))
        H = jnp.where(usable & (state.count == 1), H * sy / jnp.vdot(y, y), H)
        rho = jnp.where(usable, 1.0 / jnp.where(usable, sy, 1.0), 0.0)
        Hy = H @ y
        updated = (H - rho * (jnp.outer(s, Hy) + jnp.outer(Hy, s))
                   + (rho * rho * jnp.vdot(y, Hy) + rho) * jnp.outer(s, s))
        H = jnp.where(usable, updated, H)
        direction = H @ g
        # first step: a unit-length step along the gradient (as optax's L-BFGS)
        direction = jnp.where(state.count > 0, direction,
                              g * jnp.minimum(1.0, 1.0 / jnp.linalg.norm(g)))
        return unravel(direction), ScaleByBFGSState(
            state.count + 1, params, updates, H)

    return optax.GradientTransformation(init_fn, update_fn)


def bfgs(max_linesearch_steps: int = 20) -> optax.GradientTransformationExtraArgs:
    """Dense BFGS (:func:`scale_by_bfgs`) with the zoom (strong-Wolfe) line search."""
    return optax.chain(
        scale_by_bfgs(),
        optax.scale(-1.0),
        optax.scale_by_zoom_linesearch(
            max_linesearch_steps=max_linesearch_steps, initial_guess_strategy="one"),
    )


def learning_rate_schedule(learning_rate: float, total_steps: int, warmup_steps: int = 0,
                           kind: str = "cosine", final_fraction: float = 0.01):
    """``cosine`` (linear warm-up then cosine decay to ``final_fraction``) or ``constant``."""
    if kind == "constant":
        if warmup_steps:
            return optax.linear_schedule(0.0, learning_rate, warmup_steps)
        return optax.constant_schedule(learning_rate)
    if kind != "cosine":
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {kind!r}")
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup_steps else learning_rate, peak_value=learning_rate,
        warmup_steps=warmup_steps, decay_steps=max(total_steps, warmup_steps + 1),
        end_value=learning_rate * final_fraction)


def adamw(learning_rate: float, total_steps: int, warmup_steps: int = 0,
          schedule: str = "cosine", weight_decay: float = 0.0, params=None,
          clip_norm: float | None = None) -> optax.GradientTransformation:
    """Adam(W) with a schedule; decay (if any) only on the radial coefficients."""
    sched = learning_rate_schedule(learning_rate, total_steps, warmup_steps, schedule)
    mask = param_mask(params, "radial") if params is not None else None
    parts = []
    if clip_norm:
        parts.append(optax.clip_by_global_norm(clip_norm))
    parts.append(optax.adamw(sched, weight_decay=weight_decay, mask=mask))
    return optax.chain(*parts)
