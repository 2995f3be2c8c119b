"""Pressure-adjusted reference crystals: cells relaxed at fixed pressure on a 1 GPa grid.

Following the paper (Supplemental Material, Fig. S1 "scaled"), every reference crystal is
relaxed (cell and positions) at pressures 0, 1, 2, … GPa with a given ASE calculator. The
reference for a frame at pressure P (GPa) is the linear interpolation, in cell matrix and
fractional coordinates, between the two grid structures that bracket P (clamped to the grid).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.filters import FrechetCellFilter, UnitCellFilter
from ase.optimize import BFGS
from ase.units import GPa

from .crystals import build_crystal, canonical_name

CELL_FILTERS = {"frechet": FrechetCellFilter, "unit": UnitCellFilter}


def relax_at_pressure(atoms: Atoms, calc, pressure_gpa: float = 0.0, fmax: float = 1e-3,
                      steps: int = 500, cell_filter: str = "frechet") -> Atoms:
    """Copy of ``atoms`` with cell and positions relaxed at hydrostatic ``pressure_gpa`` (GPa).

    Uses an ASE cell filter with ``scalar_pressure`` and BFGS. ``"frechet"``
    (:class:`ase.filters.FrechetCellFilter`, the default) and ``"unit"``
    (:class:`ase.filters.UnitCellFilter`) reach the same minimum; the latter avoids matrix
    exponentials, which are slow for tiny cells when OpenBLAS runs multi-threaded (or set
    ``OPENBLAS_NUM_THREADS=1``).

    Args:
        atoms: starting structure (not modified).
        calc: ASE calculator.
        pressure_gpa: external pressure in GPa.
        fmax: force convergence in eV/Å (the filter applies it to the stress too).
        steps: maximum optimiser steps.
        cell_filter: ``"frechet"`` or ``"unit"``.
    """
    if cell_filter not in CELL_FILTERS:
        raise ValueError(f"unknown cell filter {cell_filter!r}; choose one of {list(CELL_FILTERS)}")
    relaxed = atoms.copy()
    relaxed.calc = calc
    filtered = CELL_FILTERS[cell_filter](relaxed, scalar_pressure=pressure_gpa * GPa)
    BFGS(filtered, logfile=None).run(fmax=fmax, steps=steps)
    relaxed.info["pressure_GPa"] = float(pressure_gpa)
    relaxed.info["energy_eV"] = float(relaxed.get_potential_energy())
    return relaxed


def pressure_grid(p_max: float, p_min: float = 0.0, step: float = 1.0) -> np.ndarray:
    """Pressures p_min, p_min + step, …, ≥ p_max (GPa); the paper's grid has step 1 GPa."""
    if p_max < p_min:
        raise ValueError(f"pressure grid: p_max {p_max} GPa < p_min {p_min} GPa")
    n = int(np.ceil((p_max - p_min) / step - 1e-9)) + 1
    return p_min + step * np.arange(n)


@dataclass(frozen=True)
class ReferenceGrid:
    """Relaxed structures of one crystal at increasing pressures (GPa)."""

    name: str
    pressures: np.ndarray
    structures: tuple[Atoms, ...]

    def at(self, pressure_gpa: float) -> Atoms:
        """Reference structure at ``pressure_gpa`` by linear interpolation between grid points."""
        return interpolate_structures(self.pressures, self.structures, pressure_gpa)


def interpolate_structures(pressures: np.ndarray, structures: tuple[Atoms, ...],
                           pressure_gpa: float) -> Atoms:
    """Interpolate cell and fractional coordinates linearly in pressure (clamped to the grid)."""
    p = np.asarray(pressures, dtype=float)
    x = float(np.clip(pressure_gpa, p[0], p[-1]))
    k = int(np.clip(np.searchsorted(p, x) - 1, 0, max(len(p) - 2, 0)))
    if len(p) == 1:
        return structures[0].copy()
    w = (x - p[k]) / (p[k + 1] - p[k])
    a, b = structures[k], structures[k + 1]
    if len(a) != len(b):
        raise ValueError("interpolated structures must have the same atoms")
    fa, fb = a.get_scaled_positions(wrap=False), b.get_scaled_positions(wrap=False)
    fb = fa + (fb - fa - np.round(fb - fa))  # shortest fractional displacement
    cell = (1 - w) * np.asarray(a.cell) + w * np.asarray(b.cell)
    out = Atoms(a.numbers, cell=cell, pbc=True)
    out.set_scaled_positions((1 - w) * fa + w * fb)
    out.info["pressure_GPa"] = x
    return out


def pressure_adjusted_references(names: Iterable[str], calc, pressures: np.ndarray,
                                 fmax: float = 1e-3, steps: int = 500,
                                 cell_filter: str = "frechet") -> dict[str, ReferenceGrid]:
    """Relax every crystal in ``names`` at every pressure (GPa) of ``pressures``.

    Each grid point starts from the previous relaxed structure (continuation in pressure).
    """
    pressures = np.sort(np.asarray(pressures, dtype=float))
    grids: dict[str, ReferenceGrid] = {}
    for name in names:
        current = build_crystal(canonical_name(name))
        relaxed = []
        for p in pressures:
            current = relax_at_pressure(current, calc, float(p), fmax=fmax, steps=steps,
                                        cell_filter=cell_filter)
            relaxed.append(current)
        grids[canonical_name(name)] = ReferenceGrid(canonical_name(name), pressures,
                                                    tuple(relaxed))
    return grids


def fixed_references(names: Iterable[str]) -> dict[str, ReferenceGrid]:
    """Literature cells of :mod:`md.analysis.crystals`, the same at every pressure ("fixed")."""
    return {canonical_name(n): ReferenceGrid(canonical_name(n), np.zeros(1),
                                             (build_crystal(n),)) for n in names}
