"""Per-frame structural metrics, per-trajectory series, and the Table-I-style comparison.

Pure functions from ASE frames to JSON-ready dictionaries (floats, lists); the CLI only reads
files, calls these, and writes the results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from ase import Atoms

from .angles import angle_distribution, bond_angles
from .bonds import SI_BOND_CUTOFF, bond_list
from .coordination import coordination_fractions, coordination_histogram, coordination_numbers
from .references import ReferenceGrid
from .soap import SoapSettings, average_soap, kernel
from .structure_factor import (
    debye_structure_factor,
    default_q,
    first_sharp_diffraction_peak,
    radial_distribution,
    structure_factor_from_gr,
)
from .thermo import density_g_cm3


@dataclass(frozen=True)
class AnalysisOptions:
    """Settings of the structural analysis (lengths in Å, Q in Å⁻¹, angles in degrees).

    Attributes:
        cutoff: bond cutoff for coordination numbers and bond angles.
        angle_bin: bond-angle histogram bin width.
        angle_classes: coordination classes with their own angle distribution (Fig. 5c: 5).
        r_max: largest r of g(r) (clipped to half the smallest cell width).
        dr: g(r) bin width.
        q_max, dq: Q grid of S(Q).
        window: real-space window of the g(r) → S(Q) transform ("lorch" or "none").
        fsdp_window: Q range searched for the first sharp diffraction peak.
        debye_max_atoms: also compute the Debye-sum S(Q) for frames up to this size.
    """

    cutoff: float = SI_BOND_CUTOFF
    angle_bin: float = 0.25
    angle_classes: tuple[int, ...] = (5,)
    r_max: float | None = 12.0
    dr: float = 0.01
    q_max: float = 12.0
    dq: float = 0.01
    window: str = "lorch"
    fsdp_window: tuple[float, float] = (1.5, 2.6)
    debye_max_atoms: int = 0


def structure_metrics(atoms: Atoms, options: AnalysisOptions = AnalysisOptions()) -> dict:
    """Coordination, bond angles and S(Q) of one periodic frame.

    Returns:
        ``{"metrics": {...scalars...}, "curves": {...arrays as lists...}}`` with N3/N4/N5 in
        %, θ̄ and Δθ in degrees, FSDP position in Å⁻¹, its height H and H⁻¹, density in g/cm³
        and volume per atom in Å³.
    """
    bonds = bond_list(atoms, options.cutoff)
    cn = coordination_numbers(bonds)
    fractions = coordination_fractions(cn)
    dist = angle_distribution(bond_angles(bonds), options.angle_bin)
    rdf = radial_distribution(atoms, options.r_max, options.dr)
    q, s = structure_factor_from_gr(rdf, default_q(options.q_max, options.dq), options.window)
    peak = first_sharp_diffraction_peak(q, s, options.fsdp_window)
    metrics = {
        "n_atoms": len(atoms),
        "volume_per_atom_A3": float(abs(atoms.cell.volume) / len(atoms)),
        "density_g_cm3": density_g_cm3(atoms),
        "cutoff_A": options.cutoff,
        **fractions,
        "mean_coordination": float(cn.mean()),
        "coordination_histogram_percent": {
            str(k): v for k, v in coordination_histogram(cn).items()
        },
        "theta_mean_deg": dist.mean,
        "theta_std_deg": dist.std,
        "n_angles": dist.count,
        "fsdp_q_invA": peak.q,
        "fsdp_height": peak.height,
        "fsdp_inverse_height": peak.inverse_height,
        "fsdp_at_window_edge": peak.at_window_edge,
        "gr_r_max_A": rdf.r_max,
        "sq_window": options.window,
    }
    curves = {
        "r_A": rdf.r.tolist(), "g": rdf.g.tolist(),
        "q_invA": q.tolist(), "S": s.tolist(),
        "angle_deg": dist.centres.tolist(), "angle_density": dist.density.tolist(),
    }
    for k in options.angle_classes:
        sub = angle_distribution(bond_angles(bonds, cn == k), options.angle_bin)
        metrics[f"theta_mean_deg_N{k}"] = sub.mean
        metrics[f"theta_std_deg_N{k}"] = sub.std
        metrics[f"n_angles_N{k}"] = sub.count
        curves[f"angle_density_N{k}"] = sub.density.tolist()
    if len(atoms) <= options.debye_max_atoms:
        _, s_debye = debye_structure_factor(atoms, q, rdf.r_max, options.window)
        curves["S_debye"] = s_debye.tolist()
        metrics["sq_debye_max_abs_diff"] = float(np.max(np.abs(s_debye - s)))
    return {"metrics": json_ready(metrics), "curves": curves}


def similarity_series(frames: Sequence[Atoms], pressures: np.ndarray,
                      references: Mapping[str, ReferenceGrid],
                      settings: SoapSettings = SoapSettings()) -> dict[str, list[float]]:
    """SOAP similarity of every frame to every reference crystal at the frame's pressure.

    Frames with unknown pressure (NaN) are compared with the grid's lowest-pressure structure.
    """
    out: dict[str, list[float]] = {name: [] for name in references}
    for frame, p in zip(frames, pressures, strict=True):
        vector = average_soap(frame, settings)
        for name, grid in references.items():
            reference = grid.at(float(grid.pressures[0]) if np.isnan(p) else float(p))
            out[name].append(kernel(vector, average_soap(reference, settings), settings.zeta))
    return out


def similarity_by_pressure(pressures: Sequence[float | None], values: Sequence[float],
                           edges: Sequence[float]) -> list[dict]:
    """Mean similarity of the frames in each pressure window [edges[k], edges[k+1]) (GPa):
    ``[{"p_lo", "p_hi", "mean", "n"}]`` (``mean`` None for an empty window; frames without a
    pressure are left out). Fig. 4's quality measure, binned."""
    p = np.array([np.nan if x is None else float(x) for x in pressures])
    v = np.asarray(values, dtype=float)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (p >= lo) & (p < hi)
        out.append({"p_lo": float(lo), "p_hi": float(hi),
                    "mean": float(v[sel].mean()) if sel.any() else None, "n": int(sel.sum())})
    return out


def frame_series(frames: Sequence[Atoms], indices: np.ndarray, pressures: np.ndarray,
                 cutoff: float = SI_BOND_CUTOFF) -> dict[str, list]:
    """Cheap per-frame quantities: index, step, pressure (GPa), V/atom (Å³), density, N3–N5."""
    rows: dict[str, list] = {k: [] for k in ("frame", "step", "pressure_GPa",
                                             "volume_per_atom_A3", "density_g_cm3",
                                             "N3", "N4", "N5")}
    for k, frame, p in zip(indices, frames, pressures, strict=True):
        fractions = coordination_fractions(coordination_numbers(bond_list(frame, cutoff)))
        rows["frame"].append(int(k))
        rows["step"].append(frame.info.get("step"))
        rows["pressure_GPa"].append(None if np.isnan(p) else float(p))
        rows["volume_per_atom_A3"].append(float(abs(frame.cell.volume) / len(frame)))
        rows["density_g_cm3"].append(density_g_cm3(frame))
        for key in ("N3", "N4", "N5"):
            rows[key].append(fractions[key])
    return rows


#: Table-I columns: (key in metrics, header, format).
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("N3", "N3 (%)", "{:.2f}"),
    ("N5", "N5 (%)", "{:.2f}"),
    ("fsdp_inverse_height", "H^-1", "{:.3f}"),
    ("theta_mean_deg", "theta (deg)", "{:.2f}"),
    ("theta_std_deg", "dtheta (deg)", "{:.2f}"),
    ("delta_E_eV_per_atom", "dE (eV/atom)", "{:.3f}"),
)


def replica_statistics(rows: Sequence[Mapping[str, float]]) -> tuple[dict, dict]:
    """Mean and spread of one model's Table-I metrics over independent runs (replicas).

    Args:
        rows: the metrics of each replica (``structure_metrics``' keys; None or NaN: missing).
    Returns:
        (mean, spread): ``mean`` has every key of the first row — the mean over the replicas
        that have a finite value where the values differ, the common value where they agree
        (frame indices, relaxation steps) — and ``n_replicas``; ``spread`` has, per numeric
        key with ≥ 2 finite values, the sample standard deviation (ddof 1; same units).
    """
    if not rows:
        raise ValueError("no replicas")
    mean: dict = {}
    spread: dict = {}
    for key, first in rows[0].items():
        values = [r.get(key) for r in rows]
        if all(v == first for v in values) or not isinstance(first, int | float | type(None)):
            mean[key] = first
            continue
        finite = np.array([v for v in values if v is not None and np.isfinite(v)], float)
        mean[key] = float(finite.mean()) if finite.size else None
        if finite.size >= 2:
            spread[key] = float(finite.std(ddof=1))
    for key in rows[0]:
        if key not in spread and isinstance(rows[0][key], float) and len(rows) >= 2:
            spread[key] = 0.0  # every replica gave the same value
    mean["n_replicas"] = len(rows)
    return mean, spread


def format_table(rows: Mapping[str, Mapping[str, float]], markdown: bool = False) -> str:
    """Table-I-style text (or Markdown) table: one row per model, columns of
    :data:`TABLE_COLUMNS`; missing values print as ``-``."""
    header = ["Model"] + [h for _, h, _ in TABLE_COLUMNS]
    body = []
    for model, metrics in rows.items():
        cells = [model]
        for key, _, fmt in TABLE_COLUMNS:
            value = metrics.get(key)
            ok = value is not None and np.isfinite(value)
            cells.append(fmt.format(value) if ok else "-")
        body.append(cells)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in body]
        return "\n".join(lines)
    widths = [max(len(r[k]) for r in [header, *body]) for k in range(len(header))]

    def fmt_row(cells: list[str]) -> str:
        padded = [c.ljust(w) if k == 0 else c.rjust(w)
                  for k, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded)

    return "\n".join([fmt_row(header)] + [fmt_row(r) for r in body])


def options_dict(options: AnalysisOptions) -> dict:
    """JSON-ready copy of the options."""
    return json_ready(asdict(options))


def json_ready(value):
    """Recursively turn numpy scalars/tuples into JSON-friendly Python values (NaN → None)."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if not np.isfinite(value) else float(value)
    return value
