"""Bond-angle distribution: all angles j–i–k between two bonds of one centre atom i.

Vectorised over bonds (no loop over atoms): bonds are sorted by centre, so each centre's bonds
form a contiguous block; every bond ``a`` is paired with the bonds ``b > a`` of its block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bonds import Bonds

#: Histogram bin width in degrees (paper, Fig. 5c).
ANGLE_BIN_WIDTH = 0.25


def bond_angles(bonds: Bonds, centres: np.ndarray | None = None) -> np.ndarray:
    """Angles θ_jik in degrees for every unordered pair of bonds (i→j, i→k), j ≠ k.

    Args:
        bonds: bond list sorted by centre.
        centres: optional boolean mask (n_atoms,) selecting the centre atoms to include
            (e.g. ``coordination == 5`` for the N = 5 defects of Fig. 5c).

    Returns:
        float array of angles in degrees, in [0, 180].
    """
    i, vec, length = bonds.i, bonds.vectors, bonds.lengths
    if centres is not None:
        centres = np.asarray(centres, dtype=bool)
        if centres.shape != (bonds.n_atoms,):
            raise ValueError(f"centre mask has shape {centres.shape}, expected ({bonds.n_atoms},)")
        keep = centres[i]
        i, vec, length = i[keep], vec[keep], length[keep]
    if i.size < 2:
        return np.zeros(0)
    degree = np.bincount(i, minlength=bonds.n_atoms)
    block_start = np.cumsum(degree) - degree  # first bond of each centre
    position = np.arange(i.size) - block_start[i]  # rank of a bond inside its block
    n_after = degree[i] - position - 1  # partners b > a in the same block
    a = np.repeat(np.arange(i.size), n_after)
    offset = np.arange(a.size) - np.repeat(np.cumsum(n_after) - n_after, n_after)
    b = a + 1 + offset
    cos = np.einsum("ij,ij->i", vec[a], vec[b]) / (length[a] * length[b])
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


@dataclass(frozen=True)
class AngleDistribution:
    """Histogram and moments of a bond-angle distribution.

    Attributes:
        edges: bin edges in degrees (0 … 180).
        density: probability density per degree (integrates to 1), same length as centres.
        centres: bin centres in degrees.
        mean: mean angle θ̄ in degrees (over all angles, not the histogram).
        std: standard deviation Δθ in degrees.
        count: number of angles.
    """

    edges: np.ndarray
    density: np.ndarray
    centres: np.ndarray
    mean: float
    std: float
    count: int


def angle_distribution(angles: np.ndarray, bin_width: float = ANGLE_BIN_WIDTH) -> AngleDistribution:
    """Histogram (``bin_width`` degrees, default 0.25°) with mean θ̄ and width Δθ (std)."""
    angles = np.asarray(angles, dtype=float)
    if bin_width <= 0:
        raise ValueError(f"angle bin width must be positive, got {bin_width}°")
    edges = np.linspace(0.0, 180.0, int(round(180.0 / bin_width)) + 1)
    if angles.size == 0:
        nan = float("nan")
        return AngleDistribution(edges, np.zeros(edges.size - 1), 0.5 * (edges[1:] + edges[:-1]),
                                 nan, nan, 0)
    counts, _ = np.histogram(angles, bins=edges)
    density = counts / (angles.size * np.diff(edges))
    return AngleDistribution(
        edges, density, 0.5 * (edges[1:] + edges[:-1]),
        float(angles.mean()), float(angles.std()), int(angles.size),
    )
