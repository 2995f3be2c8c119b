"""Publish a finished pipeline run's report under docs/: the report as the run wrote it, the
figures it links, its timing.json, and this script's provenance block on top.

    python benchmarks/publish_report.py runs/distill_medium docs/medium \\
        --title "Medium config (distill/configs/medium.toml): measured report"

Nothing in the report is edited except its figure links, which point at the copies next to
it (``../analysis/<protocol>/<fig>.png`` becomes ``analysis_<protocol>_<fig>.png``). The run's
own command, start time, total wall time and load averages are in its "Run time" section.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import provenance  # noqa: E402

LINK = re.compile(r"\]\(\.\./analysis/([^/)]+)/([^/)]+\.png)\)")


def publish(run_dir: Path, out: Path, title: str, rerender: bool = False) -> Path:
    """Copy RUN/report/{report.md, *.png, timing.json} and the analysis figures it links into
    `out` (emptied of earlier .md/.png/.json files first); the published report's path.

    rerender: instead of the run's report.md, render it again from the run's stage outputs,
    config.json and timing.json with the installed ``distill.report`` (what the report stage
    does), e.g. when the report code gained a section after the run; the header says so."""
    report_dir = run_dir / "report"
    report = report_dir / "report.md"
    if not report.is_file():
        raise SystemExit(f"publish_report: error: {report}: no report (has the run finished?)")
    if not (report_dir / "timing.json").is_file():
        raise SystemExit(f"publish_report: error: {report_dir / 'timing.json'}: no timing "
                         "record (the report stage of a `distill run` writes it)")
    head = provenance.header()
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.md"), *out.glob("*.png"), *out.glob("*.json")]:
        old.unlink()
    text = report.read_text()
    if rerender:
        from distill.report import render

        cfg = json.loads((run_dir / "config.json").read_text())
        timing = json.loads((report_dir / "timing.json").read_text())
        text = render(run_dir, cfg, report_dir, timing)
    for proto, fig in set(LINK.findall(text)):
        shutil.copyfile(run_dir / "analysis" / proto / fig, out / f"analysis_{proto}_{fig}")
    text = LINK.sub(lambda m: f"](analysis_{m.group(1)}_{m.group(2)})", text)
    for fig in report_dir.glob("*.png"):
        shutil.copyfile(fig, out / fig.name)
    shutil.copyfile(report_dir / "timing.json", out / "timing.json")
    timing = json.loads((report_dir / "timing.json").read_text())
    v = head["versions"]
    block = [
        f"# {title}",
        "",
        f"Published by `{head['command']}` at {head['started_utc']} from the run directory "
        f"`{run_dir}` (its run: `{timing.get('command', '?')}`, started "
        f"{timing.get('started_at', '?')}, finished {timing.get('finished_at', '?')}). "
        + ("Below is the run's report rendered again now from its stage outputs and its "
           "timing record by the current `distill.report` (`--rerender`)"
           if rerender else "Below is the run's own report")
        + ", unedited except for its figure links; its \"Run time\" section holds the run's "
        "wall time and load. Versions at publication: "
        + ", ".join(f"{k} {val}" for k, val in v.items()) + f"; host {head['host']['cpu_model']}"
        f", {head['host']['cpus']} CPUs, load {head['load_before']}.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(block) + "\n" + text.replace("# Indirect learning report", "##"
                                                           " Indirect learning report", 1))
    (out / "provenance.json").write_text(json.dumps({**head, "run_dir": str(run_dir),
                                                     "run_timing": timing}, indent=1) + "\n")
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a finished `mtpjax distill run` directory")
    p.add_argument("out", type=Path, help="folder to publish into, e.g. docs/medium")
    p.add_argument("--title", default="Indirect learning: measured report")
    p.add_argument("--rerender", action="store_true",
                   help="render the report again from the run's outputs with the current code")
    args = p.parse_args(argv)
    print(publish(args.run_dir, args.out, args.title, args.rerender))


if __name__ == "__main__":
    main()
