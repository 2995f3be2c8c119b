"""Energy per atom above relaxed diamond, ΔE (eV/atom), with one calculator for both."""

from __future__ import annotations

from ase import Atoms

from .crystals import build_crystal
from .references import relax_at_pressure


def diamond_energy_per_atom(calc, symbol: str = "Si", fmax: float = 1e-4,
                            cell_filter: str = "frechet") -> float:
    """Energy per atom (eV/atom) of diamond relaxed at 0 GPa (cell and positions) with ``calc``."""
    relaxed = relax_at_pressure(build_crystal("diamond", symbol), calc, 0.0, fmax=fmax,
                                cell_filter=cell_filter)
    return relaxed.info["energy_eV"] / len(relaxed)


def energy_per_atom(atoms: Atoms, calc) -> float:
    """Potential energy per atom (eV/atom) of a frame evaluated with ``calc`` (frame unchanged)."""
    frame = atoms.copy()
    frame.calc = calc
    return float(frame.get_potential_energy()) / len(frame)


def energy_above_diamond(atoms: Atoms, calc, reference: float | None = None) -> float:
    """ΔE = E/N(frame) − E/N(relaxed diamond), in eV/atom (Table I of the paper).

    Args:
        atoms: the frame (e.g. the final quenched structure).
        calc: ASE calculator used for both energies.
        reference: diamond energy per atom if already known (eV/atom).
    """
    if reference is None:
        reference = diamond_energy_per_atom(calc, symbol=atoms.get_chemical_symbols()[0])
    return energy_per_atom(atoms, calc) - reference
