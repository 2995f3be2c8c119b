"""Units of the MD package: Å, fs, eV, amu, K, GPa (LAMMPS "metal" units but time in fs).

Velocities are Å/fs, forces eV/Å, masses amu. Conversion constants below (CODATA 2018).
"""

#: Boltzmann constant (eV/K).
KB = 8.617333262e-5
#: 1 amu·Å²/fs² in eV: kinetic energy = ½ m v² · MVV2E.
MVV2E = 1.66053906660e-27 * 1e-20 / 1e-30 / 1.602176634e-19
#: 1 eV/Å³ in GPa.
EV_A3_TO_GPA = 160.21766208
#: 1 fs in ns (for ns/day).
FS_TO_NS = 1e-6
