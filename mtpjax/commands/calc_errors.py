"""``mtpjax calc-errors POT DATA.cfg``: errors against the labels in DATA (as ``mlp``)."""

from __future__ import annotations

import json

from mtpjax.calculator import MTPEvaluator
from mtpjax.commands.evaluate_cfg import convert_plus_stress, predict
from mtpjax.errors_report import error_report, format_report
from mtpjax.io.cfg import read_cfg


def add_arguments(parser) -> None:
    parser.add_argument("potential", help="trained .mtp file")
    parser.add_argument("data", help=".cfg file with reference energies/forces/stresses")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    from mtpjax.units import STRESS_UNITS

    parser.add_argument("--stress-unit", choices=list(STRESS_UNITS), default="eV/A3",
                        help="PlusStress of DATA is in UNIT·Å³ (default eV/A3: PlusStress in "
                             "eV, mlp's convention; see docs/units.md)")


def run(args) -> int:
    evaluator = MTPEvaluator(args.potential, dtype=args.dtype)
    reference = convert_plus_stress(read_cfg(args.data), args.stress_unit)
    predicted = predict(evaluator, reference, progress=not args.quiet)
    report = error_report(predicted, reference)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0
