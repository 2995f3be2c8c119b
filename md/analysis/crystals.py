"""Reference crystal structures of Si, built from space groups and lattice parameters.

Every entry lists the space group (ITA number, ASE setting), the Wyckoff positions and the
lattice parameters with their source. Experimental parameters refer to the pressure given;
for similarities at other pressures use the pressure-adjusted references of
:mod:`md.analysis.references`, which relax these cells with a calculator.

What was checked, and against what (tests/analysis/test_reference_crystals.py relaxes every
entry at 0 GPa with the shipped level-16 MTP, data/potentials/si_L16_mlp.mtp):

* space groups and Wyckoff sites of diamond (Fd-3m 8a), β-Sn (I4_1/amd 4a) and simple
  hexagonal (P6/mmm 1a) agree with the AFLOW Library of Crystallographic Prototypes (Mehl et
  al., Comp. Mat. Sci. 136, S1 (2017): A4, A5 = A_tI4_141_a, A_f = A_hP1_191_a);
* DFT (PBE): only diamond has a value at hand here — the mlearn PBE set (Zuo et al., J. Phys.
  Chem. A 124, 731 (2020), data/si_mlearn) strains a 2×2×2 cell of edge 10.9375 Å, i.e.
  a = 5.469 Å, 20.45 Å³/atom; the level-16 MTP relaxes diamond to the same volume within
  1 %. PBE energies and volumes of the other phases (Materials Project / ICSD entries) could not
  be retrieved in this environment, so they are not compared numerically;
* with the level-16 MTP at 0 GPa, diamond is the lowest phase (as in DFT and experiment); bct4
  and R8 lie 0.14–0.15 eV/atom above it; β-Sn and sh 0.32 eV/atom above it at 15.2–15.3 Å³/atom
  (denser than diamond, as the experimental cells below); **Imma and Cmca relax into sh and hcp
  into a six-fold structure at 0 GPa**, and **R8 relaxes towards BC8** (rhombohedral angle
  109.47°): they are high-pressure phases, meaningful only as pressure-adjusted references
  (:mod:`md.analysis.references`), not as 0 GPa "fixed" ones;
* not verified against the papers (not accessible here): the Imma internal coordinate (chosen,
  see its entry), the Cmca, hcp and R8 internal parameters (R8: the 6f signs were chosen to
  give a four-coordinated network), and the bct4 geometry (scaled from bct-C4). The paper's bct
  is the four-fold phase of its Ref. S4 (Fujimoto et al. 2008), i.e. bct4 as here — not Boyer's
  five-fold bct5 (Phys. Rev. Lett. 67, 715 (1991), I4/mmm 4e), which is a different structure.

Names (case-insensitive): ``diamond``, ``beta-Sn``, ``sh``, ``Imma``, ``Cmca``, ``hcp``, ``bct``,
``R8`` (aliases: ``dia``, ``bsn``/``beta_sn``, ``simple_hexagonal``, ``bct4``, ``si-xii``...).
"""

from __future__ import annotations

from dataclasses import dataclass

from ase import Atoms
from ase.spacegroup import crystal


@dataclass(frozen=True)
class CrystalSpec:
    """Space-group description of one reference structure.

    Attributes:
        name: canonical name.
        spacegroup: ITA number.
        basis: fractional coordinates of the symmetry-inequivalent atoms.
        cellpar: a, b, c in Å and α, β, γ in degrees.
        setting: ASE space-group setting (1 or 2).
        source: literature source of the parameters and the conditions they refer to.
    """

    name: str
    spacegroup: int
    basis: tuple[tuple[float, float, float], ...]
    cellpar: tuple[float, float, float, float, float, float]
    setting: int
    source: str


CRYSTALS: dict[str, CrystalSpec] = {
    "diamond": CrystalSpec(
        "diamond", 227, ((0.0, 0.0, 0.0),), (5.431, 5.431, 5.431, 90, 90, 90), 1,
        "Si-I, Fd-3m, 8a (origin choice 1); a = 5.431 Å at ambient conditions "
        "(Okada & Tokumaru, J. Appl. Phys. 56, 314 (1984): 5.4311 Å at 295 K).",
    ),
    "beta-Sn": CrystalSpec(
        "beta-Sn", 141, ((0.0, 0.0, 0.0),), (4.686, 4.686, 2.585, 90, 90, 90), 1,
        "Si-II, I4_1/amd, 4a (origin choice 1); a = 4.686 Å, c = 2.585 Å near 12 GPa "
        "(Jamieson, Science 139, 762 (1963)). Four neighbours at 2.43 Å plus two at 2.59 Å.",
    ),
    "sh": CrystalSpec(
        "sh", 191, ((0.0, 0.0, 0.0),), (2.527, 2.527, 2.373, 90, 90, 120), 1,
        "Si-V, simple hexagonal, P6/mmm, 1a; a = 2.527 Å, c = 2.373 Å at about 16 GPa "
        "(Olijnyk, Sikka & Holzapfel, Phys. Lett. A 103, 137 (1984); Hu & Spain, "
        "Solid State Commun. 51, 263 (1984)).",
    ),
    "Imma": CrystalSpec(
        "Imma", 74, ((0.0, 0.25, 0.18),), (4.737, 4.502, 2.550, 90, 90, 90), 1,
        "Si-XI, Imma, 4e (0, 1/4, z); a = 4.737 Å, b = 4.502 Å, c = 2.550 Å at 13.2 GPa "
        "(McMahon, Nelmes, Wright & Allan, Phys. Rev. B 50, 739 (1994)). In this setting "
        "z = 1/8 is the β-Sn limit and z = 1/4 the sh limit; z = 0.18 is an intermediate value "
        "chosen here (not taken from the paper) giving 6+2 coordination — relax the cell with "
        "a calculator (pressure-adjusted references) for quantitative use.",
    ),
    "Cmca": CrystalSpec(
        "Cmca", 64, ((0.2161, 0.0, 0.0), (0.0, 0.1718, 0.3283)),
        (7.962, 4.774, 4.765, 90, 90, 90), 1,
        "Si-VI, Cmca (oC16, isostructural with Cs-V), 8d (x, 0, 0) and 8f (0, y, z); "
        "lattice and internal parameters near 40 GPa after Hanfland, Schwarz, Syassen & "
        "Takemura, Phys. Rev. Lett. 82, 1197 (1999). 10- and 11-fold coordinated.",
    ),
    "hcp": CrystalSpec(
        "hcp", 194, ((1.0 / 3.0, 2.0 / 3.0, 0.25),), (2.444, 2.444, 4.152, 90, 90, 120), 1,
        "Si-VII, hexagonal close packed, P6_3/mmc, 2c; a = 2.444 Å, c = 4.152 Å near 42 GPa "
        "(Olijnyk, Sikka & Holzapfel, Phys. Lett. A 103, 137 (1984)).",
    ),
    "bct": CrystalSpec(
        "bct", 139, ((0.1804, 0.1804, 0.0),), (6.676, 6.676, 3.829, 90, 90, 90), 1,
        "bct4 (body-centred tetragonal, I4/mmm, 8h (x, x, 0)): the four-fold coordinated "
        "phase predicted to be stable under tensile stress (Fujimoto, Koretsune, Saito, Miyake "
        "& Oshiyama, New J. Phys. 10, 083001 (2008)); geometry of the carbon analogue bct-C4 "
        "(Umemoto et al., Phys. Rev. Lett. 104, 125504 (2010)) scaled to Si–Si bonds of "
        "2.32–2.41 Å — an approximation; relax with a calculator for quantitative use.",
    ),
    "R8": CrystalSpec(
        "R8", 148, ((0.2922, 0.2922, 0.2922), (0.5597, 0.0353, -0.2641)),
        (5.609, 5.609, 5.609, 110.07, 110.07, 110.07), 2,
        "Si-XII, R-3 (rhombohedral axes), 2c (x, x, x) and 6f (x, y, z) (Crain, Ackland, "
        "Maclean, Piltz, Hatton & Pawley, Phys. Rev. B 50, 13043(R) (1994)); the 6f signs are "
        "those that give a fully four-coordinated network (bonds 2.24–2.43 Å).",
    ),
}

_ALIASES = {
    "dia": "diamond", "cd": "diamond", "si-i": "diamond",
    "beta_sn": "beta-Sn", "betasn": "beta-Sn", "bsn": "beta-Sn", "β-sn": "beta-Sn",
    "si-ii": "beta-Sn",
    "simple_hexagonal": "sh", "simple-hexagonal": "sh", "si-v": "sh",
    "si-xi": "Imma", "si-vi": "Cmca", "si-vii": "hcp",
    "bct4": "bct", "bct-4": "bct", "si-xii": "R8",
}


def canonical_name(name: str) -> str:
    """Canonical reference-crystal name for ``name`` (case-insensitive, aliases allowed)."""
    key = name.strip().lower()
    for canonical in CRYSTALS:
        if canonical.lower() == key:
            return canonical
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(f"unknown crystal {name!r}; known: {', '.join(CRYSTALS)}")


def build_crystal(name: str, symbol: str = "Si") -> Atoms:
    """Conventional cell of reference crystal ``name`` (see :data:`CRYSTALS` for sources)."""
    spec = CRYSTALS[canonical_name(name)]
    atoms = crystal([symbol] * len(spec.basis), list(spec.basis), spacegroup=spec.spacegroup,
                    setting=spec.setting, cellpar=list(spec.cellpar), primitive_cell=False)
    atoms.info["crystal"] = spec.name
    return atoms


def crystal_names() -> list[str]:
    """Canonical names of all reference crystals, in the paper's order."""
    return list(CRYSTALS)
