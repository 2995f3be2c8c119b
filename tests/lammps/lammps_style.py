"""LAMMPS-style local + ghost atoms and a full neighbour list for a small periodic cell, as one
MPI rank of LAMMPS holds them (the inputs of a lammps-jax program)."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.spatial import cKDTree


def local_and_ghosts(positions, cell, ghost_cut: float):
    """Local atoms (wrapped into the cell) and the periodic images LAMMPS keeps as ghosts:
    those whose fractional coordinates lie within ``ghost_cut`` (Å, measured across the cell
    faces) outside [0, 1) in every direction, as LAMMPS's comm cutoff does.

    Returns (x float [n + g, 3] local then ghosts, owner int [n + g] local atom of each row).
    """
    cell = np.asarray(cell, float)
    frac = np.asarray(positions, float) @ np.linalg.inv(cell)
    frac -= np.floor(frac)
    heights = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)
    margin = ghost_cut / heights
    reach = np.ceil(margin).astype(int)
    rows, owners = [frac], [np.arange(len(frac))]
    for shift in itertools.product(*[range(-k, k + 1) for k in reach]):
        if not any(shift):
            continue
        f = frac + np.asarray(shift)
        keep = np.all((f >= -margin) & (f < 1.0 + margin), axis=1)
        rows.append(f[keep])
        owners.append(np.flatnonzero(keep))
    return np.concatenate(rows) @ cell, np.concatenate(owners)


def full_edges(x, list_cut: float, rng=None):
    """Every ordered pair (i, j), i ≠ j, closer than ``list_cut`` among the rows of ``x`` (local
    and ghost rows alike, as a full list with ghost rows), shuffled like the plugin's atomic
    packing. Returns (senders, receivers) int32."""
    pairs = cKDTree(x).query_pairs(list_cut, output_type="ndarray")
    senders = np.concatenate([pairs[:, 0], pairs[:, 1]]).astype(np.int32)
    receivers = np.concatenate([pairs[:, 1], pairs[:, 0]]).astype(np.int32)
    order = (rng or np.random.default_rng(0)).permutation(len(senders))
    return senders[order], receivers[order]


def fold_ghost_forces(forces, owner, n_local: int):
    """Reverse communication: add every row's force to its owner (float [n_local, 3])."""
    out = np.zeros((n_local, 3))
    np.add.at(out, owner, np.asarray(forces, float)[: len(owner)])
    return out
