"""Stress units and sign conventions of training and reference labels (see docs/units.md).

What the project expects:

- ``.cfg`` ``PlusStress`` (MLIP / ``mlp`` convention): eV, the *negative* virial,
  ``PlusStress = −σ_ASE · V``, Voigt order xx yy zz yz xz xy; positive under compression
  (the sign VASP prints).
- extxyz / ASE ``stress``: eV/Å³, ASE sign (positive under tension), Voigt order
  xx yy zz yz xz xy (or a 3×3 matrix).

Labels in other units are converted on read with ``--stress-unit`` (``eV/A3``, ``GPa``,
``kbar``; for ``.cfg`` files the unit of ``PlusStress`` is then ``UNIT·Å³``) and, for
extxyz/ASE data, ``--stress-sign vasp`` flips VASP's sign. A label whose magnitude exceeds
:data:`MAX_PLAUSIBLE_STRESS` (10 eV/Å³ ≈ 1602 GPa) after conversion is refused as almost
certainly in the wrong unit.
"""

from __future__ import annotations

import numpy as np

#: 1 eV/Å³ in GPa (CODATA 2018: 1.602176634e-19 J / 1e-30 m³ / 1e9).
EV_A3_IN_GPA = 160.21766208
#: factor taking a stress in the named unit to eV/Å³
STRESS_UNITS = {"eV/A3": 1.0, "GPa": 1.0 / EV_A3_IN_GPA, "kbar": 0.1 / EV_A3_IN_GPA}
#: factor taking a stress in the named sign convention to ASE's (positive under tension)
STRESS_SIGNS = {"ase": 1.0, "vasp": -1.0}
#: largest stress (eV/Å³) accepted as a label: 10 eV/Å³ ≈ 1602 GPa, far beyond any DFT data
MAX_PLAUSIBLE_STRESS = 10.0


def stress_factor(unit: str = "eV/A3", sign: str = "ase") -> float:
    """Multiplier taking a stress label in ``unit`` and ``sign`` convention to eV/Å³, ASE sign."""
    if unit not in STRESS_UNITS:
        raise ValueError(f"unknown stress unit {unit!r}; expected one of {list(STRESS_UNITS)}")
    if sign not in STRESS_SIGNS:
        raise ValueError(f"unknown stress sign {sign!r}; expected one of {list(STRESS_SIGNS)}")
    return STRESS_UNITS[unit] * STRESS_SIGNS[sign]


def implausible_stress(stress_eV_A3, unit: str = "eV/A3") -> str | None:
    """``None`` if the largest component of ``stress_eV_A3`` (eV/Å³, already converted from
    ``unit``) is plausible, else a message naming the unit the label is probably in."""
    peak = float(np.max(np.abs(stress_eV_A3))) if np.size(stress_eV_A3) else 0.0
    if peak <= MAX_PLAUSIBLE_STRESS:
        return None
    as_read = peak / STRESS_UNITS.get(unit, 1.0)
    if unit == "eV/A3":
        likely = "kbar" if as_read > 1000.0 else "GPa"
    elif unit == "GPa":
        likely = "kbar"
    else:
        likely = "a unit smaller than kbar"
    return (f"stress label of {as_read:.4g} {unit} (= {peak * EV_A3_IN_GPA:.4g} GPa) is "
            f"implausible (> {MAX_PLAUSIBLE_STRESS:g} eV/Å³ ≈ "
            f"{MAX_PLAUSIBLE_STRESS * EV_A3_IN_GPA:.0f} GPa); the labels look like {likely}, "
            f"not {unit}: pass --stress-unit GPa or kbar (see docs/units.md)")


def check_stress_magnitude(stress_eV_A3, unit: str = "eV/A3") -> None:
    """Raise ``ValueError`` with :func:`implausible_stress`'s message if implausible."""
    msg = implausible_stress(stress_eV_A3, unit)
    if msg:
        raise ValueError(msg)
