"""``mtpjax calc-efs POT IN.cfg OUT.cfg``: energies, forces, PlusStress (as ``mlp calc-efs``)."""

from __future__ import annotations

import sys
import time

from mtpjax.calculator import MTPEvaluator
from mtpjax.commands.evaluate_cfg import predict
from mtpjax.io.cfg import read_cfg, write_cfg


def add_arguments(parser) -> None:
    parser.add_argument("potential", help="trained .mtp file")
    parser.add_argument("input", help="input .cfg file")
    parser.add_argument("output", help="output .cfg file (12 decimals)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    evaluator = MTPEvaluator(args.potential, dtype=args.dtype)
    configs = read_cfg(args.input)
    start = time.perf_counter()
    results = predict(evaluator, configs, progress=not args.quiet)
    write_cfg(args.output, results)
    n_atoms = sum(len(c) for c in configs)
    print(
        f"wrote {len(results)} configurations ({n_atoms} atoms) to {args.output} "
        f"in {time.perf_counter() - start:.2f} s",
        file=sys.stderr,
    )
    return 0
