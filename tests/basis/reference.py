"""Plain-numpy reference evaluation of a flattened MTP basis (tests only)."""

from __future__ import annotations

import numpy as np

from mtpjax.basis import BasisSpec


def moments(basis: BasisSpec, r: np.ndarray, radial: np.ndarray) -> np.ndarray:
    """All moments of one environment.

    Args:
        basis: the flattened basis.
        r: float [J, 3], neighbour vectors r_j − r_i.
        radial: float [J, K], radial values f_μ(r_j), K ≥ number of μ the basis uses.

    Returns:
        float [alpha_moments_count].
    """
    r = np.asarray(r, dtype=np.float64)
    u = r / np.linalg.norm(r, axis=1, keepdims=True)
    m = np.zeros(basis.alpha_moments_count)
    mu, a, b, c = basis.alpha_index_basic.T
    # [B, J]: f_μ(r_j) x^a y^b z^c / r^(a+b+c)
    m[: basis.basic_count] = (
        radial[:, mu].T * u[None, :, 0] ** a[:, None] * u[None, :, 1] ** b[:, None]
        * u[None, :, 2] ** c[:, None]
    ).sum(axis=1)
    for p, q, w, k in basis.alpha_index_times:
        m[k] += w * m[p] * m[q]
    return m


def scalar_values(basis: BasisSpec, r: np.ndarray, radial: np.ndarray) -> np.ndarray:
    """Scalar basis functions of one environment, float [alpha_scalar_moments]."""
    return moments(basis, r, radial)[basis.alpha_moment_mapping]


def random_environment(rng: np.random.Generator, n_mu: int, r_min: float = 1.5,
                       r_max: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """10–30 neighbours at random directions and radii, with random radial values.

    Each f_μ is a random function of r (a random cubic polynomial), so different μ are
    independent. Returns (r [J, 3], radial [J, n_mu]).
    """
    n = int(rng.integers(10, 31))
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    dist = rng.uniform(r_min, r_max, size=n)
    coeffs = rng.normal(size=(n_mu, 4))
    x = (2 * dist - r_min - r_max) / (r_max - r_min)
    radial = np.stack([np.polyval(c, x) for c in coeffs], axis=1)
    return direction * dist[:, None], radial


def scalar_matrix(basis: BasisSpec, environments) -> np.ndarray:
    """Scalar values over environments, float [n_env, alpha_scalar_moments]."""
    return np.stack([scalar_values(basis, r, f) for r, f in environments])


def numerical_rank(a: np.ndarray, rtol: float = 1e-9) -> int:
    """Rank of ``a`` [rows, cols] after scaling every column to unit norm."""
    norms = np.linalg.norm(a, axis=0)
    s = np.linalg.svd(a / np.where(norms > 0, norms, 1.0), compute_uv=False)
    return int((s > rtol * s[0]).sum())
