"""Fit the demo GAP teacher on data/si_mlearn and report its accuracy on the 25 test cells.

    .venv/bin/python scripts/fit_teacher_gap.py                # SPEC §1 settings, 800 sparse
    .venv/bin/python scripts/fit_teacher_gap.py --quick        # 200 sparse points (demo, CI)
    .venv/bin/python scripts/fit_teacher_gap.py --out runs/gap --sparse 400 --force

Writes OUT/gap.xml (+ sparse-point files), OUT/fit_stamp.json, OUT/accuracy.{json,txt}.
Skipped when OUT already holds a fit of the same data and settings (use --force to refit).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.gap_fit import (  # noqa: E402
    MODEL_NAME,
    REPORT_TXT,
    GapSettings,
    accuracy,
    fit_gap,
    write_report,
)

QUICK_SPARSE = 200


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=Path, default=ROOT / "data/si_mlearn/train.xyz")
    p.add_argument("--test", type=Path, default=ROOT / "data/si_mlearn/test.xyz")
    p.add_argument("--out", type=Path, default=None, help="default runs/teacher_gap[_quick]")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_SPARSE} SOAP sparse points")
    p.add_argument("--sparse", type=int, default=None, help="SOAP sparse points (default 800)")
    p.add_argument("--threads", type=int, default=1, help="OMP threads for gap_fit")
    p.add_argument("--force", action="store_true", help="refit even when up to date")
    args = p.parse_args(argv)

    sparse = args.sparse or (QUICK_SPARSE if args.quick else GapSettings.soap_sparse)
    settings = dataclasses.replace(GapSettings(), soap_sparse=sparse)
    out = args.out or ROOT / ("runs/teacher_gap_quick" if args.quick else "runs/teacher_gap")
    stamp = fit_gap(args.train, out, settings, threads=args.threads, force=args.force)
    if stamp["cached"] and (out / REPORT_TXT).exists():
        print(f"up to date: {out / MODEL_NAME} (fit took {stamp['fit_seconds']} s)")
        print((out / REPORT_TXT).read_text(), end="")
        return 0
    print(write_report(out, stamp, accuracy(out / MODEL_NAME, args.test)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
