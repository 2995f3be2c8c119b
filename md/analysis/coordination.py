"""Coordination numbers and the fractions of 3-, 4- and 5-fold atoms (N3, N4, N5 of Table I)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .bonds import Bonds


def coordination_numbers(bonds: Bonds) -> np.ndarray:
    """Number of neighbours of every atom within ``bonds.cutoff`` (int array, shape (n_atoms,))."""
    return np.bincount(bonds.i, minlength=bonds.n_atoms)


def coordination_fractions(
    coordination: np.ndarray, classes: Iterable[int] = (3, 4, 5)
) -> dict[str, float]:
    """Percentage of atoms with exactly N neighbours, keyed ``"N3"``, ``"N4"``, ...

    Args:
        coordination: int array of per-atom coordination numbers.
        classes: the coordination numbers to report.

    Returns:
        ``{"N3": %, "N4": %, "N5": %}`` in percent of all atoms (0–100).
    """
    cn = np.asarray(coordination)
    if cn.size == 0:
        raise ValueError("coordination fractions of an empty frame are undefined")
    counts = np.bincount(cn, minlength=max(max(classes, default=0), int(cn.max())) + 1)
    return {f"N{k}": 100.0 * float(counts[k]) / cn.size for k in classes}


def coordination_histogram(coordination: np.ndarray) -> dict[int, float]:
    """Percentage of atoms for every coordination number that occurs (``{N: %}``)."""
    cn = np.asarray(coordination)
    if cn.size == 0:
        raise ValueError("coordination histogram of an empty frame is undefined")
    counts = np.bincount(cn)
    return {int(k): 100.0 * float(c) / cn.size for k, c in enumerate(counts) if c}
