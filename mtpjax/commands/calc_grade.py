"""``mtpjax calc-grade POT TRAIN.cfg IN.cfg OUT.cfg``: MaxVol extrapolation grades (as ``mlp``).

Selects the active set from TRAIN.cfg (``--init-threshold``, ``--select-threshold``,
``--swap-threshold``, mlp's defaults), grades every configuration of IN.cfg and writes it to
OUT.cfg with ``Feature MV_grade`` (6 decimals, as ``mlp calc-grade``). ``--als-filename``
saves the active-set state: a ``.als`` name gets mlp's binary layout (readable by ``mlp``,
e.g. LAMMPS ``select:load-state``), any other name an mtpjax ``.npz`` archive; both are
reusable with ``--load-als``, ``mtpjax md`` ``[grade]`` and :class:`mtpjax.grade.Grader`.
"""

from __future__ import annotations

import sys
import time

from mtpjax import grade as G
from mtpjax.io.cfg import read_cfg, write_cfg


def add_threshold_arguments(parser) -> None:
    parser.add_argument("--init-threshold", type=float, default=G.INIT_THRESHOLD,
                        help="A is initialised to init-threshold × identity (default 1e-5)")
    parser.add_argument("--select-threshold", type=float, default=G.SELECT_THRESHOLD,
                        help="a selection run starts when the largest grade exceeds this "
                             "(default 1.1)")
    parser.add_argument("--swap-threshold", type=float, default=G.SWAP_THRESHOLD,
                        help="swaps continue while the largest grade exceeds this "
                             "(default 1.0000001)")
    parser.add_argument("--weighting", choices=G.WEIGHTINGS, default="vibrations",
                        help="row weighting by atom count (default vibrations: E/N)")
    parser.add_argument("--als-filename", "--mvs-filename", metavar="PATH",
                        help="save the active-set state here (mlp's binary layout for a .als "
                             "name, else an mtpjax .npz archive)")


def add_arguments(parser) -> None:
    parser.add_argument("potential", help="trained .mtp file")
    parser.add_argument("train", help="training set .cfg (the active set is selected from it)")
    parser.add_argument("input", help=".cfg file to grade")
    parser.add_argument("output", help="output .cfg with Feature MV_grade")
    add_threshold_arguments(parser)
    parser.add_argument("--load-als", metavar="PATH",
                        help="use a saved active-set state (mtpjax's, or an mlp .als) instead "
                             "of selecting from TRAIN (pass - as TRAIN)")


def check_thresholds(args) -> None:
    from mtpjax.errors import InputError

    if not args.init_threshold > 0:
        raise InputError(f"--init-threshold must be > 0, got {args.init_threshold}")
    for name in ("select_threshold", "swap_threshold"):
        if not getattr(args, name) > 1.0:
            raise InputError(f"--{name.replace('_', '-')} must be > 1, got {getattr(args, name)}")


def run(args) -> int:
    check_thresholds(args)
    start = time.perf_counter()
    if args.load_als:
        grader = G.Grader.load(args.load_als)
    else:
        train = read_cfg(args.train)
        grader = G.training_grader(args.potential, train, init_threshold=args.init_threshold,
                                   select_threshold=args.select_threshold,
                                   swap_threshold=args.swap_threshold,
                                   weighting=args.weighting)
    if args.als_filename:
        grader.save(args.als_filename)
    configs = read_cfg(args.input)
    grades = grader.grade(configs)
    for cfg, g in zip(configs, grades, strict=True):
        if len(cfg):
            cfg.features["MV_grade"] = G.format_grade(float(g))
    write_cfg(args.output, configs)
    print(f"graded {len(configs)} configurations (active set {grader.maxvol.inited_rows()}/"
          f"{grader.maxvol.n} rows, max grade {G.format_grade(float(max(grades, default=0)))}) "
          f"-> {args.output} in {time.perf_counter() - start:.2f} s", file=sys.stderr)
    return 0
