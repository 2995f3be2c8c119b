"""Reference crystal structures of Si, built from space groups and lattice parameters, and the
DFT energies and volumes used to check a potential against them.

Every entry lists the space group (ITA number, ASE setting), the Wyckoff positions and the
lattice parameters with their source. Experimental parameters refer to the pressure given;
for similarities at other pressures use the pressure-adjusted references of
:mod:`md.analysis.references`, which relax these cells with a calculator.

Sources retrieved and checked (where they were read: :data:`SOURCES`):

* [AFLOW] space groups and Wyckoff sites of diamond (Fd-3m 8a), β-Sn (I4_1/amd 4a), simple
  hexagonal (P6/mmm 1a) and hcp (P6_3/mmc 2c at (1/3, 2/3, 1/4)) agree with the AFLOW Library
  of Crystallographic Prototypes (Mehl et al., Comp. Mat. Sci. 136, S1 (2017): A4 =
  A_cF8_227_a, A5 = A_tI4_141_a, A_f = A_hP1_191_a, A3 = A_hP2_194_c). Its BC8 page
  (A_cI16_206_c, Ia-3 16c) is the structure R8 relaxes into (below); its "bct5" page
  (A_tI4_139_e, Boyer 1991) is a five-fold structure, not the paper's four-fold bct4.
* [Anzellini] S. Anzellini et al., Sci. Rep. 9, 15537 (2019) — the paper's own Ref. S5 —
  Table 6 ("unit-cell parameters of the high-pressure phases of Si at ambient temperature"):
  Si-V (sh) a = 2.547 Å, c = 2.380 Å at 17.9 GPa (ruby scale; 17.3 GPa W scale); Si-VI (Cmca)
  a = 7.962 Å, b = 4.774 Å, c = 4.755 Å at 43.5 GPa (42.5 GPa W); Si-VII (hcp) a = 2.451 Å,
  c = 4.160 Å at 48.6 GPa (47.7 GPa W). These replace the earlier, unchecked sh and hcp cells
  (after Olijnyk et al. 1984) and correct the Cmca c (was 4.765 Å).
* [DFT] :data:`DFT_REFERENCES`: relaxed volume and energy per atom of diamond, β-Sn, sh, hcp
  and BC8 from DFT with CASTEP, PW91 and a 250 eV cutoff — the settings the paper quotes for
  its own DFT checks ("corresponding to Ref. 23 (cf. https://doi.org/10.5281/zenodo.1250555)";
  Ref. 23 is the GAP-18 paper, Bartók et al., Phys. Rev. X 8, 041048 (2018)). They were read
  from that Zenodo record's repository, the libAtoms silicon-testing-framework: the point at
  the relaxed volume (index 5, also the minimum) of its symmetry-constrained E(V) scans.
  PW91 is the functional of the paper's teacher; the shipped level-16 MTP was fitted to PBE
  (the mlearn set). For diamond the mlearn PBE cell is at hand too: its "Elastic" cells
  strain a 2×2×2 cell of edge 10.9375 Å (a = 5.469 Å, 20.45 Å³/atom; PW91: 20.36 Å³/atom).
* [DFT-RSS] :data:`DFT_RELAXED_CELLS`: the same PW91/CASTEP settings (k-point spacing
  0.03 Å⁻¹ instead of the scans' 0.015) applied to 157 eight-atom minima of a GAP-6 random
  structure search, each re-relaxed without symmetry constraints; the framework's test
  ``gap_6_rss_like_open_ended_minima_rerelax_sd2`` records the relaxed volume and the energy
  above a diamond cell relaxed in the same run (``V_relaxed``, ``E_relaxed``; the relaxed
  structures themselves are not stored). Symmetry analysis of the stored starting cells
  (spglib, tolerance 0.01 Å) finds two Imma cells: frame 34, 4e with z = 0.001 (a distorted
  sh; P6/mmm at 0.1 Å), and frame 112, 4e with z = 0.119, a ≈ b (a distorted β-Sn;
  I4_1/amd at 0.1 Å). DFT relaxation changes their volumes by ≤ 0.3 % and energies by ≤ 1.2
  meV/atom and ends at the sh and β-Sn values of the scans above: 15.19 vs 15.14 Å³/atom and
  0.3436 vs 0.3441 eV/atom (sh), 15.41 vs 15.39 and 0.3203 vs 0.3217 (β-Sn). Within the
  accuracy of the two data sets these Imma cells are, in PW91 at 0 GPa, sh and β-Sn, 23
  meV/atom apart; no separate Imma minimum was found, and none is claimed. The same set's
  BC8 cell (frame 103, Ia-3) gives 18.46 Å³/atom and 0.1630 eV/atom against the scans' 18.43
  and 0.1630, a check that the two PW91 sources agree. Its one Cmce cell (frame 133) is a
  four-fold, 21.6 Å³/atom network, not the 10/11-fold Si-VI; no cell is R-3 (R8) or I4/mmm
  (bct4).
* [DFT-c/a] PW91/CASTEP energy of hcp Si at fixed c/a from 0.6 to 1.9 in steps of 0.1
  (libAtoms/testing-framework, :data:`SOURCES` ``["DFT-c/a"]``): on the close-packed side,
  c/a ≥ 1.3 (below it the energy falls to a deeper minimum at c/a = 0.9, far from close
  packing), the lowest point is c/a = 1.7 (14.48 Å³/atom); 1.6 and 1.8 are 5.3 and 2.7
  meV/atom higher (:data:`DFT_HCP_C_OVER_A`).

No literature DFT energy or volume of Si-VI (Cmca), R8 or bct4 was found, nor of an Imma structure
distinct from β-Sn and sh. Searched (code, documentation and web-page indexes, repositories):
the libAtoms silicon-testing-framework and its successor libAtoms/testing-framework (bulk
tests only for diamond, β-Sn, sh, hcp, bcc, fcc, BC8, ST12 and hexagonal diamond; the RSS set
above); the GAP-18 training set (configuration types dia, bt, sh, hex_diamond, bcc, bc8, fcc,
hcp, st12, liq, amorph, surfaces, cracks and defects, as listed by ColabFit's ingestion script
for Si_PRX_GAP — no Imma, Cmca, R8 or bct); Materials Project and ICSD entries of the Si
phases (the one Si page found, mp-1001113, is a Cmcm structure 0.477 eV/atom above diamond,
not Si-VI); AFLOW pages for Imma, Cmca and R8 (not found); Pfrommer et al., Phys. Rev. B 56
(1997) ("Ab initio study of silicon in the R8 phase", LDA) and Mujica, Pickard & Needs,
arXiv:1508.02631 (2015) (abstracts only, no numbers); McMahon et al. 1994, Hanfland et
al. 1999, Crain et al. 1994, Fujimoto et al. 2008 and Mujica et al., Rev. Mod. Phys. 75, 863
(2003) (not found). So no literature value is cited for them; they were computed here instead
([DFT-GPAW] below) — this project's own measurement, labelled as such, not a citation.

* [DFT-GPAW] :data:`DFT_GPAW`: our own PBE calculation (GPAW 26.7.0, PAW, plane waves 300 eV,
  Fermi–Dirac 0.1 eV, k-point density 5 Å⁻¹, relaxations at 4 Å⁻¹; cutoff and density chosen
  by a convergence check on diamond and β-Sn to 2 meV/atom and 0.1–0.2 GPa), each primitive
  cell relaxed at 0 GPa with its space group kept (FixSymmetry + FrechetCellFilter, 0.01
  eV/Å) by ``benchmarks/dft_crystals.py``; result file ``benchmarks/results/dft_crystals.md``
  (command, versions, machine load, convergence table, relaxed cells). PBE is the functional
  of the mlearn set the shipped MTP was fitted to. Diamond: a = 5.475 Å, 20.511 Å³/atom
  (mlearn PBE cell 20.45). R8 stays R-3 (four-fold; 18.279 Å³/atom, V/V_dia 0.891, 0.160
  eV/atom above diamond): in PBE R8 is a minimum of its own, not BC8. bct4 stays I4/mmm
  (four-fold; a = 6.699 Å, c = 3.864 Å, 21.676 Å³/atom, V/V_dia 1.057, 0.101 eV/atom).
  Cmca (started at 15 Å³/atom) keeps Cmce at 0.001 Å but ends near Fmmm (69 at 0.01–0.3 Å):
  15.406 Å³/atom, V/V_dia 0.751, 0.300 eV/atom above diamond, seven-fold within 2.85 Å
  (five neighbours at 2.46–2.54 Å, two at 2.84 Å, one at 2.94 Å) — not sh, whose eight
  neighbours sit at 2.5–2.65 Å. The relaxation took 38 steps; the residual force at the
  energy mesh is 0.033 eV/Å (relaxed to 0.01 eV/Å at the 4 Å⁻¹ mesh). Cross-check against
  [DFT] (result file): β-Sn 15.400 Å³/atom, 0.290 eV/atom (PW91 15.386, 0.322); sh stopped
  unconverged at the 40-step cap (15.12 Å³/atom, 0.308 eV/atom; PW91 15.14, 0.344); hcp and
  BC8 were not run within the CPU budget. β-Sn and sh are not in :data:`DFT_GPAW` (not yet
  compared with the MTP).

Not checked, because the sources could not be retrieved here: PBE values of the Materials
Project; the diamond and β-Sn experimental cells (Okada & Tokumaru 1984, Jamieson 1963); the
Imma cell of McMahon et al. and its internal coordinate (z = 0.18 is chosen, see the entry);
the Cmca internal parameters; the R8 cell and internal parameters (the 6f signs were chosen
to give a four-coordinated network); the bct4 geometry (scaled from bct-C4). The paper's bct
is the four-fold phase of its Ref. S4 (Fujimoto et al. 2008), i.e. bct4 as here — not
Boyer's five-fold bct5 (I4/mmm 4e).

Against [DFT-GPAW] (PBE, like the MTP's training data; same test module): bct4's volume ratio
to diamond is right (MTP 1.0567, PBE 1.0568) but its energy above diamond 0.043 eV/atom too
high (0.144 vs 0.101, just outside the 0.04 tolerance: a documented miss); **R8 is a structural
miss**: PBE keeps R8 (R-3) at 0 GPa, 0.160 eV/atom above diamond with V/V_dia 0.891, while the
MTP has no R8 minimum and ends in BC8 (0.147 eV/atom, V/V_dia 0.922, 3.4 % above the PBE R8
ratio). **Cmca is a structural miss too**: the MTP takes it into sh (P6/mmm, eight-fold),
where PBE keeps a seven-fold Cmce/Fmmm minimum of its own; the numbers agree none the less
(V/V_dia 0.742 vs 0.751, 0.316 vs 0.300 eV/atom, within the tolerances), because that minimum
and sh are close in volume and energy. PBE orders diamond < bct4 < R8 < Cmca, and so does the
MTP (with BC8 for R8 and sh for Cmca).

What the shipped level-16 MTP (data/potentials/si_L16_mlp.mtp) does with each entry at 0 GPa
(tests/analysis/test_reference_crystals.py; relaxed with the space group kept, as in the DFT
scans): diamond, β-Sn, sh, hcp and bct4 keep their structure; **Imma and Cmca relax into sh**
and **R8 into BC8** (Ia-3, rhombohedral angle 109.47°). hcp stays P6_3/mmc with c/a 1.76, as
in DFT (grid minimum 1.7), but its six out-of-plane neighbours sit at 2.86 Å, just beyond the
2.85 Å bond cutoff, so it counts as six-fold. The comparison with :data:`DFT_REFERENCES`
(tolerances and measured deviations in the test module) has one miss: the hcp volume, 5.6 %
above DFT; and β-Sn and sh, 0.022 eV/atom apart in DFT, come out in the opposite order, 0.007
eV/atom apart. The two DFT Imma cells of [DFT-RSS] show the same weakness more sharply: the
MTP takes both, the β-Sn-like one included, into its sh minimum (one energy), where DFT keeps
them 23 meV/atom apart — along the Imma path the MTP's β-Sn is not a minimum. These are
high-pressure phases outside the mlearn training set (diamond-derived cells only): use them as
pressure-adjusted references (:mod:`md.analysis.references`), not as 0 GPa "fixed" ones.

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
        "Si-I, Fd-3m, 8a (origin choice 1) [AFLOW A4]; a = 5.431 Å at ambient conditions "
        "(Okada & Tokumaru, J. Appl. Phys. 56, 314 (1984): 5.4311 Å at 295 K; value not "
        "re-checked here). DFT: PW91 a = 5.461 Å [DFT], PBE (mlearn) a = 5.469 Å.",
    ),
    "beta-Sn": CrystalSpec(
        "beta-Sn", 141, ((0.0, 0.0, 0.0),), (4.686, 4.686, 2.585, 90, 90, 90), 1,
        "Si-II, I4_1/amd, 4a (origin choice 1) [AFLOW A5]; a = 4.686 Å, c = 2.585 Å near "
        "12 GPa (Jamieson, Science 139, 762 (1963); the abstract was retrieved, the numbers "
        "were not re-checked here). Four neighbours at 2.43 Å plus two at 2.59 Å.",
    ),
    "sh": CrystalSpec(
        "sh", 191, ((0.0, 0.0, 0.0),), (2.547, 2.547, 2.380, 90, 90, 120), 1,
        "Si-V, simple hexagonal, P6/mmm, 1a [AFLOW A_f]; a = 2.547 Å, c = 2.380 Å at 17.9 GPa "
        "(ruby scale) [Anzellini: Sci. Rep. 9, 15537 (2019), Table 6, run ST1].",
    ),
    "Imma": CrystalSpec(
        "Imma", 74, ((0.0, 0.25, 0.18),), (4.737, 4.502, 2.550, 90, 90, 90), 1,
        "Si-XI, Imma, 4e (0, 1/4, z); a = 4.737 Å, b = 4.502 Å, c = 2.550 Å at 13.2 GPa "
        "(McMahon, Nelmes, Wright & Allan, Phys. Rev. B 50, 739 (1994); not re-checked here). "
        "In this setting "
        "z = 1/8 is the β-Sn limit and z = 1/4 the sh limit; z = 0.18 is an intermediate value "
        "chosen here (not taken from the paper) giving 6+2 coordination — relax the cell with "
        "a calculator (pressure-adjusted references) for quantitative use.",
    ),
    "Cmca": CrystalSpec(
        "Cmca", 64, ((0.2161, 0.0, 0.0), (0.0, 0.1718, 0.3283)),
        (7.962, 4.774, 4.755, 90, 90, 90), 1,
        "Si-VI, Cmca (oC16, isostructural with Cs-V), 8d (x, 0, 0) and 8f (0, y, z); "
        "a = 7.962 Å, b = 4.774 Å, c = 4.755 Å at 43.5 GPa (ruby scale) [Anzellini: Sci. Rep. "
        "9, 15537 (2019), Table 6]. Internal parameters after Hanfland, Schwarz, Syassen & "
        "Takemura, Phys. Rev. Lett. 82, 1197 (1999) — not checked against that paper here. "
        "10- and 11-fold coordinated.",
    ),
    "hcp": CrystalSpec(
        "hcp", 194, ((1.0 / 3.0, 2.0 / 3.0, 0.25),), (2.451, 2.451, 4.160, 90, 90, 120), 1,
        "Si-VII, hexagonal close packed, P6_3/mmc, 2c [AFLOW A3]; a = 2.451 Å, c = 4.160 Å at "
        "48.6 GPa (ruby scale) [Anzellini: Sci. Rep. 9, 15537 (2019), Table 6].",
    ),
    "bct": CrystalSpec(
        "bct", 139, ((0.1804, 0.1804, 0.0),), (6.676, 6.676, 3.829, 90, 90, 90), 1,
        "bct4 (body-centred tetragonal, I4/mmm, 8h (x, x, 0)): the four-fold coordinated "
        "phase predicted to be stable under tensile stress (Fujimoto, Koretsune, Saito, Miyake "
        "& Oshiyama, New J. Phys. 10, 083001 (2008)); geometry of the carbon analogue bct-C4 "
        "(Umemoto et al., Phys. Rev. Lett. 104, 125504 (2010)) scaled to Si–Si bonds of "
        "2.32–2.41 Å — an approximation, not checked against either paper; relax with a "
        "calculator for quantitative use. Not Boyer's five-fold bct5 [AFLOW A_tI4_139_e].",
    ),
    "R8": CrystalSpec(
        "R8", 148, ((0.2922, 0.2922, 0.2922), (0.5597, 0.0353, -0.2641)),
        (5.609, 5.609, 5.609, 110.07, 110.07, 110.07), 2,
        "Si-XII, R-3 (rhombohedral axes), 2c (x, x, x) and 6f (x, y, z) (Crain, Ackland, "
        "Maclean, Piltz, Hatton & Pawley, Phys. Rev. B 50, 13043(R) (1994)); the 6f signs are "
        "those that give a fully four-coordinated network (bonds 2.24–2.43 Å). Cell and "
        "internal parameters not checked against the paper (not retrieved here).",
    ),
}

#: BC8 (Si-III), the structure R8 relaxes into with the level-16 MTP. Not one of the paper's
#: reference crystals (not in :data:`CRYSTALS`); the start cell of the DFT check of the [DFT]
#: bc8 entry in ``benchmarks/dft_crystals.py``.
BC8 = CrystalSpec(
    "bc8", 206, ((0.1003, 0.1003, 0.1003),), (6.64, 6.64, 6.64, 90, 90, 90), 1,
    "Si-III, BC8, Ia-3, 16c (x, x, x) [AFLOW A_cI16_206_c]; a = 6.64 Å, x = 0.1003 (recovered "
    "from high pressure, as quoted in S. J. Clark's thesis, Durham, ch. 4 "
    "(cmt.dur.ac.uk/sjc/thesis/thesis/node33.html), after Kasper & Richards, Acta Cryst. 17, "
    "752 (1964); the latter not retrieved here).",
)

#: Where the sources cited as [AFLOW], [Anzellini] and [DFT] above were read.
SOURCES: dict[str, str] = {
    "AFLOW": "https://aflow.org/prototype-encyclopedia/ pages A_cF8_227_a-001, A_tI4_141_a, "
             "A_hP1_191_a, A_hP2_194_c-001, A_cI16_206_c-001, A_tI4_139_e-001; Mehl et al., "
             "Comp. Mat. Sci. 136, S1 (2017)",
    "Anzellini": "https://www.nature.com/articles/s41598-019-51931-1/tables/6 (Table 6); "
                 "S. Anzellini et al., Sci. Rep. 9, 15537 (2019)",
    "DFT": "github.com/libAtoms/silicon-testing-framework, commit "
           "ec91b17fbbcd6c4a06a257acbfcba77734c0080c, test-results/"
           "model-CASTEP_ASE-test-bulk_{diamond,beta-Sn,sh,hcp,bc8}-properties.json "
           "(CASTEP settings: models/CASTEP_ASE/model.py; Zenodo doi:10.5281/zenodo.1250555, "
           "cited by the paper for its DFT settings together with its Ref. 23, Bartók et al., "
           "Phys. Rev. X 8, 041048 (2018))",
    "DFT-RSS": "github.com/libAtoms/silicon-testing-framework, commit "
               "ec91b17fbbcd6c4a06a257acbfcba77734c0080c, test-results/model-CASTEP_ASE-test-"
               "gap_6_rss_like_open_ended_minima_rerelax_sd2-properties.json (V_relaxed, "
               "E_relaxed; protocol: tests/gap_6_rss_like_open_ended_minima_rerelax_sd2/test.py) "
               "and the starting cells in tests/gap_6_rss_like_open_ended_minima_rerelax_sd2/"
               "model-GAP-6-test-RSS_like_open_ended-unique-minima.xyz (frames counted from 0)",
    "DFT-GPAW": "this repository: benchmarks/dft_crystals.py and its result files "
                "benchmarks/results/dft_crystals.{md,json} (our own PBE calculation, not "
                "literature)",
    "DFT-c/a": "github.com/libAtoms/testing-framework, commit "
               "6b3d0378f33a534a0bd8eb121911a4b53d769d3a, example_models/Si/run_dir/"
               "model-CASTEP_ASE-test-hcp_vs_c_a-properties.json (E, V and c_over_a; CASTEP "
               "PW91, model example_models/Si/models/CASTEP_ASE/model.py)",
}


@dataclass(frozen=True)
class DftReference:
    """DFT equilibrium of one Si structure at 0 GPa.

    Attributes:
        volume: relaxed volume per atom (Å³/atom).
        energy: total energy per atom at that volume (eV/atom; CASTEP pseudopotential zero, so
            only differences between entries are meaningful).
        source: where the numbers were read.
    """

    volume: float
    energy: float
    source: str

    def energy_above(self, other: DftReference) -> float:
        """Energy per atom above ``other`` (eV/atom)."""
        return self.energy - other.energy


_PW91 = ("PW91 (CASTEP, 250 eV cutoff), GAP-18 reference method; relaxed point of "
         "{}_E_vs_V in libAtoms/silicon-testing-framework@ec91b17 "
         "test-results/model-CASTEP_ASE-test-bulk_{}-properties.json")

#: DFT (PW91) volume and energy per atom at the relaxed 0 GPa structure, read from
#: :data:`SOURCES` ``["DFT"]`` (values as printed there, rounded to 10⁻⁵). Keys are structure
#: names; ``bc8`` is the structure R8 relaxes into with the level-16 MTP (no literature DFT
#: value of R8, Imma, Cmca or bct4 was found; R8, Cmca and bct4 are in :data:`DFT_GPAW`).
DFT_REFERENCES: dict[str, DftReference] = {
    "diamond": DftReference(20.35784, -163.17797, _PW91.format("diamond", "diamond")),
    "beta-Sn": DftReference(15.38587, -162.85631, _PW91.format("beta-Sn", "beta-Sn")),
    "sh": DftReference(15.13782, -162.83387, _PW91.format("sh", "sh")),
    "hcp": DftReference(14.49512, -162.61661, _PW91.format("hcp", "hcp")),
    "bc8": DftReference(18.42673, -163.01495, _PW91.format("bc8", "bc8")),
}



@dataclass(frozen=True)
class DftRelaxedCell:
    """A cell whose DFT relaxation is on record: its starting geometry and the DFT minimum.

    Attributes:
        spacegroup: ITA number of the starting cell.
        basis: fractional coordinates of one atom (ITA standard setting, as spglib gives it).
        cellpar: a, b, c in Å and α, β, γ in degrees of the conventional starting cell.
        start_volume: volume per atom of the stored starting cell (Å³/atom), to check the
            transcription of ``cellpar``.
        volume: DFT-relaxed volume per atom (Å³/atom).
        energy_above_diamond: DFT-relaxed energy per atom above diamond relaxed in the same run
            (eV/atom).
        diamond_volume: volume per atom of that diamond cell (Å³/atom).
        source: where the numbers were read.
    """

    spacegroup: int
    basis: tuple[float, float, float]
    cellpar: tuple[float, float, float, float, float, float]
    start_volume: float
    volume: float
    energy_above_diamond: float
    diamond_volume: float
    source: str

    @property
    def volume_ratio(self) -> float:
        """Relaxed volume per atom over the same run's diamond volume per atom."""
        return self.volume / self.diamond_volume


_RSS = ("PW91 (CASTEP, 250 eV cutoff, k-point spacing 0.03 Å⁻¹), unconstrained relaxation of "
        "frame {} (spglib at 0.01 Å: Imma 4e, {}); V_relaxed[{}], E_relaxed[{}] and the diamond "
        "frame 68 in libAtoms/silicon-testing-framework@ec91b17 test-results/model-CASTEP_ASE-"
        "test-gap_6_rss_like_open_ended_minima_rerelax_sd2-properties.json")
_RSS_DIAMOND_VOLUME = 20.39529  # V_relaxed[68] (Å³/atom); its E_relaxed is 3e-6 eV/atom

#: DFT (PW91) relaxations of the two Imma cells of [DFT-RSS] (module docstring): start cells
#: as spglib standardises the stored frames (tolerance 0.01 Å), results as printed in the
#: source, rounded to 10⁻⁵. Both stay where they started, at the sh and β-Sn minima of the
#: [DFT] scans; neither is a separate Imma minimum.
DFT_RELAXED_CELLS: dict[str, DftRelaxedCell] = {
    "Imma-sh": DftRelaxedCell(
        74, (0.0, 0.25, 0.00103), (4.60109, 4.95225, 2.65882, 90, 90, 90), 15.14579,
        15.18814, 0.34362, _RSS_DIAMOND_VOLUME,
        _RSS.format(34, "z = 0.001, a distorted sh (P6/mmm at 0.1 Å)", 34, 34)),
    "Imma-beta-Sn": DftRelaxedCell(
        74, (0.5, 0.25, 0.61931), (4.79752, 4.82489, 2.65858, 90, 90, 90), 15.38483,
        15.41465, 0.32028, _RSS_DIAMOND_VOLUME,
        _RSS.format(112, "|z| = 0.119, a distorted β-Sn (I4_1/amd at 0.1 Å)", 112, 112)),
}

@dataclass(frozen=True)
class DftComputed:
    """This project's own DFT relaxation of one crystal at 0 GPa — a measurement, not a citation.

    Attributes:
        volume: relaxed volume per atom (Å³/atom).
        energy_above_diamond: energy per atom above diamond relaxed with the same settings
            (eV/atom).
        diamond_volume: volume per atom of that diamond (Å³/atom).
        spacegroup: ITA number after the relaxation (spglib, 0.001 Å).
        source: the result file and the settings.
    """

    volume: float
    energy_above_diamond: float
    diamond_volume: float
    spacegroup: int
    source: str

    @property
    def volume_ratio(self) -> float:
        """Relaxed volume per atom over the same run's diamond volume per atom."""
        return self.volume / self.diamond_volume


_GPAW = ("this project's own calculation, not literature: GPAW 26.7.0 PBE PAW, plane waves "
         "300 eV, k-point density 5 Å⁻¹ (4 Å⁻¹ while relaxing), Fermi-Dirac 0.1 eV, primitive "
         "cell relaxed at 0 GPa with the space group kept (FixSymmetry + FrechetCellFilter, "
         "fmax 0.01 eV/Å); benchmarks/dft_crystals.py, "
         "benchmarks/results/dft_crystals.md (and .json)")
_GPAW_DIAMOND_VOLUME = 20.5109  # Å³/atom

#: [DFT-GPAW] PBE volume and energy above diamond of each reference crystal relaxed at 0 GPa,
#: computed in this project (benchmarks/results/dft_crystals.json, rounded to 10⁻⁴; the test
#: module checks the transcription against that file). Keys as in :data:`CRYSTALS`, plus
#: ``diamond`` and ``bc8``. The only DFT values of Cmca, R8 and bct4 here.
DFT_GPAW: dict[str, DftComputed] = {
    "diamond": DftComputed(20.5109, 0.0, _GPAW_DIAMOND_VOLUME, 227, _GPAW),
    "Cmca": DftComputed(15.4059, 0.2996, _GPAW_DIAMOND_VOLUME, 64, _GPAW),
    "R8": DftComputed(18.2785, 0.1598, _GPAW_DIAMOND_VOLUME, 148, _GPAW),
    "bct": DftComputed(21.6759, 0.1008, _GPAW_DIAMOND_VOLUME, 139, _GPAW),
}

#: PW91 hcp c/a with the lowest energy on the close-packed side (c/a ≥ 1.3) of the [DFT-c/a]
#: scan, and the scan's c/a step: the minimum lies within one step of it.
DFT_HCP_C_OVER_A: tuple[float, float] = (1.7, 0.1)


def build_dft_cell(name: str, symbol: str = "Si") -> Atoms:
    """Conventional starting cell of :data:`DFT_RELAXED_CELLS` entry ``name``."""
    cell = DFT_RELAXED_CELLS[name]
    atoms = crystal([symbol], [cell.basis], spacegroup=cell.spacegroup,
                    cellpar=list(cell.cellpar), primitive_cell=False)
    atoms.info["crystal"] = name
    return atoms


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


def build_spec(spec: CrystalSpec, symbol: str = "Si", primitive: bool = False) -> Atoms:
    """Cell of ``spec``: the conventional cell, or with ``primitive`` the primitive one."""
    atoms = crystal([symbol] * len(spec.basis), list(spec.basis), spacegroup=spec.spacegroup,
                    setting=spec.setting, cellpar=list(spec.cellpar), primitive_cell=primitive)
    atoms.info["crystal"] = spec.name
    return atoms


def build_crystal(name: str, symbol: str = "Si", primitive: bool = False) -> Atoms:
    """Conventional (or ``primitive``) cell of reference crystal ``name`` (sources:
    :data:`CRYSTALS`)."""
    return build_spec(CRYSTALS[canonical_name(name)], symbol, primitive)


def crystal_names() -> list[str]:
    """Canonical names of all reference crystals, in the paper's order."""
    return list(CRYSTALS)
