"""Analysis of whole MD runs: one trajectory → metrics, series and figures; several → a
Table-I comparison. The library behind ``mtpjax analyze`` (:mod:`.cli`) and the pipeline's
analysis stage; calculators are ASE objects here (the CLI builds them from specs).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import ase.io
import numpy as np

from . import plots
from .energetics import diamond_energy_per_atom, energy_per_atom
from .references import (
    ReferenceGrid,
    fixed_references,
    pressure_adjusted_references,
    pressure_grid,
    relax_at_pressure,
)
from .soap import SoapSettings
from .summary import (
    AnalysisOptions,
    format_table,
    frame_series,
    json_ready,
    options_dict,
    similarity_series,
    structure_metrics,
)
from .thermo import pressures_for_frames, read_thermo
from .trajectory import read_trajectory


def analyse_run(path: str | Path, label: str, out: str | Path, *,
                thermo: str | Path | None = None, reference_calc=None,
                diamond_energy: float | None = None, relax_calc=None,
                references: Mapping[str, ReferenceGrid] | None = None,
                crystals: Sequence[str] = (), soap: bool = True,
                options: AnalysisOptions = AnalysisOptions(), every: int = 1,
                cell_filter: str = "frechet", p_step: float = 1.0, symbol: str = "Si",
                relax_final_steps: int = 0,
                names: Mapping[str, str | None] | None = None) -> dict:
    """Analyse one trajectory; write ``out/analysis.json`` and figures; return the result.

    Args:
        path: trajectory (extxyz, .traj, ...); the last frame gives the Table-I metrics.
        thermo: thermo log of the run (pressures of the frames, P–V series).
        reference_calc: ASE calculator for ΔE above relaxed diamond (eV/atom); None: no ΔE.
        diamond_energy: that calculator's relaxed-diamond energy per atom if already known.
        relax_calc: calculator relaxing the reference crystals on a ``p_step`` GPa grid up to
            the run's highest pressure (pressure-adjusted references); None: fixed
            literature cells. Ignored when ``references`` are given.
        references: ready reference grids {name: ReferenceGrid} (e.g. shared between runs).
        crystals: reference crystals for the SOAP similarity series (none: no similarity).
        soap: compute the similarity series (needs quippy).
        relax_final_steps: with ``reference_calc``, relax the last frame (positions and cell,
            0 GPa, at most this many optimiser steps, fmax 0.05 eV/Å) before its Table-I
            metrics — the paper's quenched models are relaxed; 0: the frame as it is.
        names: descriptions of the calculators for the result (``reference_calc``,
            ``relax_with``) and the reference mode (``reference_mode``).
    """
    out, names = Path(out), dict(names or {})
    traj = read_trajectory(path, every)
    log = read_thermo(thermo) if thermo else None
    pressures = pressures_for_frames(traj.frames, traj.indices, traj.n_total, log)
    final = traj.frames[-1]
    if relax_final_steps and reference_calc is not None:
        final = relax_at_pressure(final, reference_calc, 0.0, fmax=0.05,
                                  steps=relax_final_steps, cell_filter=cell_filter)
        final.calc = None
    analysis = structure_metrics(final, options)
    metrics = analysis["metrics"]
    metrics["frame"] = int(traj.indices[-1])
    metrics["final_frame_relaxed_steps"] = int(relax_final_steps if reference_calc else 0)
    if reference_calc is not None:
        if diamond_energy is None:
            diamond_energy = diamond_energy_per_atom(reference_calc, symbol,
                                                     cell_filter=cell_filter)
        metrics["energy_per_atom_eV"] = energy_per_atom(final, reference_calc)
        metrics["diamond_energy_per_atom_eV"] = diamond_energy
        metrics["delta_E_eV_per_atom"] = metrics["energy_per_atom_eV"] - diamond_energy
    series = frame_series(traj.frames, traj.indices, pressures, options.cutoff)
    if log is not None and "P" in log and "V" in log:
        n_atoms = log["N"] if "N" in log else len(final)
        series["thermo_pressure_GPa"] = log["P"].tolist()
        series["thermo_volume_per_atom_A3"] = (log["V"] / n_atoms).tolist()
    if soap and crystals:
        refs = references
        known = pressures[~np.isnan(pressures)]
        if refs is None and relax_calc is not None and known.size:
            grid = pressure_grid(max(float(known.max()), 0.0), step=p_step)
            refs = pressure_adjusted_references(crystals, relax_calc, grid,
                                                cell_filter=cell_filter)
            out.mkdir(parents=True, exist_ok=True)
            ase.io.write(out / "references.extxyz",
                         [a for grid_ in refs.values() for a in grid_.structures])
            series["reference_mode"] = names.get(
                "reference_mode", f"pressure-adjusted ({names.get('relax_with')}, step "
                                  f"{p_step} GPa)")
        elif refs is None:
            refs = fixed_references(crystals)
            series["reference_mode"] = "fixed (literature cells)"
        else:
            series["reference_mode"] = names.get("reference_mode", "given references")
        series["similarity"] = similarity_series(traj.frames, pressures, refs, SoapSettings())
    result = {
        "label": label, "source": str(path), "n_frames_in_file": traj.n_total,
        "thermo": None if thermo is None else str(thermo),
        "reference_calc": names.get("reference_calc"), "relax_with": names.get("relax_with"),
        "options": options_dict(options), "metrics": metrics, "series": series,
        "curves": analysis["curves"],
    }
    out.mkdir(parents=True, exist_ok=True)
    result = json_ready(result)
    (out / "analysis.json").write_text(json.dumps(result, indent=1))
    write_figures({label: result}, out)
    print(f"{label}: wrote {out / 'analysis.json'}", file=sys.stderr)
    return result


def write_figures(results: Mapping[str, dict], out: Path) -> None:
    """S(Q), bond angles, and (runs with pressures) P–V and similarity–pressure figures."""
    curves = {k: r["curves"] for k, r in results.items()}
    plots.plot_structure_factor(curves, out / "sq.png")
    plots.plot_bond_angles(curves, out / "bond_angles.png")
    series = {k: r["series"] for k, r in results.items()
              if any(p is not None for p in r["series"]["pressure_GPa"])
              or "thermo_pressure_GPa" in r["series"]}
    if series:
        plots.plot_pressure_volume(series, out / "pv.png")
        with_similarity = {k: s for k, s in series.items() if "similarity" in s}
        if with_similarity:
            plots.plot_similarity_pressure(with_similarity, out / "similarity_pressure.png")


def write_comparison(results: Mapping[str, dict], out: Path,
                     rows: Mapping[str, Mapping] | None = None) -> dict:
    """``out/table.md`` and ``out/table.json`` (Table-I rows {label: metrics}: ``rows``, by
    default each result's own metrics) and the joint figures of ``results``; returns the
    rows."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if rows is None:
        rows = {label: r["metrics"] for label, r in results.items()}
    (out / "table.md").write_text(format_table(rows, markdown=True) + "\n")
    (out / "table.json").write_text(json.dumps(json_ready(rows), indent=1))
    write_figures(results, out)
    return json_ready(rows)
