"""The report stage: RUN/report/report.md (+ PNG figures) from the stage outputs only.

Every number in the report is read from a stage's stamp or JSON output and printed with the
formats below (`fmt_e`, `fmt_f`, `fmt_cost`), so a test can recompute each cell from the stage
outputs. The config that produced the run is appended verbatim (as validated JSON).

The "Run time" section is the pipeline's own record of the invocation that wrote the report
(:func:`distill.pipeline.run`): total wall time and per-stage wall/CPU seconds, stages skipped
as up to date marked "cached" with the time of the run that made them. When the invocation ends,
:func:`write_timing` puts the final record (the report stage and the total included) into the
section and into ``timing.json`` next to the report.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from distill.stages.cache import read_json, read_stamp, write_json, write_text

TIMING_BEGIN = "<!-- run-time: written by distill.pipeline -->"
TIMING_END = "<!-- /run-time -->"

TEACHER_SETS = ("rss.xyz:M1", "compression.xyz:M1", "dft_test.xyz:M1")
ALL_TARGETS = TEACHER_SETS + ("dft_test_m0.xyz:M0",)
SET_NAMES = {
    "rss.xyz:M1": "RSS vs M1",
    "compression.xyz:M1": "compression vs M1",
    "dft_test.xyz:M1": "DFT cells vs M1",
    "dft_test_m0.xyz:M0": "DFT cells vs M0",
}


def fmt_e(x: float) -> str:
    """Energy MAE, meV/atom."""
    return f"{x:.2f}"


def fmt_f(x: float) -> str:
    """Force MAE, eV/Å."""
    return f"{x:.4f}"


def _fit_iterations(v: dict) -> str:
    """Iterations a fit ran, why it stopped and which iteration it kept, e.g. "14 (converged)"
    or "37 (patience; best 27)"; older summaries carry only the count."""
    if "stop_reason" not in v:
        return str(v["iterations"])
    kept = f"; best {v['best_iter']}" if v["best_iter"] != v["iterations"] else ""
    return f"{v['iterations']} ({v['stop_reason']}{kept})"


def fmt_cost(x: float) -> str:
    """Atom-steps per second / speed-up factor."""
    return f"{x:.3g}"


def relative_cost(cost: dict, model: str) -> float:
    """Cost per MD step of ``model`` relative to the teacher's (Fig. 3 x-axis): teacher MD
    atom-steps/s over the model's, both measured on the same cell (evaluate/cost.json)."""
    return cost["teacher"]["atom_steps_per_s"] / cost[model]["atom_steps_per_s"]


def models(errors: dict) -> list[str]:
    return [m for m in errors if m != "teacher"]


def finding(errors: dict, levels: list[int]) -> list[dict]:
    """Per level and teacher-labelled set: is M''_L's MAE ≤ M'_L's (energy and forces)?"""
    rows = []
    for level in levels:
        d, i = errors.get(f"M'_{level}", {}), errors.get(f"M''_{level}", {})
        for target in TEACHER_SETS:
            if target not in d or target not in i:
                continue
            rows.append(
                {
                    "level": level,
                    "set": target,
                    "energy": i[target]["energy_mae_meV_per_atom"]
                    <= d[target]["energy_mae_meV_per_atom"],
                    "force": i[target]["force_mae_eV_per_A"] <= d[target]["force_mae_eV_per_A"],
                }
            )
    return rows


def figure_error_vs_cost(errors: dict, cost: dict, path: Path) -> None:
    """The paper's Fig. 3: MAE vs the teacher against cost per MD step relative to the teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for target, marker in (("rss.xyz:M1", "o"), ("compression.xyz:M1", "s")):
        for kind, color in (("M'", "tab:blue"), ("M''", "tab:red")):
            pts = [
                (relative_cost(cost, m), errors[m][target])
                for m in models(errors)
                if m.split("_")[0] == kind and target in errors[m] and m in cost
            ]
            if not pts:
                continue
            x = [p[0] for p in pts]
            for ax, key in zip(
                axes, ("energy_mae_meV_per_atom", "force_mae_eV_per_A"), strict=True
            ):
                ax.plot(
                    x,
                    [p[1][key] for p in pts],
                    marker=marker,
                    color=color,
                    ls="-" if marker == "o" else "--",
                    label=f"{kind} {SET_NAMES[target]}",
                )
    for ax, label in zip(
        axes, ("energy MAE vs teacher (meV/atom)", "force MAE vs teacher (eV/Å)"), strict=True
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("cost per MD step relative to the teacher (MD atom-steps/s ratio)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def fmt_duration(seconds: float) -> str:
    """Wall time as ``1234.5 s (20 min 34 s)``."""
    m, s = divmod(round(seconds), 60)
    return f"{seconds:.1f} s ({m} min {s} s)" if m else f"{seconds:.1f} s"


def timing_section(timing: dict | None, run_dir: Path) -> str:
    """The "Run time" section from the pipeline's timing record (see module docstring)."""
    lines = [TIMING_BEGIN, "## Run time", ""]
    if timing is None:  # rendered outside a pipeline run: the stamps' times only
        stages = {}
        for name in ("teacher", "sample", "labels", "fits", "tests", "evaluate", "md",
                     "analysis"):
            if (run_dir / name / "stamp.json").is_file():
                s = read_stamp(run_dir / name)
                stages[name] = {"status": "stamp", "wall_s": s["seconds"],
                                "cpu_s": s["summary"].get("cpu_seconds"),
                                "load_average_at_end": s["summary"].get("load_average"),
                                "finished_at": s.get("finished_at")}
        timing = {"stages": stages}
    total = timing.get("total_wall_s")
    ran = [v for v in timing["stages"].values() if v["status"] == "ran"]
    cached = [n for n, v in timing["stages"].items() if v["status"] == "cached"]
    if total is not None:
        lines.append(f"This run (`{timing.get('command', '')}`, started {timing['started_at']}, "
                     f"{timing.get('cpus')} CPUs on `{timing.get('host')}`): **total wall time "
                     f"{fmt_duration(total)}** from the start of `distill run` to the end of "
                     f"the report stage; load average {timing['load_average_at_start'][0]:.1f} "
                     f"at start, {timing['load_average_at_end'][0]:.1f} at end.")
    elif "started_at" in timing:
        lines.append(f"This run started {timing['started_at']} (provisional: the total is "
                     f"written when the report stage ends).")
    if cached:
        lines.append(f"Stages {', '.join(cached)} were up to date (cached): the total does not "
                     f"include them; their times are those of the run that made them.")
    walls = [v["wall_s"] for v in timing["stages"].values() if v.get("wall_s") is not None]
    lines += [
        "",
        "Per stage: wall and CPU seconds (CPU: this process and its finished children), load "
        "average at its end; recorded in `timing.json` next to this report.",
        "",
        _table(
            ["stage", "status", "wall s", "CPU s", "load", "finished (UTC)"],
            [[n, v["status"], _num(v.get("wall_s")), _num(v.get("cpu_s")),
              _num(v.get("load_average_at_end")), str(v.get("finished_at") or "-")]
             for n, v in timing["stages"].items()],
        ),
        "",
        f"Sum of stage wall times: {fmt_duration(sum(walls))}"
        + (f" ({len(ran)} stage(s) run now)." if "started_at" in timing else "."),
        *[f"Stage {n} ran in a worker process beside {', '.join(v['alongside'])}: its wall "
          f"time overlaps theirs (the total counts it once)." for n, v in
          timing["stages"].items() if v.get("background") and v.get("alongside")],
        TIMING_END,
    ]
    return "\n".join(lines)


def _num(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_timing(folder: Path, timing: dict) -> None:
    """Write ``timing.json`` and the final "Run time" section into ``report.md`` in `folder`."""
    folder = Path(folder)
    write_json(folder / "timing.json", timing)
    report = folder / "report.md"
    if report.is_file():
        text = report.read_text()
        head, sep, rest = text.partition(TIMING_BEGIN)
        if sep:
            tail = rest.partition(TIMING_END)[2]
            write_text(report, head + timing_section(timing, folder.parent) + tail)


def render(run_dir: Path, cfg: dict, out: Path, timing: dict | None = None) -> str:
    """The Markdown report (figures written next to it into `out`)."""
    run_dir = Path(run_dir)
    st = {
        name: read_stamp(run_dir / name)
        for name in ("teacher", "sample", "labels", "fits", "tests", "evaluate", "md", "analysis")
        if (run_dir / name / "stamp.json").is_file()
    }
    parts = [
        "# Indirect learning report",
        "",
        f"Run directory `{run_dir}`; written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f"; load average at report time {os.getloadavg()[0]:.1f}. Config: see the end.",
        "",
    ]
    parts += [timing_section(timing, run_dir), ""]
    if "teacher" in st:
        t = st["teacher"]["summary"]
        parts += [
            "## Teacher (M1)",
            "",
            f"kind `{t['kind']}`, model `{t['model']}`, teacher id `{t['teacher_id']}`.",
        ]
        if "accuracy_vs_dft" in t:
            a = t["accuracy_vs_dft"]
            parts += [
                f"GAP fit {t['gap_fit_seconds']:.1f} s; on the DFT test cells: energy MAE "
                f"{fmt_e(a['energy_mae_mev_per_atom'])} meV/atom, force RMSE "
                f"{fmt_f(a['force_rmse_ev_per_a'])} eV/Å."
            ]
        parts.append("")
    if "labels" in st:
        lab, smp = st["labels"]["summary"], st["sample"]["summary"]
        parts += [
            "## Training data",
            "",
            f"D1: {smp['n_snapshots']} snapshots ({smp['n_atoms']} atoms) of teacher MD. "
            f"M' trains on {lab['direct']['structures']} D0 cells "
            f"({lab['direct']['atoms']} atoms, DFT labels); M'' on "
            f"{lab['indirect']['structures']} cells ({lab['indirect']['atoms']} atoms: D0 "
            f"relabelled + D1). Teacher labels failed: D0 {lab['d0']['failed']}, "
            f"D1 {lab['d1']['failed']}.",
            "",
            *teacher_calls_lines(smp, lab),
        ]
    if "fits" in st:
        rows = [
            [
                k,
                str(v["level"]),
                str(v["train_atoms"]),
                _fit_iterations(v),
                f"{v['seconds']:.1f}",
                fmt_e(v["train_energy_mae_meV_per_atom"]),
                f"{v['train_force_rmse_eV_per_A']:.4f}",
                ("–" if not math.isfinite(v.get("valid_energy_mae_meV_per_atom", math.nan))
                 else fmt_e(v["valid_energy_mae_meV_per_atom"])),
            ]
            for k, v in st["fits"]["summary"].items()
            if isinstance(v, dict)
        ]
        parts += [
            "## Fits",
            "",
            _table(
                [
                    "fit",
                    "level",
                    "train atoms",
                    "iterations",
                    "s",
                    "train E MAE (meV/atom)",
                    "train F RMSE (eV/Å)",
                    "valid E MAE (meV/atom)",
                ],
                rows,
            ),
            "",
            "Iterations: those run, and why the fit stopped (converged: the optimiser's own "
            "convergence test; patience: no improvement of the validation loss; max_iter: the "
            "cap). The coefficients kept are the best on the validation split of the training "
            "configurations, or on the training loss without one; the errors are theirs.",
            "",
        ]
    if "tests" in st:
        sets = st["tests"]["summary"]["sets"]
        parts += [
            "## Test sets",
            "",
            _table(
                ["set", "structures", "atoms"],
                [[k, str(v["structures"]), str(v["atoms"])] for k, v in sets.items()],
            ),
            "",
        ]
    if "evaluate" in st:
        parts += _errors_section(run_dir, cfg, out)
    if "md" in st:
        parts += _md_section(run_dir, st)
    parts += ["## Config", "", "```json", json.dumps(cfg, indent=1), "```", ""]
    return "\n".join(parts)


def teacher_calls_lines(smp: dict, lab: dict) -> list[str]:
    """Teacher calls of the training data: D1 selection mode, labels (D0 relabels, D1 labels
    in the sample and labels stages) and the teacher's MD steps."""
    g = smp.get("grading")
    if g is None:  # a sample stage from before grade-driven selection
        return []
    d1_labels = lab["d1"]["labelled"] + g.get("teacher_labels_in_sample", 0)
    rounds = len(g.get("rounds", []))
    if g["selection"] == "uniform":
        how = "every snapshot labelled (uniform)"
    elif g.get("proposer") == "student":
        how = (f"grade-driven: {g['selected']} configurations of the student's own MD selected "
               f"by MaxVol γ ({rounds} round(s), no teacher MD)")
    else:
        how = (f"grade-driven: {g['selected']} of {g['candidates']} teacher snapshots and "
               f"student-MD configurations selected by MaxVol γ ({rounds} round(s))")
    return [f"Teacher calls: D1 labels {d1_labels} ({how}), D0 relabels "
            f"{lab['d0']['labelled']}, total labels {d1_labels + lab['d0']['labelled']}; "
            f"teacher MD steps {smp.get('teacher_md_steps', 'n/a')} (one force call each, "
            "plus one per barostat rescaling).", ""]


def _errors_section(run_dir: Path, cfg: dict, out: Path) -> list[str]:
    errors = read_json(run_dir / "evaluate" / "errors.json")
    cost = read_json(run_dir / "evaluate" / "cost.json")
    header = (
        ["model"]
        + [f"{SET_NAMES[t]} E / F" for t in ALL_TARGETS]
        + ["MD atom-steps/s", "speed-up vs teacher"]
    )
    rows = []
    for m in models(errors):
        cells = [m]
        for t in ALL_TARGETS:
            e = errors[m].get(t)
            cells.append(
                f"{fmt_e(e['energy_mae_meV_per_atom'])} / {fmt_f(e['force_mae_eV_per_A'])}"
                if e
                else "-"
            )
        c = cost.get(m, {})
        cells += (
            [fmt_cost(c["atom_steps_per_s"]), fmt_cost(c["speedup_vs_teacher"])] if c
            else ["-", "-"]
        )
        rows.append(cells)
    t0 = errors["teacher"]["dft_test_m0.xyz:M0"]
    teacher = cost["teacher"]
    rows.append(
        [
            "teacher (M1)",
            "-",
            "-",
            "-",
            f"{fmt_e(t0['energy_mae_meV_per_atom'])} / {fmt_f(t0['force_mae_eV_per_A'])}",
            fmt_cost(teacher["atom_steps_per_s"]),
            "1",
        ]
    )
    figure_error_vs_cost(errors, cost, out / "fig3_error_vs_cost.png")
    target = cost.get("target_speedup", 30.0)
    speed = [m for m in models(errors) if m in cost]
    met = [m for m in speed if cost[m]["speedup_vs_teacher"] >= target]
    lines = [
        "## Errors and cost (Fig. 3)",
        "",
        "Energy MAE in meV/atom / force MAE in eV/Å (Cartesian components). Cost as the paper "
        f"measures it: MD throughput on the same {cost['n_atoms']}-atom cell ({cost['cell']}) — "
        "each student with the MD engine after a compiling warm-up "
        f"({cost[speed[0]]['steps'] if speed else '-'} timed steps), the teacher with ASE MD, "
        f"{teacher['steps']} step(s) timed after 1 warm-up step ({teacher['wall_s']:.1f} s; "
        "a short run, its rate taken as the teacher's). Speed-up = student atom-steps/s / "
        "teacher atom-steps/s; Fig. 3's cost axis is its inverse.",
        "",
        _table(header, rows),
        "",
        f"Target: student MD ≥ {target:g}× the teacher's atom-steps/s at {cost['n_atoms']} "
        f"atoms — met by {len(met)} of {len(speed)} students"
        + (f" ({', '.join(met)})" if met else "") + ".",
        "",
        "![error vs cost](fig3_error_vs_cost.png)",
        "",
        "### Is M''_L's error against the teacher ≤ M'_L's? (measured)",
        "",
    ]
    rows = finding(errors, cfg["fit"]["levels"])
    lines.append(
        _table(
            ["level", "set", "energy: M'' ≤ M'", "forces: M'' ≤ M'"],
            [
                [
                    str(r["level"]),
                    SET_NAMES[r["set"]],
                    "yes" if r["energy"] else "no",
                    "yes" if r["force"] else "no",
                ]
                for r in rows
            ],
        )
    )
    for level in cfg["fit"]["levels"]:
        mine = [r for r in rows if r["level"] == level]
        both = all(r["energy"] and r["force"] for r in mine)
        lines.append(
            f"\nLevel {level}: M''_{level} ≤ M'_{level} on "
            f"{sum(r['energy'] and r['force'] for r in mine)} of {len(mine)} teacher-"
            f"labelled sets (energy and forces) — "
            f"{'the paper’s finding holds' if both else 'not on every set'}."
        )
    return lines + [""]


def _md_section(run_dir: Path, st: dict) -> list[str]:
    from md.analysis.summary import format_table

    runs = st["md"]["summary"]["runs"]
    rows = [
        [
            name,
            r["status"],
            r.get("reason", "") or "",
            str(r.get("n_atoms", "-")),
            str(r.get("steps", "-")),
            fmt_cost(r["atom_steps_per_s"]) if "atom_steps_per_s" in r else "-",
        ]
        for name, r in runs.items()
    ]
    lines = [
        "## Physical validation (MD)",
        "",
        f"Level {st['md']['summary']['level']}. Failed runs are marked, not hidden.",
        "",
        _table(["run", "status", "reason", "atoms", "steps", "atom-steps/s"], rows),
        "",
    ]
    if "analysis" in st:
        for proto, res in st["analysis"]["summary"].items():
            if not isinstance(res, dict):
                continue
            lines += [f"### {proto}", ""]
            if "table" not in res:
                lines += [res.get("status", "no analysis"), ""]
                continue
            lines += [format_table(res["table"], markdown=True), ""]
            if res.get("quench"):
                rate = res.get("cooling_rate_K_per_s")
                lines += [("Melt-quench at a reduced rate: fastest cooling "
                           f"{rate:.2g} K/s (paper: 1e11 K/s); " if rate else "Melt-quench; ")
                          + "Table-I metrics of the last frame relaxed at 0 GPa by each run's "
                          "own model (ΔE above that model's relaxed diamond).", ""]
                lines += replica_section(res)
                lines += table_i_section(res["table"], res.get("spread"))
            for crystal, runs_ in res.get("similarity", {}).items():
                lines += similarity_section(crystal, runs_)
            for fig in ("replicas.png", "sq.png", "bond_angles.png", "pv.png",
                        "similarity_pressure.png"):
                if (run_dir / "analysis" / proto / fig).is_file():
                    lines.append(f"![{proto} {fig}](../analysis/{proto}/{fig})")
            lines.append("")
    return lines


def _columns():
    """Table-I columns compared with the teacher: (metrics key, header, format)."""
    from md.analysis.summary import TABLE_COLUMNS

    return TABLE_COLUMNS


def replica_section(res: dict) -> list[str]:
    """With replicas: how many runs each Table-I row averages, their seeds, and the sample
    standard deviation across them (same units as the table)."""
    from md.analysis.summary import format_table

    spread = res.get("spread")
    if not spread:
        return []
    counts = ", ".join(f"{label} {row.get('n_replicas', 1)} (seeds "
                       f"{', '.join(str(s) for s in res.get('seeds', {}).get(label, []))})"
                       for label, row in res["table"].items())
    return [f"Each row is the mean over independent runs (replicas: {counts}); figures show "
            "each model's first run. Sample standard deviation across the runs:", "",
            format_table(spread, markdown=True), ""]


def table_i_section(table: dict, spread: dict | None = None) -> list[str]:
    """The paper's Table I beside ours, and each student's difference to our teacher beside
    the paper's differences to GAP-18 (its teacher); with replicas (``spread``: sample
    standard deviations per model) whether each verdict is resolved by them."""
    from distill.paper_values import TABLE_I, TABLE_I_SOURCE
    from md.analysis.summary import format_table

    lines = [f"Paper ({TABLE_I_SOURCE}):", "", format_table(TABLE_I, markdown=True), ""]
    cols = _columns()
    rows = []
    teacher = table.get("teacher")

    def diff(row, ref, key, fmt):
        a, b = row.get(key), ref.get(key)
        return "-" if a is None or b is None else fmt.format(abs(a - b))

    if teacher:
        for label, row in table.items():
            if label != "teacher":
                rows.append([f"{label} − teacher (ours)"]
                            + [diff(row, teacher, k, f) for k, _, f in cols])
    for label in ("M''_16", "M'_16", "M''_20", "M'_20"):
        rows.append([f"{label} − GAP-18 (paper)"]
                    + [diff(TABLE_I[label], TABLE_I["GAP-18"], k, f) for k, _, f in cols])
    lines += ["Absolute differences to the teacher:", "",
              _table(["difference"] + [h for _, h, _ in cols], rows), ""]
    if teacher:
        lines += table_i_verdict(table)
        if spread:
            lines += table_i_resolution(table, spread)
    return lines


def difference_standard_error(table: dict, spread: dict, label: str, key: str) -> float | None:
    """Standard error (same units) of the difference of the replica means of ``label`` and
    the teacher for one metric, √(s²/n + s_t²/n_t); None without a spread for both."""
    a, b = spread.get(label, {}).get(key), spread.get("teacher", {}).get(key)
    if a is None or b is None:
        return None
    n, nt = table[label].get("n_replicas", 1), table["teacher"].get("n_replicas", 1)
    return math.sqrt(a * a / n + b * b / nt)


def table_i_resolution(table: dict, spread: dict) -> list[str]:
    """Per student and metric: the difference to the teacher's mean ± its standard error,
    and whether the replicas resolve the verdict (the tolerance lies outside |Δ| ± 2 SE)."""
    from distill.paper_values import TABLE_I_TOLERANCE

    heads = {k: (h, f) for k, h, f in _columns()}
    keys = list(TABLE_I_TOLERANCE)
    rows = []
    for label, row in table.items():
        if label == "teacher":
            continue
        cells = []
        for key in keys:
            a, b = row.get(key), table["teacher"].get(key)
            se = difference_standard_error(table, spread, label, key)
            if a is None or b is None or se is None:
                cells.append("-")
                continue
            d, tol, fmt = abs(a - b), TABLE_I_TOLERANCE[key], heads[key][1]
            resolved = d + 2 * se <= tol or d - 2 * se > tol
            cells.append(f"{fmt.format(d)} ± {fmt.format(se)} "
                         f"({'resolved' if resolved else 'unresolved'})")
        rows.append([label, *cells])
    return ["|student − teacher| of the means ± its standard error; *resolved*: the "
            "tolerance lies outside ±2 standard errors (the verdict above holds at about "
            "95 % confidence); *unresolved*: more replicas are needed to tell:", "",
            _table(["model", *(heads[k][0] for k in keys)], rows), ""]


def within_tolerance(row: dict, teacher: dict) -> dict[str, bool | None]:
    """{metric: |student − teacher| ≤ TABLE_I_TOLERANCE[metric]} (None where a value is
    missing) for the metrics that have a tolerance."""
    from distill.paper_values import TABLE_I_TOLERANCE

    out = {}
    for key, tol in TABLE_I_TOLERANCE.items():
        a, b = row.get(key), teacher.get(key)
        ok = a is not None and b is not None and math.isfinite(a) and math.isfinite(b)
        out[key] = bool(abs(a - b) <= tol + 1e-9) if ok else None  # 1e-9: float rounding
    return out


def table_i_verdict(table: dict) -> list[str]:
    """Per student: is each Table-I metric within TABLE_I_TOLERANCE of our teacher's, and are
    all of them (the paper's M''_16 reproduces GAP-18 that closely)."""
    from distill.paper_values import TABLE_I_TOLERANCE

    heads = {k: h for k, h, _ in _columns()}
    keys = list(TABLE_I_TOLERANCE)
    rows = []
    for label, row in table.items():
        if label == "teacher":
            continue
        ok = within_tolerance(row, table["teacher"])
        cells = ["-" if ok[k] is None else ("yes" if ok[k] else "no") for k in keys]
        rows.append([label, *cells, "yes" if all(ok[k] for k in keys) else "no"])
    tol = ", ".join(f"{heads[k]} {TABLE_I_TOLERANCE[k]:g}" for k in keys)
    return [f"Within the paper's spread of the teacher ({tol}; issue 18's target for "
            "M''):", "", _table(["model", *(heads[k] for k in keys), "all"], rows), ""]


def similarity_section(crystal: str, runs: dict) -> list[str]:
    """Mean SOAP similarity to ``crystal`` per pressure window (Fig. 4's measure), and each
    student's difference to the teacher."""
    windows = next(iter(runs.values()))
    header = ["run"] + [f"{w['p_lo']:g}–{w['p_hi']:g} GPa" for w in windows]

    def cell(w):
        return "-" if w["mean"] is None else f"{w['mean']:.3f} ({w['n']})"

    rows = [[label] + [cell(w) for w in ws] for label, ws in runs.items()]
    teacher = runs.get("teacher")
    if teacher:
        for label, ws in runs.items():
            if label == "teacher":
                continue
            rows.append([f"{label} − teacher"] + [
                "-" if a["mean"] is None or b["mean"] is None else f"{a['mean'] - b['mean']:+.3f}"
                for a, b in zip(ws, teacher, strict=True)])
    return [f"Mean SOAP similarity to pressure-adjusted {crystal} Si along the run (frames in "
            "each pressure window in brackets; Fig. 4's quality measure):", "",
            _table(header, rows), ""]


def report_stage(ctx) -> dict:
    """Write RUN/report/report.md; the summary names it."""
    text = render(ctx.run_dir, ctx.cfg, ctx.folder, getattr(ctx, "timing", None))
    write_text(ctx.folder / "report.md", text)
    ctx.log(f"wrote {ctx.folder / 'report.md'}")
    return {"report": str(ctx.folder / "report.md")}
