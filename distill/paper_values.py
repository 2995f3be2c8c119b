"""Numbers from the paper that the report prints beside ours (Morrow & Deringer, *Indirect
learning of interatomic potentials for accelerated materials simulations*; shared/paper/,
SPEC §4). Read from the paper's text; never computed here.
"""

from __future__ import annotations

#: Table I: 100,000-atom LDA Si models quenched at 1e11 K/s (N3, N5 in %, H⁻¹, θ̄ and Δθ in
#: degrees, ΔE in eV/atom above diamond), keyed like md.analysis.summary.TABLE_COLUMNS.
TABLE_I = {
    "M'_16": {"N3": 0.57, "N5": 2.37, "fsdp_inverse_height": 0.603, "theta_mean_deg": 108.99,
              "theta_std_deg": 10.85, "delta_E_eV_per_atom": 0.156},
    "M''_16": {"N3": 0.68, "N5": 1.64, "fsdp_inverse_height": 0.560, "theta_mean_deg": 109.15,
               "theta_std_deg": 10.23, "delta_E_eV_per_atom": 0.152},
    "M'_20": {"N3": 0.47, "N5": 3.65, "fsdp_inverse_height": 0.498, "theta_mean_deg": 108.93,
              "theta_std_deg": 10.91, "delta_E_eV_per_atom": 0.146},
    "M''_20": {"N3": 0.69, "N5": 1.33, "fsdp_inverse_height": 0.504, "theta_mean_deg": 109.16,
               "theta_std_deg": 9.93, "delta_E_eV_per_atom": 0.144},
    "GAP-18": {"N3": 0.70, "N5": 0.95, "fsdp_inverse_height": 0.564, "theta_mean_deg": 109.17,
               "theta_std_deg": 9.99, "delta_E_eV_per_atom": 0.145},
}
#: How close a student's Table-I metrics must be to its teacher's to count as reproducing the
#: paper's finding (issue 18's medium-config target; about the paper's own M''_16 − GAP-18
#: differences, rounded up): N3, N5 in percentage points, θ̄ and Δθ in degrees, ΔE in eV/atom.
#: H⁻¹ has no tolerance (the paper's FSDP differs by 0.004 at 10⁵ atoms; ours come from 216).
TABLE_I_TOLERANCE = {"N3": 1.0, "N5": 1.0, "theta_mean_deg": 0.5, "theta_std_deg": 1.0,
                     "delta_E_eV_per_atom": 0.02}
TABLE_I_SOURCE = ("paper Table I: 100,000 atoms, quench at 1e11 K/s, LAMMPS; GAP-18 is the "
                  "paper's teacher")
