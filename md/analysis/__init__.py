"""Structural analysis for the physical validation of potentials (paper Table I, Figs. 4–5, S1–S4).

Functional core over ASE ``Atoms`` and numpy arrays; ``mtpjax analyze`` (:mod:`.cli`) is a thin
wrapper. Modules, one job each:

* :mod:`.bonds` — vectorised bond lists (matscipy);
* :mod:`.coordination` — coordination numbers, N3/N4/N5;
* :mod:`.angles` — bond-angle distribution (0.25° bins), θ̄, Δθ, per coordination class;
* :mod:`.structure_factor` — g(r), S(Q) (windowed transform, Debye sum, reciprocal-lattice
  sum), first sharp diffraction peak and H⁻¹;
* :mod:`.crystals` — reference Si crystals from space groups;
* :mod:`.soap` — configuration-averaged SOAP similarity (Table S1 settings, quippy);
* :mod:`.references` — relaxation at pressure and the 1 GPa grid of pressure-adjusted references;
* :mod:`.energetics` — ΔE above relaxed diamond;
* :mod:`.trajectory`, :mod:`.thermo` — reading trajectories and thermo logs;
* :mod:`.summary`, :mod:`.plots`, :mod:`.cli` — metrics dictionaries, figures, command line.
"""

from .angles import AngleDistribution, angle_distribution, bond_angles
from .bonds import SI_BOND_CUTOFF, Bonds, bond_list
from .coordination import coordination_fractions, coordination_histogram, coordination_numbers
from .crystals import CRYSTALS, build_crystal, canonical_name, crystal_names
from .energetics import diamond_energy_per_atom, energy_above_diamond, energy_per_atom
from .references import (
    ReferenceGrid,
    fixed_references,
    pressure_adjusted_references,
    pressure_grid,
    relax_at_pressure,
)
from .soap import SoapSettings, average_soap, kernel, similarity
from .structure_factor import (
    Peak,
    debye_structure_factor,
    direct_structure_factor,
    first_sharp_diffraction_peak,
    radial_distribution,
    structure_factor_from_gr,
)
from .summary import AnalysisOptions, format_table, structure_metrics
from .thermo import density_g_cm3, read_thermo
from .trajectory import read_trajectory

__all__ = [
    "SI_BOND_CUTOFF", "CRYSTALS", "AngleDistribution", "AnalysisOptions", "Bonds", "Peak",
    "ReferenceGrid", "SoapSettings", "angle_distribution", "average_soap", "bond_angles",
    "bond_list", "build_crystal", "canonical_name", "coordination_fractions",
    "coordination_histogram", "coordination_numbers", "crystal_names", "debye_structure_factor",
    "density_g_cm3", "diamond_energy_per_atom", "direct_structure_factor",
    "energy_above_diamond", "energy_per_atom", "first_sharp_diffraction_peak",
    "fixed_references", "format_table", "kernel", "pressure_adjusted_references",
    "pressure_grid", "radial_distribution", "read_thermo", "read_trajectory",
    "relax_at_pressure", "similarity", "structure_factor_from_gr", "structure_metrics",
]
