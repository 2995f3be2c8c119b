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

import jax
import jax.numpy as jnp
import numpy as np
import optax

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
