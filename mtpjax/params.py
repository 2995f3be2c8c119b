"""The MTP coefficient pytree: reproducible initialisation and labels for optax masks.

A parameter pytree is a dict of arrays (the same keys as :meth:`MTPotential.params`)::

    radial_coeffs   float [C, C, K, R]  c^{(t_i,t_j)}_{μ,k} of f_μ(r) = Σ_k c_{μ,k} Q_k(r)
    species_coeffs  float [C]           constant site energy of each species (eV)
    moment_coeffs   float [S]           coefficient of each scalar basis function (eV)

Energies, forces and virials are *linear* in ``species_coeffs`` and ``moment_coeffs``
(the "linear" group) and non-linear in ``radial_coeffs`` (the "radial" group); see
:func:`param_labels` for ``optax.multi_transform`` / ``optax.masked``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtpjax.model import ModelSpec

RADIAL_KEYS = ("radial_coeffs",)
LINEAR_KEYS = ("species_coeffs", "moment_coeffs")
PARAM_KEYS = RADIAL_KEYS + LINEAR_KEYS


def param_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Shapes of the coefficient arrays of ``spec``."""
    C, K, R = spec.species_count, spec.radial_funcs_count, spec.radial_basis_size
    return {
        "radial_coeffs": (C, C, K, R),
        "species_coeffs": (C,),
        "moment_coeffs": (spec.basis.scalar_count,),
    }


def init_params(spec: ModelSpec, seed: int = 0, radial_scale: float = 1.0,
                dtype=np.float64) -> dict:
    """Random, reproducible initial coefficients (numpy arrays).

    As in ``mlp``: radial coefficients small uniform random numbers, U(−1, 1)·``radial_scale``;
    species and moment coefficients zero (they are linear and are best set by a least-squares
    solve, :mod:`mtpjax.fit.lstsq`). Same ``seed`` → bit-identical arrays on any machine
    (numpy's PCG64 stream, not JAX's device-dependent RNG).
    """
    shapes = param_shapes(spec)
    rng = np.random.default_rng(seed)
    radial = rng.uniform(-1.0, 1.0, size=shapes["radial_coeffs"]) * radial_scale
    return {
        "radial_coeffs": radial.astype(dtype),
        "species_coeffs": np.zeros(shapes["species_coeffs"], dtype),
        "moment_coeffs": np.zeros(shapes["moment_coeffs"], dtype),
    }


def param_labels(params: dict) -> dict:
    """Label pytree ``{"radial_coeffs": "radial", "species_coeffs": "linear", ...}``.

    Use with ``optax.multi_transform(transforms, param_labels)`` or, as a boolean mask, with
    :func:`param_mask`.
    """
    return {k: ("radial" if k in RADIAL_KEYS else "linear") for k in params}


def param_mask(params: dict, group: str) -> dict:
    """Boolean pytree: True for the leaves of ``group`` ("radial" or "linear")."""
    if group not in ("radial", "linear"):
        raise ValueError(f"group must be 'radial' or 'linear', got {group!r}")
    return {k: v == group for k, v in param_labels(params).items()}


def check_params(spec: ModelSpec, params: dict) -> dict:
    """Return ``params`` restricted to the coefficient keys; raise on wrong shapes or NaN."""
    shapes = param_shapes(spec)
    out = {}
    for key, shape in shapes.items():
        if key not in params:
            raise ValueError(f"parameter pytree lacks {key!r}")
        value = params[key]
        if tuple(np.shape(value)) != shape:
            raise ValueError(f"{key} has shape {np.shape(value)}, expected {shape}")
        if not bool(np.all(np.isfinite(np.asarray(value)))):
            raise ValueError(f"{key} contains NaN or infinite values")
        out[key] = value
    return out


def perturb(params: dict, seed: int, scale: float, group: str = "linear") -> dict:
    """``params`` with the leaves of ``group`` multiplied by (1 + scale·N(0, 1))."""
    rng = np.random.default_rng(seed)
    mask = param_mask(params, group)
    return {
        k: (np.asarray(v) * (1.0 + scale * rng.standard_normal(np.shape(v))) if mask[k]
            else np.asarray(v))
        for k, v in params.items()
    }


def to_jax(params: dict, dtype=None) -> dict:
    """Params as JAX arrays (optionally cast)."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=dtype), params)


def to_numpy(params: dict) -> dict:
    """Params as float64 numpy arrays (for writing ``.mtp`` files and checkpoints)."""
    return {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
