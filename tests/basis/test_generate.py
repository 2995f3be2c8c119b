"""generate_basis(L) against MLIP-2's templates (levels 02…28) and the level formula."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from mtpjax.basis_generate import (
    connected_contractions,
    generate_basis,
    scalar_contractions,
    sym_exponents,
)
from mtpjax.io.mtp_file import read_mtp
from tests.basis.reference import (
    basic_moments,
    moments,
    normalized_singular_values,
    numerical_rank,
    random_environment,
    scalar_matrix,
)
from tests.conftest import TEMPLATES  # noqa: E402  (project copy of MLIP's templates)

LEVELS = list(range(2, 29, 2))
SLOW_FROM = 22  # levels ≥ this run only with `-m slow` / make test-all

# MLIP's counts (README of the templates):
# level: (alpha_moments_count, basic, alpha_index_times_count, scalar)
MLIP_COUNTS = {
    2: (1, 1, 0, 1), 4: (2, 1, 1, 2), 6: (8, 5, 5, 5), 8: (18, 11, 14, 9),
    10: (41, 25, 42, 16), 12: (84, 46, 117, 29), 14: (174, 81, 348, 52),
    16: (350, 130, 969, 92), 18: (718, 201, 2634, 163), 20: (1352, 295, 6349, 288),
    22: (2621, 421, 15431, 500), 24: (4991, 581, 36170, 864), 26: (9396, 706, 82520, 1464),
    28: (17366, 866, 180069, 2445),
}
# linear dependencies among the scalar functions (identities of 3×3 tensors, e.g.
# Cayley–Hamilton for M₀₂ at level 16); MLIP's basis has exactly the same ones
RANK_DEFICIT = {16: 1, 18: 2, 20: 6, 22: 14, 24: 33, 26: 70, 28: 148}


def _level_param(level: int):
    marks = [pytest.mark.slow] if level >= SLOW_FROM else []
    return pytest.param(level, marks=marks, id=f"L{level:02d}")


LEVEL_PARAMS = [_level_param(level) for level in LEVELS]


def _template(level: int):
    path = TEMPLATES / f"{level:02d}.mtp"
    assert path.exists(), f"MLIP template {path} missing from the project"
    return read_mtp(path).basis


def _environments(seed: int, count: int, n_mu: int):
    rng = np.random.default_rng(seed)
    return [random_environment(rng, n_mu) for _ in range(count)]


def _match_columns(a: np.ndarray, b: np.ndarray, rtol: float = 1e-9) -> bool:
    """True if the columns of b [n, S] are a permutation of those of a [n, S]."""
    if a.shape != b.shape:
        return False
    scale = np.abs(np.hstack([a, b])).max(axis=0).max()
    order_a = np.argsort(a[0])
    row0 = a[0, order_a]
    used = np.zeros(a.shape[1], dtype=bool)
    for j in range(b.shape[1]):
        tol = rtol * max(abs(b[0, j]), 1e-300) + 1e-14 * scale
        lo = np.searchsorted(row0, b[0, j] - tol, side="left")
        hi = np.searchsorted(row0, b[0, j] + tol, side="right")
        for i in order_a[lo:hi]:
            if not used[i] and np.allclose(a[:, i], b[:, j], rtol=rtol, atol=1e-14 * scale):
                used[i] = True
                break
        else:
            return False
    return bool(used.all())


# ---------------------------------------------------------------------------- counts
@pytest.mark.parametrize("level", LEVEL_PARAMS)
def test_counts_match_mlip(level):
    ours = generate_basis(level)
    mlip = _template(level)
    n_moments, n_basic, n_times, n_scalar = MLIP_COUNTS[level]
    assert (mlip.alpha_moments_count, mlip.basic_count, mlip.times_count, mlip.scalar_count) == (
        n_moments, n_basic, n_times, n_scalar)
    assert ours.scalar_count == n_scalar
    assert ours.basic_count == n_basic
    np.testing.assert_array_equal(ours.alpha_index_basic, mlip.alpha_index_basic)
    # the scalars have the same levels as MLIP's (as a multiset), ours sorted by level
    np.testing.assert_array_equal(np.sort(ours.scalar_levels()), np.sort(mlip.scalar_levels()))
    assert (np.diff(ours.scalar_levels()) >= 0).all()
    assert ours.scalar_levels().max() <= level
    # the same contraction plan and merging as MLIP: identical moment and product counts
    assert ours.alpha_moments_count == n_moments
    assert ours.times_count == n_times
    assert ours.radial_funcs_needed == mlip.radial_funcs_needed
    assert ours.max_power == mlip.max_power


def _structure_ids(basis, intern: dict) -> list[int]:
    """Canonical id of every moment: basic row, or the multiset of its (p, q, w) rows with p, q
    replaced by their ids (order of p and q ignored). Equal ids = the same computation."""
    ids = [intern.setdefault(("B", *row), len(intern)) for row in basis.alpha_index_basic.tolist()]
    ids += [None] * (basis.alpha_moments_count - basis.basic_count)
    rows: dict[int, list] = {}
    for p, q, w, k in basis.alpha_index_times.tolist():
        rows.setdefault(k, []).append((p, q, w))
    for k in sorted(rows):
        key = tuple(sorted((min(ids[p], ids[q]), max(ids[p], ids[q]), w) for p, q, w in rows[k]))
        ids[k] = intern.setdefault(key, len(intern))
    return ids


@pytest.mark.parametrize("level", LEVEL_PARAMS)
def test_flattened_form_identical_to_mlip(level):
    """Same moments computed by the same rows as MLIP, up to renumbering of the moments."""
    ours = generate_basis(level)
    mlip = _template(level)
    intern: dict = {}
    a, b = _structure_ids(ours, intern), _structure_ids(mlip, intern)
    assert Counter(a) == Counter(b)
    assert sorted(a[i] for i in ours.alpha_moment_mapping) == sorted(
        b[i] for i in mlip.alpha_moment_mapping)


@pytest.mark.parametrize("level", LEVEL_PARAMS)
def test_same_scalar_functions_as_mlip(level):
    """Every MLIP scalar equals exactly one of ours (as a function, not only the span)."""
    ours = generate_basis(level)
    mlip = _template(level)
    envs = _environments(level, 4, mlip.radial_funcs_needed)
    assert _match_columns(scalar_matrix(ours, envs), scalar_matrix(mlip, envs))


@pytest.mark.parametrize("level", LEVEL_PARAMS)
def test_span_and_rank_match_mlip(level):
    ours = generate_basis(level)
    mlip = _template(level)
    n = ours.scalar_count
    # rows: 3× the count; for the slow levels 1.25× (still > count, keeps the SVD affordable)
    rows = 3 * n + 10 if level < SLOW_FROM else int(1.25 * n) + 50
    envs = _environments(1000 + level, rows, mlip.radial_funcs_needed)
    a = scalar_matrix(ours, envs)
    b = scalar_matrix(mlip, envs)
    rank_a, rank_b = numerical_rank(a), numerical_rank(b)
    rank_ab = numerical_rank(np.hstack([a, b]))
    assert rank_a == rank_b == rank_ab
    assert rank_a == n - RANK_DEFICIT.get(level, 0)
    # a clear gap between the kept and the dropped singular values
    s = normalized_singular_values(np.hstack([a, b]))
    assert s[rank_ab - 1] > 1e-9 and s[rank_ab] < 1e-13


# ---------------------------------------------------------------------------- properties
@pytest.mark.parametrize("level", [8, 16, 20])
def test_rotation_invariance(level):
    basis = generate_basis(level)
    rng = np.random.default_rng(7)
    for _ in range(3):
        r, f = random_environment(rng, basis.radial_funcs_needed)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        q *= np.sign(np.linalg.det(q))  # proper rotation
        v0 = scalar_matrix(basis, [(r, f)])[0]
        v1 = scalar_matrix(basis, [(r @ q.T, f)])[0]
        v2 = scalar_matrix(basis, [(-r, f)])[0]  # inversion: even tensors only → invariant
        np.testing.assert_allclose(v1, v0, rtol=1e-10, atol=1e-10 * np.abs(v0).max())
        np.testing.assert_allclose(v2, v0, rtol=1e-10, atol=1e-10 * np.abs(v0).max())
        # the non-scalar moments do change: the test can see a broken invariance
        m0, m1 = moments(basis, [(r, f), (r @ q.T, f)])
        assert not np.allclose(m0, m1)


def test_reference_evaluator_against_einsum():
    """The flattened level-8 basis equals explicit tensor contractions (checks the evaluator)."""
    basis = generate_basis(8)
    rng = np.random.default_rng(3)
    r, f = random_environment(rng, basis.radial_funcs_needed)
    u = r / np.linalg.norm(r, axis=1, keepdims=True)
    m00, m10 = f[:, 0].sum(), f[:, 1].sum()
    m01 = np.einsum("j,ja->a", f[:, 0], u)
    m02 = np.einsum("j,ja,jb->ab", f[:, 0], u, u)
    expected = [m00, m10, m00**2, m00 * m10, m01 @ m01, np.sum(m02 * m02), m00**3,
                m00 * (m01 @ m01), m00**4]
    got = scalar_matrix(basis, [(r, f)])[0]
    np.testing.assert_allclose(np.sort(got), np.sort(expected), rtol=1e-12)
    # basic moments: components of M_{μ,ν} in MLIP's order
    basic = basic_moments(basis, r, f)
    comps = [m00, *m01, m02[0, 0], m02[0, 1], m02[0, 2], m02[1, 1], m02[1, 2], m02[2, 2], m10]
    np.testing.assert_allclose(basic, comps, rtol=1e-12)


def test_sym_exponents_order():
    assert sym_exponents(0) == ((0, 0, 0),)
    assert sym_exponents(2) == ((2, 0, 0), (1, 1, 0), (1, 0, 1), (0, 2, 0), (0, 1, 1), (0, 0, 2))
    assert all(len(sym_exponents(n)) == (n + 1) * (n + 2) // 2 for n in range(11))


def test_graph_rules():
    """Cycles are in (tr M₀₂³ at 12), products are in, 5 tensors are out (M₀₀⁵ at 10)."""
    def has(level, types):
        return any(g[0] == types for g in connected_contractions(level))

    assert has(12, ((0, 2), (0, 2), (0, 2)))  # tr(M02 M02 M02)
    assert not has(10, ((0, 2), (0, 2), (0, 2)))
    assert sum(len(s) == 1 for s in scalar_contractions(8)) == 4  # M00 M10 M01² M02²
    assert all(sum(len(g[0]) for g in s) <= 4 for s in scalar_contractions(10))
    assert len(scalar_contractions(10)) == 16  # M00⁵ (level 10) excluded, as in MLIP
    # ν ≤ 10 and μ ≤ 5: M0,11 · M0,11 (26) and M60 (26) are not in MLIP's level 26
    assert not has(26, ((0, 11), (0, 11)))
    assert not has(26, ((6, 0),))


def test_generated_basis_is_consistent():
    basis = generate_basis(16)
    basis.validate()
    assert len(set(basis.alpha_moment_mapping.tolist())) == basis.scalar_count
    # no two product moments are computed from the same rows
    rows: dict[int, list] = {}
    for p, q, w, k in basis.alpha_index_times.tolist():
        rows.setdefault(k, []).append((min(p, q), max(p, q), w))
    keys = [tuple(sorted(v)) for v in rows.values()]
    assert len(keys) == len(set(keys))
    assert generate_basis(16) is basis  # cached


@pytest.mark.parametrize("bad", [0, 1, 3, 17, 29, 30, -2, 2.0, "16", True, None])
def test_bad_level(bad):
    with pytest.raises(ValueError, match="level"):
        generate_basis(bad)


@pytest.mark.slow
def test_generation_time_level_28():
    generate_basis.cache_clear()
    start = time.perf_counter()
    basis = generate_basis(28)
    assert time.perf_counter() - start < 60
    assert basis.scalar_count == MLIP_COUNTS[28][3]
