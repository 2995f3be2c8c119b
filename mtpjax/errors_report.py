"""Error statistics of predictions against reference labels, as reported by ``mlp calc-errors``.

Energies in eV (total and per atom), forces in eV/Å (per-atom vector difference norms, as
mlp), stresses as PlusStress in eV (virial) and in GPa (virial / volume).
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


def error_report(predicted, reference) -> dict:
    """Compare two equal-length lists of :class:`~mtpjax.io.cfg.Configuration`.

    Returns a dict with ``energy``, ``energy_per_atom``, ``forces``, ``stress`` (eV) and
    ``stress_gpa`` blocks, each with count, max, mae, rmse; forces also have the relative
    ``rms_ratio`` = RMS(ΔF) / RMS(F).
    """
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predictions for {len(reference)} references")
    de, dea, df, fref, ds, dsg = [], [], [], [], [], []
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
            diff = np.asarray(p.plus_stress) - np.asarray(r.plus_stress)
            ds.append(diff)
            if r.volume:
                dsg.append(diff / r.volume * EV_PER_A3_TO_GPA)
    forces = _stats(np.concatenate(df) if df else [])
    if fref:
        rms_ref = np.sqrt(np.mean(np.concatenate(fref) ** 2))
        forces["rms_ratio"] = forces["rmse"] / rms_ref if rms_ref > 0 else float("nan")
    return {
        "energy": _stats(de),
        "energy_per_atom": _stats(dea),
        "forces": forces,
        "stress": _stats(np.concatenate(ds) if ds else []),
        "stress_gpa": _stats(np.concatenate(dsg) if dsg else []),
    }


def format_report(report: dict) -> str:
    """Human-readable report in the layout of ``mlp calc-errors``."""
    titles = {
        "energy": ("Energy (eV)", "configurations"),
        "energy_per_atom": ("Energy per atom (eV/atom)", "configurations"),
        "forces": ("Forces (eV/Å, per-atom vector difference)", "atoms"),
        "stress": ("Stresses (PlusStress, eV)", "components"),
        "stress_gpa": ("Virial stresses (GPa)", "components"),
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
                lines.append(f"\tRMS(ForceDiff) / RMS(Force) = {s['rms_ratio']:.6g}")
        lines.append("")
    return "\n".join(lines)
