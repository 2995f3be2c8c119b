"""Error statistics of predictions against reference labels, as reported by ``mlp calc-errors``.

Energies in eV (total and per atom), forces in eV/Å, stresses as PlusStress in eV (virial) and
in GPa (virial / volume). The conventions are those of MLIP-2's ``ErrorMonitor``:

- forces: per atom the norm d_i = |ΔF_i|; "Maximal" = max d_i, "Average" = Σ d_i / (3N),
  "RMS" = sqrt(Σ d_i² / (3N)) (the per-component RMS); ratios Max(ΔF)/Max(F) of the norms and
  RMS(ΔF)/RMS(F) = sqrt(Σ d_i² / Σ |F_i|²);
- stresses (eV and GPa): per configuration the Frobenius norm d_c = ‖ΔS_c‖; "Maximal" = max d_c,
  "Average" = Σ d_c / (9 n_cfg), "RMS" = sqrt(Σ d_c² / (9 n_cfg)); counts are configurations.
"""

from __future__ import annotations

import numpy as np

EV_PER_A3_TO_GPA = 160.21766208


def _stats(diff: np.ndarray) -> dict:
    diff = np.abs(np.asarray(diff, dtype=np.float64))
    if diff.size == 0:
        return {"count": 0, "max": float("nan"), "mae": float("nan"), "rmse": float("nan")}
    return {
        "count": int(diff.size),
        "max": float(diff.max()),
        "mae": float(diff.mean()),
        "rmse": float(np.sqrt(np.mean(diff**2))),
    }


def _frobenius(voigt) -> float:
    """‖S‖_F of the symmetric 3×3 matrix given as (xx, yy, zz, yz, xz, xy)."""
    v = np.asarray(voigt, dtype=np.float64)
    return float(np.sqrt(np.sum(v[:3] ** 2) + 2.0 * np.sum(v[3:] ** 2)))


def _norm_stats(diff_norms, ref_norms, components: int) -> dict:
    """mlp's statistics of difference norms (one per atom or configuration)."""
    d = np.asarray(diff_norms, dtype=np.float64)
    r = np.asarray(ref_norms, dtype=np.float64)
    if d.size == 0:
        return {"count": 0, "max": float("nan"), "mae": float("nan"), "rmse": float("nan")}
    out = {
        "count": int(d.size),
        "max": float(d.max()),
        "mae": float(d.sum() / (components * d.size)),
        "rmse": float(np.sqrt((d**2).sum() / (components * d.size))),
    }
    out["max_ratio"] = float(d.max() / r.max()) if r.max() > 0 else float("nan")
    ref_sq = float((r**2).sum())
    out["rms_ratio"] = float(np.sqrt((d**2).sum() / ref_sq)) if ref_sq > 0 else float("nan")
    return out


def error_report(predicted, reference) -> dict:
    """Compare two equal-length lists of :class:`~mtpjax.io.cfg.Configuration`.

    Returns a dict with ``energy``, ``energy_per_atom``, ``forces``, ``stress`` (eV) and
    ``stress_gpa`` blocks, each with count, max, mae, rmse (module docstring: mlp's
    conventions); forces and stresses also have ``max_ratio`` and ``rms_ratio``.
    """
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predictions for {len(reference)} references")
    de, dea, df, fref, ds, sref, dsg, sgref = [], [], [], [], [], [], [], []
    for k, (p, r) in enumerate(zip(predicted, reference, strict=True)):
        if len(p) != len(r):
            raise ValueError(f"configuration {k}: {len(p)} atoms predicted, {len(r)} in reference")
        if r.energy is not None:
            de.append(p.energy - r.energy)
            dea.append((p.energy - r.energy) / max(len(r), 1))
        if r.forces is not None and len(r):
            df.append(np.linalg.norm(p.forces - r.forces, axis=1))
            fref.append(np.linalg.norm(r.forces, axis=1))
        if r.plus_stress is not None and p.plus_stress is not None:
            ref = np.asarray(r.plus_stress, dtype=np.float64)
            diff = _frobenius(np.asarray(p.plus_stress) - ref)
            ds.append(diff)
            sref.append(_frobenius(ref))
            if r.volume:
                dsg.append(diff / r.volume * EV_PER_A3_TO_GPA)
                sgref.append(sref[-1] / r.volume * EV_PER_A3_TO_GPA)
    return {
        "energy": _stats(de),
        "energy_per_atom": _stats(dea),
        "forces": _norm_stats(np.concatenate(df) if df else [],
                              np.concatenate(fref) if fref else [], 3),
        "stress": _norm_stats(ds, sref, 9),
        "stress_gpa": _norm_stats(dsg, sgref, 9),
    }


def format_report(report: dict) -> str:
    """Human-readable report in the layout of ``mlp calc-errors``."""
    titles = {
        "energy": ("Energy (eV)", "configurations"),
        "energy_per_atom": ("Energy per atom (eV/atom)", "configurations"),
        "forces": ("Forces (eV/Å)", "atoms"),
        "stress": ("Stresses (PlusStress, eV)", "configurations"),
        "stress_gpa": ("Stresses (GPa)", "configurations"),
    }
    lines = ["_________________Errors report_________________"]
    for key, (title, unit) in titles.items():
        s = report[key]
        lines.append(f"{title}:")
        lines.append(f"\tErrors checked for {s['count']} {unit}")
        if s["count"]:
            lines.append(f"\tMaximal absolute difference = {s['max']:.6g}")
            lines.append(f"\tAverage absolute difference = {s['mae']:.6g}")
            lines.append(f"\tRMS     absolute difference = {s['rmse']:.6g}")
            if "rms_ratio" in s:
                name = "Force" if key == "forces" else "Stres"
                lines.append(f"\tMax({name}Diff) / Max({name}) = {s['max_ratio']:.6g}")
                lines.append(f"\tRMS({name}Diff) / RMS({name}) = {s['rms_ratio']:.6g}")
        lines.append("")
    return "\n".join(lines)
