"""Neighbour lists: exactness for tiny, skewed and mixed-periodic cells; skin reuse; overflow."""

import itertools

import numpy as np
import pytest

from mtpjax.neighbors import (
    NeighborOverflowError,
    allocate,
    compact,
    in_range,
    needs_rebuild,
    pair_list,
    update,
    validate_geometry,
)


def brute_force_pairs(pos, cell, pbc, cutoff, reach=6):
    ranges = [range(-reach, reach + 1) if p else range(1) for p in pbc]
    out = set()
    for i, j in itertools.product(range(len(pos)), repeat=2):
        for s in itertools.product(*ranges):
            if i == j and not any(s):
                continue
            d = pos[j] + np.asarray(s) @ cell - pos[i]
            if np.linalg.norm(d) < cutoff:
                out.add((i, j, *s))
    return out


CASES = {
    "two_atom_diamond": (
        np.array([[0, 0, 0], [1.3575, 1.3575, 1.3575]]),
        np.array([[0, 2.715, 2.715], [2.715, 0, 2.715], [2.715, 2.715, 0]]),
        (True, True, True),
    ),
    "one_atom_tiny": (np.array([[0.1, 0.2, 0.3]]), np.diag([2.1, 2.3, 2.6]), (True, True, True)),
    "skewed": (
        np.random.default_rng(0).uniform(0, 3, (5, 3)),
        np.array([[4.0, 0, 0], [3.5, 2.0, 0], [1.5, 1.0, 3.0]]),
        (True, True, True),
    ),
    "slab": (
        np.random.default_rng(1).uniform(0, 3, (6, 3)),
        np.diag([3.0, 3.5, 0.0]),
        (True, True, False),
    ),
    "wire": (
        np.random.default_rng(2).uniform(0, 3, (4, 3)),
        np.diag([2.5, 0, 0]),
        (True, False, False),
    ),
    "cluster": (np.random.default_rng(3).uniform(0, 6, (8, 3)), None, (False, False, False)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_pair_list_matches_brute_force(name):
    pos, cell, pbc = CASES[name]
    cutoff = 5.0
    i, j, s = pair_list(pos, cell, pbc, cutoff)
    ours = {(int(a), int(b), *map(int, c)) for a, b, c in zip(i, j, s, strict=True)}
    assert ours == brute_force_pairs(pos, np.zeros((3, 3)) if cell is None else cell, pbc, cutoff)


def test_padded_list_has_every_pair_once():
    pos, cell, pbc = CASES["two_atom_diamond"]
    nl = allocate(pos, cell, pbc, 5.0)
    counts = np.asarray(nl.neighbors.mask).sum(axis=1)
    assert counts.tolist() == [28, 28]  # diamond shells within 5 Å: 4 + 12 + 12 (images)
    assert nl.capacity == 28


def test_skin_reuse_and_rebuild():
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 8, (40, 3))
    cell = np.eye(3) * 8
    nl = allocate(pos, cell, True, 3.0, skin=0.6)
    small = pos + 0.1
    assert not bool(
        needs_rebuild(
            nl.reference_positions, nl.reference_cell, small, cell, nl.skin, nl.shift_bound
        )
    )
    assert update(nl, small, cell) is nl
    moved = pos.copy()
    moved[3] += 0.4
    assert bool(
        needs_rebuild(
            nl.reference_positions, nl.reference_cell, moved, cell, nl.skin, nl.shift_bound
        )
    )
    assert update(nl, moved, cell) is not nl
    # a cell change beyond the skin budget also triggers a rebuild
    assert bool(
        needs_rebuild(
            nl.reference_positions, nl.reference_cell, pos, cell * 0.95, nl.skin, nl.shift_bound
        )
    )


def test_overflow_is_detected_and_handled():
    rng = np.random.default_rng(1)
    pos = rng.uniform(0, 10, (60, 3))
    cell = np.eye(3) * 10
    nl = allocate(pos, cell, True, 3.0, skin=0.3)
    squeezed_cell = cell * 0.7
    squeezed = pos * 0.7
    with pytest.raises(NeighborOverflowError):
        update(nl, squeezed, squeezed_cell, allow_grow=False)
    grown = update(nl, squeezed, squeezed_cell)
    assert grown.capacity > nl.capacity
    i, _, _ = pair_list(squeezed, squeezed_cell, True, 3.3)
    assert int(np.asarray(grown.neighbors.mask).sum()) == len(i)


@pytest.mark.parametrize(
    "bad, message",
    [
        ((np.array([[0, 0, np.nan]]), np.eye(3), True), "NaN"),
        ((np.zeros((2, 3)), np.array([[1, 0, 0], [2, 0, 0], [0, 0, 1.0]]), True), "singular"),
        ((np.zeros((2, 2)), np.eye(3), True), "shape"),
    ],
)
def test_bad_geometry_is_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        validate_geometry(*bad)


@pytest.mark.parametrize("name", list(CASES))
def test_compacted_skin_list_holds_exactly_the_pairs_in_range(name):
    """in_range + compact on a skin list, after moves within skin/2, give exactly the pairs
    within the cutoff at the new positions (brute force), each once, in listed order."""
    pos, cell, pbc = CASES[name]
    cutoff, skin = 3.7, 0.6  # no lattice vector exactly at the cutoff
    nl = allocate(pos, cell, pbc, cutoff, skin=skin)
    host = tuple(np.asarray(a) for a in nl.neighbors)
    rng = np.random.default_rng(7)
    ref_cell = np.zeros((3, 3)) if cell is None else cell
    for _ in range(3):
        moved = pos + rng.uniform(-1, 1, pos.shape) * (0.45 * skin / np.sqrt(3))
        assert not needs_rebuild(pos, ref_cell, moved, ref_cell, skin, nl.shift_bound)
        inside = in_range(host, moved, ref_cell, cutoff)
        packed = compact(host, inside, n_rows=len(pos) + 3)
        idx, shifts, mask = packed
        assert idx.dtype == np.int32 and shifts.dtype == np.int32
        assert idx.shape == mask.shape == (len(pos) + 3, max(int(inside.sum(1).max()), 1))
        got = [(i, int(idx[i, c]), *shifts[i, c].tolist())
               for i in range(len(pos)) for c in range(idx.shape[1]) if mask[i, c]]
        assert len(got) == len(set(got))
        assert set(got) == brute_force_pairs(moved, ref_cell, pbc, cutoff)
        # listed order kept within each row; padding rows empty and pointing at themselves
        for i in range(len(pos)):
            listed = [tuple([int(host[0][i, c]), *host[1][i, c].astype(int)])
                      for c in range(host[0].shape[1]) if inside[i, c]]
            assert [tuple(g[1:]) for g in got if g[0] == i] == listed
        assert not mask[len(pos):].any()
        assert (idx[len(pos):] == np.arange(len(pos), len(pos) + 3)[:, None]).all()


def test_compact_capacity_overflow():
    pos, cell, pbc = CASES["skewed"]
    nl = allocate(pos, cell, pbc, 4.0, skin=0.5)
    host = tuple(np.asarray(a) for a in nl.neighbors)
    inside = in_range(host, pos, cell, 4.0)
    most = int(inside.sum(1).max())
    assert compact(host, inside, capacity=most + 5)[0].shape == (len(pos), most + 5)
    with pytest.raises(NeighborOverflowError, match=f"{most} neighbours"):
        compact(host, inside, capacity=most - 1)
