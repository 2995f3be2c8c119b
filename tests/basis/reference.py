"""Plain-numpy reference evaluation of a flattened MTP basis (tests only)."""

from __future__ import annotations

import numpy as np

from mtpjax.basis import BasisSpec


def basic_moments(basis: BasisSpec, r: np.ndarray, radial: np.ndarray) -> np.ndarray:
    """Basic moments of one environment.

    Args:
        basis: the flattened basis.
        r: float [J, 3], neighbour vectors r_j − r_i.
        radial: float [J, K], radial values f_μ(|r_j|), K ≥ number of μ the basis uses.

    Returns:
        float [B]: Σ_j f_μ(r_j) x^a y^b z^c / r^(a+b+c) for every row (μ, a, b, c).
    """
    return _basic_terms(basis, r, radial).sum(axis=0)


def _basic_terms(basis: BasisSpec, r: np.ndarray, radial: np.ndarray) -> np.ndarray:
    """Per-neighbour terms of the basic moments, float [J, B]."""
    r = np.asarray(r, dtype=np.float64)
    u = r / np.linalg.norm(r, axis=1, keepdims=True)
    powers = u[:, :, None] ** np.arange(basis.max_power + 1)  # [J, 3, P+1]
    mu, a, b, c = basis.alpha_index_basic.T
    return radial[:, mu] * powers[:, 0, a] * powers[:, 1, b] * powers[:, 2, c]


def _waves(basis: BasisSpec) -> list[np.ndarray]:
    """Rows of alpha_index_times grouped so that a group only reads finished moments."""
    times = basis.alpha_index_times
    depth = np.zeros(basis.alpha_moments_count, dtype=np.int64)
    for p, q, _, k in times:  # factors are complete before use (BasisSpec.validate)
        depth[k] = max(depth[k], max(depth[p], depth[q]) + 1)
    row_depth = depth[times[:, 3]] if len(times) else np.zeros(0, dtype=np.int64)
    return [times[row_depth == d] for d in np.unique(row_depth)]


def moments(basis: BasisSpec, environments) -> np.ndarray:
    """All moments of several environments.

    Args:
        basis: the flattened basis.
        environments: iterable of (r [J, 3], radial [J, K]) pairs (J may differ).

    Returns:
        float [n_env, alpha_moments_count].
    """
    environments = list(environments)
    basic = np.empty((basis.basic_count, len(environments)))
    chunk = 128
    for lo in range(0, len(environments), chunk):
        part = environments[lo : lo + chunk]
        sizes = [len(r) for r, _ in part]
        terms = _basic_terms(basis, np.concatenate([r for r, _ in part]),
                             np.concatenate([f for _, f in part]))
        starts = np.cumsum([0, *sizes[:-1]])
        basic[:, lo : lo + len(part)] = np.add.reduceat(terms, starts, axis=0).T
    m = np.zeros((basis.alpha_moments_count, basic.shape[1]))
    m[: basis.basic_count] = basic
    for wave in _waves(basis):
        wave = wave[np.argsort(wave[:, 3], kind="stable")]
        p, q, w, k = wave.T
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        m[k[starts]] += np.add.reduceat(w[:, None] * m[p] * m[q], starts, axis=0)
    return m.T


def scalar_matrix(basis: BasisSpec, environments, chunk: int = 512) -> np.ndarray:
    """Scalar basis functions over environments, float [n_env, alpha_scalar_moments].

    Environments are processed ``chunk`` at a time to bound memory (moments of a level-28
    basis take 17366 floats per environment).
    """
    environments = list(environments)
    parts = [
        moments(basis, environments[lo : lo + chunk])[:, basis.alpha_moment_mapping]
        for lo in range(0, len(environments), chunk)
    ]
    return np.concatenate(parts, axis=0)


def random_environment(
    rng: np.random.Generator, n_mu: int, r_min: float = 1.5, r_max: float = 5.0
) -> tuple[np.ndarray, np.ndarray]:
    """10–30 neighbours at random directions and radii, with random radial values.

    Every f_μ is its own random cubic polynomial of r, so different μ are independent.
    Returns (r [J, 3], radial [J, n_mu]).
    """
    n = int(rng.integers(10, 31))
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    dist = rng.uniform(r_min, r_max, size=n)
    x = (2 * dist - r_min - r_max) / (r_max - r_min)
    coeffs = rng.normal(size=(n_mu, 4))
    radial = np.stack([np.polyval(c, x) for c in coeffs], axis=1)
    return direction * dist[:, None], radial


def normalized_singular_values(a: np.ndarray) -> np.ndarray:
    """Singular values of ``a`` [rows, cols] with unit-norm columns, divided by the largest."""
    norms = np.linalg.norm(a, axis=0)
    s = np.linalg.svd(a / np.where(norms > 0, norms, 1.0), compute_uv=False)
    return s / s[0]


def numerical_rank(a: np.ndarray, rtol: float = 1e-10) -> int:
    """Rank of ``a`` [rows, cols] after scaling every column to unit norm."""
    return int((normalized_singular_values(a) > rtol).sum())
