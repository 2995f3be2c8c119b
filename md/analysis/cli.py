"""``mtpjax analyze``: structural analysis of MD trajectories, and a Table-I comparison.

One trajectory: writes ``OUT/analysis.json`` and figures (S(Q), bond angles, P–V,
similarity–pressure). Several trajectories (or ``analysis.json`` files from earlier runs): each
run is analysed into ``OUT/<label>/`` and a Table-I-style table (N3, N5, H⁻¹, θ̄, Δθ, ΔE) is
printed and written to ``OUT/table.md`` and ``OUT/table.json``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from . import runs as run_lib
from .bonds import SI_BOND_CUTOFF
from .calculators import load_calculator
from .crystals import canonical_name, crystal_names
from .energetics import diamond_energy_per_atom
from .structure_factor import WINDOWS
from .summary import (
    AnalysisOptions,
    format_table,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``analyze`` options on ``parser``."""
    parser.add_argument("runs", nargs="+", metavar="TRAJ",
                        help="trajectory (extxyz, .traj, ...) or analysis.json; several = compare")
    parser.add_argument("--labels", nargs="+", help="model names for the runs (default: stems)")
    parser.add_argument("--out", default="analysis", help="output directory (default: analysis)")
    parser.add_argument("--every", type=int, default=1, help="use every N-th frame for series")
    parser.add_argument("--thermo", action="append",
                        help="MD thermo log (CSV/JSONL: step,time,T,P[GPa],V,E); repeat once per "
                             "run")
    parser.add_argument("--reference-calc", metavar="SPEC", action="append",
                        help="ASE calculator for ΔE above relaxed diamond: 'mtp:PATH', 'PATH.mtp', "
                             "'sw' or 'module:factory'; give once for all runs or repeat once "
                             "per run ('none' skips a run)")
    parser.add_argument("--relax-with", metavar="SPEC", action="append",
                        help="calculator that relaxes the pressure-adjusted reference crystals "
                             "(default: --reference-calc; none: fixed literature cells); once "
                             "or once per run")
    parser.add_argument("--species", nargs="+", default=["Si"], help="species order of an MTP")
    parser.add_argument("--cutoff", type=float, default=SI_BOND_CUTOFF,
                        help=f"bond cutoff in Å (default {SI_BOND_CUTOFF})")
    parser.add_argument("--r-max", type=float, default=12.0, help="g(r) range in Å (default 12)")
    parser.add_argument("--q-max", type=float, default=12.0, help="S(Q) range in 1/Å")
    parser.add_argument("--window", choices=WINDOWS, default="lorch",
                        help="window of the g(r) → S(Q) transform (default lorch)")
    parser.add_argument("--debye-max-atoms", type=int, default=1000,
                        help="also compute the Debye-sum S(Q) up to this many atoms")
    parser.add_argument("--crystals", default=",".join(crystal_names()),
                        help="reference crystals for SOAP similarity, comma separated")
    parser.add_argument("--no-soap", action="store_true", help="skip SOAP similarities")
    parser.add_argument("--cell-filter", choices=("frechet", "unit"), default="frechet",
                        help="ASE cell filter for relaxations (default frechet)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--p-step", type=float, default=1.0,
                        help="pressure grid step of the adjusted references in GPa (default 1)")


def run(args: argparse.Namespace) -> int:
    """Entry point; returns 0 on success, 2 on bad input (message on stderr)."""
    try:
        return _run(args)
    except ValueError as exc:
        from mtpjax.cli import error_exit

        return error_exit(exc)


def _run(args: argparse.Namespace) -> int:
    runs = [Path(r) for r in args.runs]
    labels = args.labels or _default_labels(runs)
    if len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {labels}")
    thermos = _per_run(args.thermo, len(runs), "thermo logs", broadcast=False)
    reference_calcs = _per_run(args.reference_calc, len(runs), "--reference-calc specs")
    relax_calcs = _per_run(args.relax_with, len(runs), "--relax-with specs")
    crystals = [canonical_name(c) for c in args.crystals.split(",") if c.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    context = _Context(args)
    results = {}
    for k, (path, label) in enumerate(zip(runs, labels, strict=True)):
        run_dir = out if len(runs) == 1 else out / label
        if path.suffix == ".json":
            results[label] = _load_result(path)
        else:
            specs = _RunSpecs(thermos[k], reference_calcs[k], relax_calcs[k] or reference_calcs[k])
            try:
                results[label] = analyse_run(path, label, specs, crystals, context, run_dir)
            except ValueError as exc:
                message = str(exc)
                raise ValueError(message if str(path) in message else f"{path}: {message}") from exc
    if len(runs) > 1:
        _write_comparison(results, out, args.markdown)
    else:
        print(format_table({labels[0]: results[labels[0]]["metrics"]}, args.markdown))
    return 0


def _per_run(values: list[str] | None, n_runs: int, what: str,
             broadcast: bool = True) -> list[str | None]:
    """One value per run: none given → None each; one value → shared (if ``broadcast``)."""
    if not values:
        return [None] * n_runs
    if len(values) == 1 and broadcast:
        values = values * n_runs
    if len(values) != n_runs:
        raise ValueError(f"{len(values)} {what} for {n_runs} runs")
    return [None if v.lower() == "none" else v for v in values]


@dataclass(frozen=True)
class _RunSpecs:
    """Per-run inputs: thermo log path and calculator specs (``None`` when absent)."""

    thermo: str | None
    reference_calc: str | None
    relax_with: str | None


class _Context:
    """Options and lazily built, shared calculators/references of one CLI call."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.options = AnalysisOptions(cutoff=args.cutoff, r_max=args.r_max, q_max=args.q_max,
                                       window=args.window, debye_max_atoms=args.debye_max_atoms)
        self._calcs: dict[str, object] = {}
        self._diamond: dict[str, float] = {}

    def calc(self, spec: str):
        if spec not in self._calcs:
            self._calcs[spec] = load_calculator(spec, self.args.species)
        return self._calcs[spec]

    def diamond_energy(self, spec: str) -> float:
        if spec not in self._diamond:
            self._diamond[spec] = diamond_energy_per_atom(
                self.calc(spec), self.args.species[0], cell_filter=self.args.cell_filter)
        return self._diamond[spec]


def analyse_run(path: Path, label: str, specs: _RunSpecs, crystals: list[str],
                context: _Context, out: Path) -> dict:
    """:func:`md.analysis.runs.analyse_run` with the calculators named by ``specs``."""
    args = context.args
    ref, relax = specs.reference_calc, specs.relax_with
    return run_lib.analyse_run(
        path, label, out, thermo=specs.thermo,
        reference_calc=context.calc(ref) if ref else None,
        diamond_energy=context.diamond_energy(ref) if ref else None,
        relax_calc=context.calc(relax) if relax else None,
        crystals=[] if args.no_soap else crystals, soap=not args.no_soap,
        options=context.options, every=args.every, cell_filter=args.cell_filter,
        p_step=args.p_step, symbol=args.species[0],
        names={"reference_calc": ref, "relax_with": relax})


def _write_comparison(results: dict, out: Path, print_markdown: bool = False) -> None:
    rows = run_lib.write_comparison(results, out)
    print(format_table(rows, markdown=print_markdown))


def _load_result(path: Path) -> dict:
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read analysis JSON ({exc})") from exc
    if not isinstance(result, dict) or "metrics" not in result or "curves" not in result:
        raise ValueError(f"{path}: not an analysis.json written by mtpjax analyze")
    return result


def _default_labels(paths: list[Path]) -> list[str]:
    """File stems (the folder name for ``analysis.json``), made unique with parent folders."""
    labels = [p.parent.name or "run" if p.name == "analysis.json" else p.stem for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{p.parent.name}-{label}" if p.parent.name else label
                  for p, label in zip(paths, labels, strict=True)]
    if len(set(labels)) < len(labels):
        labels = [f"{label}-{k}" for k, label in enumerate(labels)]
    return labels
