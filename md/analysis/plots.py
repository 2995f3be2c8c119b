"""Matplotlib figures of the analysis (object-oriented API: no pyplot, no global backend change).

Each function takes plain dictionaries as written to ``analysis.json`` and a file path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_structure_factor(curves: Mapping[str, Mapping], path: Path) -> Path:
    """S(Q) of one or several runs (``{label: curves}``); Q in Å⁻¹."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for label, c in curves.items():
        ax.plot(c["q_invA"], c["S"], label=label)
        if "S_debye" in c:
            ax.plot(c["q_invA"], c["S_debye"], "--", lw=0.8, label=f"{label} (Debye sum)")
    ax.axhline(1.0, color="0.7", lw=0.5)
    ax.set_xlabel(r"$Q$ (Å$^{-1}$)")
    ax.set_ylabel(r"$S(Q)$")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_bond_angles(curves: Mapping[str, Mapping], path: Path, classes=(5,)) -> Path:
    """Bond-angle distributions (all centres, and per coordination class) of one or more runs."""
    panels = [("angle_density", "all atoms")] + [(f"angle_density_N{k}", f"N = {k} atoms")
                                                  for k in classes]
    fig = Figure(figsize=(6, 3 * len(panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (key, title) in zip(axes, panels, strict=True):
        drawn = False
        for label, c in curves.items():
            if key in c and np.any(c[key]):
                ax.plot(c["angle_deg"], c[key], lw=0.8, label=label)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, f"no angles ({title})", transform=ax.transAxes, ha="center")
        ax.axvline(109.47, color="0.7", lw=0.5)
        ax.set_xlim(40, 180)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(r"$\theta$ (deg)")
        ax.set_ylabel("probability density (1/deg)")
        if drawn:
            ax.legend(fontsize=8)
    return _save(fig, path)


def plot_similarity_pressure(series: Mapping[str, Mapping], path: Path) -> Path:
    """Average SOAP similarity to each reference crystal versus pressure (GPa)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for label, s in series.items():
        p = np.array([np.nan if v is None else v for v in s["pressure_GPa"]], dtype=float)
        for name, values in s["similarity"].items():
            tag = name if len(series) == 1 else f"{label}: {name}"
            ax.plot(p, values, ".-", ms=3, lw=0.8, label=tag)
    ax.set_xlabel("pressure (GPa)")
    ax.set_ylabel("SOAP similarity")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_pressure_volume(series: Mapping[str, Mapping], path: Path) -> Path:
    """Volume per atom (Å³) versus pressure (GPa): thermo log (line) and frames (points)."""
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    for label, s in series.items():
        if "thermo_pressure_GPa" in s:
            ax.plot(s["thermo_pressure_GPa"], s["thermo_volume_per_atom_A3"], lw=0.8,
                    label=f"{label} (thermo log)")
        p = np.array([np.nan if v is None else v for v in s["pressure_GPa"]], dtype=float)
        if np.isfinite(p).any():
            ax.plot(p, s["volume_per_atom_A3"], "o", ms=3, label=f"{label} (frames)")
    ax.set_xlabel("pressure (GPa)")
    ax.set_ylabel("volume per atom (Å$^3$)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_replicas(metrics: Mapping[str, list[Mapping]], columns, path: Path,
                  reference: str | None = "teacher",
                  tolerance: Mapping[str, float] | None = None) -> Path:
    """Table-I metrics of every independent run (replica) of each model, one panel per metric.

    Args:
        metrics: {label: [metrics of each replica]} (``structure_metrics`` keys).
        columns: (key, header, format) of the metrics to show (e.g. ``TABLE_COLUMNS``).
        reference: the label whose mean is drawn across every panel (None: none).
        tolerance: {key: half-width} of a band around the reference's mean (same units).
    """
    tolerance = dict(tolerance or {})
    labels = list(metrics)
    ncols = min(3, len(columns))
    nrows = -(-len(columns) // ncols)
    fig = Figure(figsize=(3.0 * ncols, 2.9 * nrows))
    for k, (key, header, _) in enumerate(columns):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        for x, label in enumerate(labels):
            values = [m.get(key) for m in metrics[label]]
            values = np.array([v for v in values if v is not None and np.isfinite(v)], float)
            if values.size:
                ax.plot(np.full(values.size, x), values, "o", ms=5, alpha=0.7)
                ax.plot([x - 0.25, x + 0.25], [values.mean()] * 2, "k-", lw=1.5)
        ref = [m.get(key) for m in metrics.get(reference, [])] if reference else []
        ref = np.array([v for v in ref if v is not None and np.isfinite(v)], float)
        if ref.size:
            ax.axhline(ref.mean(), color="0.5", lw=0.8, ls="--")
            if key in tolerance:
                ax.axhspan(ref.mean() - tolerance[key], ref.mean() + tolerance[key],
                           color="0.85", zorder=0)
        ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_title(header, fontsize=9)
    fig.suptitle("each run (dots), mean (bar); grey: the reference's mean"
                 + (" ± tolerance" if tolerance else ""), fontsize=9)
    return _save(fig, path)
