"""Bond lists: every ordered pair (i, j) of atoms closer than a cutoff, periodic images included.

A thin, vectorised layer over :func:`matscipy.neighbours.neighbour_list` (linked cells, C code),
so that coordination numbers and bond angles of 10^6-atom frames take seconds. Every other
module of :mod:`md.analysis` consumes a :class:`Bonds` record rather than calling the
neighbour search itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from matscipy.neighbours import neighbour_list

#: Default Si–Si bond cutoff in Å (first minimum of g(r) of amorphous Si; the paper's N3/N5).
SI_BOND_CUTOFF = 2.85


@dataclass(frozen=True)
class Bonds:
    """Ordered bonds i → j, sorted by the centre atom ``i``.

    Attributes:
        n_atoms: number of atoms in the frame.
        i, j: int arrays (n_bonds,), centre and neighbour indices (both directions present).
        vectors: float array (n_bonds, 3), r_j − r_i in Å (minimum of the periodic images
            that lie inside the cutoff; several images of one atom give several bonds).
        lengths: float array (n_bonds,), |vectors| in Å.
        cutoff: the cutoff in Å used to build the list.
    """

    n_atoms: int
    i: np.ndarray
    j: np.ndarray
    vectors: np.ndarray
    lengths: np.ndarray
    cutoff: float


def check_frame(atoms: Atoms, *, need_cell: bool = False, what: str = "analysis") -> None:
    """Raise ``ValueError`` for frames that cannot be analysed.

    Args:
        atoms: the frame.
        need_cell: require a 3-D periodic cell with non-zero volume (S(Q), density).
        what: name of the quantity, used in the message.
    """
    if len(atoms) == 0:
        raise ValueError(f"{what}: the frame has no atoms")
    if need_cell:
        if not all(atoms.pbc) or abs(atoms.cell.volume) < 1e-9:
            raise ValueError(
                f"{what} needs a 3-D periodic cell, but the frame has "
                f"pbc={list(map(bool, atoms.pbc))} and cell volume {abs(atoms.cell.volume):.3g} Å^3"
            )


def bond_list(atoms: Atoms, cutoff: float = SI_BOND_CUTOFF) -> Bonds:
    """All ordered pairs (i, j) with |r_j − r_i| < ``cutoff`` (Å), sorted by ``i``."""
    check_frame(atoms, what="bond list")
    if cutoff <= 0:
        raise ValueError(f"bond cutoff must be positive, got {cutoff} Å")
    if not any(atoms.pbc) and abs(atoms.cell.volume) < 1e-9:  # cluster without a cell
        atoms = atoms.copy()
        span = np.ptp(atoms.positions, axis=0) + 2.0 * cutoff
        atoms.set_cell(np.diag(span))
        atoms.positions -= atoms.positions.min(axis=0) - cutoff
    i, j, vec, dist = neighbour_list("ijDd", atoms, float(cutoff))
    if i.size and np.any(np.diff(i) < 0):  # matscipy sorts by i; keep the contract explicit
        order = np.argsort(i, kind="stable")
        i, j, vec, dist = i[order], j[order], vec[order], dist[order]
    return Bonds(len(atoms), i, j, vec, dist, float(cutoff))
