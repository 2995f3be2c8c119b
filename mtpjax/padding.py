"""Padding of per-configuration arrays to a few shape buckets, so ``jit`` compiles stay few.

Padded atoms sit at the origin with no neighbours and are excluded by an atom mask; padded
neighbour slots are masked out. Neither changes energies, forces or stresses.
"""

from __future__ import annotations

import math

import numpy as np

from mtpjax.potential import Neighbors


def bucket_size(n: int, minimum: int = 8, steps_per_doubling: int = 4) -> int:
    """Smallest bucket ≥ n on a geometric grid (≈19 % apart), rounded up to a multiple of 8."""
    if n <= minimum:
        return minimum
    k = math.ceil(steps_per_doubling * math.log2(n / minimum) - 1e-9)
    size = minimum * 2 ** (k / steps_per_doubling)
    return int(8 * math.ceil(size / 8 - 1e-9))


def pad_atoms(positions, types, n_pad: int):
    """Positions float [n_pad, 3], types int [n_pad] and atom mask bool [n_pad]."""
    n = len(positions)
    if n_pad < n:
        raise ValueError(f"cannot pad {n} atoms to {n_pad}")
    pos = np.zeros((n_pad, 3), dtype=np.float64)
    pos[:n] = positions
    typ = np.zeros(n_pad, dtype=np.int32)
    typ[:n] = types
    mask = np.zeros(n_pad, dtype=bool)
    mask[:n] = True
    return pos, typ, mask


def pad_neighbors(nbrs: Neighbors, n_pad: int, capacity: int) -> Neighbors:
    """Neighbour arrays padded to [n_pad, capacity] (numpy)."""
    idx = np.asarray(nbrs.idx)
    n, j = idx.shape
    if capacity < j or n_pad < n:
        raise ValueError(f"cannot pad neighbours [{n}, {j}] to [{n_pad}, {capacity}]")
    out_idx = np.broadcast_to(np.arange(n_pad, dtype=np.int32)[:, None], (n_pad, capacity)).copy()
    out_idx[:n, :j] = idx
    shifts = np.zeros((n_pad, capacity, 3), dtype=np.float64)
    shifts[:n, :j] = np.asarray(nbrs.shifts)
    mask = np.zeros((n_pad, capacity), dtype=bool)
    mask[:n, :j] = np.asarray(nbrs.mask)
    return Neighbors(out_idx, shifts, mask)
