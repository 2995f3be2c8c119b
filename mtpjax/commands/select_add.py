"""``mtpjax select-add POT TRAIN.cfg NEW.cfg DIFF.cfg``: configurations to add (as ``mlp``).

The active set is selected from TRAIN.cfg (select and swap thresholds both
``--swap-threshold``, as mlp does), then NEW.cfg is offered in one MaxVol run
(``--select-threshold``, ``--swap-threshold``, ``--selection-limit`` swaps at most). DIFF.cfg
receives the configurations of NEW.cfg that ended in the active set, each once, in the order
of the active-set rows (mlp's order). ``--selected-filename`` writes the configuration of
every active-set row; ``--als-filename`` saves the state (mlp's ``.als`` layout for a ``.als``
name, else mtpjax ``.npz``).
"""

from __future__ import annotations

import sys
import time

from mtpjax import grade as G
from mtpjax.commands.calc_grade import add_threshold_arguments, check_thresholds
from mtpjax.io.cfg import read_cfg, write_cfg


def add_arguments(parser) -> None:
    parser.add_argument("potential", help="trained .mtp file")
    parser.add_argument("train", help="current training set .cfg")
    parser.add_argument("new", help="candidate configurations .cfg")
    parser.add_argument("diff", help="output .cfg: the candidates to add, in mlp's order")
    add_threshold_arguments(parser)
    parser.add_argument("--selection-limit", type=int, default=0,
                        help="at most this many swaps for NEW (default 0: no limit)")
    parser.add_argument("--selected-filename", metavar="PATH",
                        help="also write the configuration of every active-set row")


def run(args) -> int:
    check_thresholds(args)
    if args.selection_limit < 0:
        from mtpjax.errors import InputError

        raise InputError(f"--selection-limit must be ≥ 0, got {args.selection_limit}")
    start = time.perf_counter()
    train = read_cfg(args.train)
    new = read_cfg(args.new)
    grader = G.Grader(args.potential, weighting=args.weighting,
                      init_threshold=args.init_threshold)
    grader.select(train, args.swap_threshold, args.swap_threshold, tag="train")
    grader.select(new, args.select_threshold, args.swap_threshold,
                  swap_limit=args.selection_limit or None, tag="new")
    chosen = grader.selected("new")
    write_cfg(args.diff, [new[k] for k in chosen])
    if args.selected_filename:
        write_cfg(args.selected_filename,
                  [grader.active_configs[lab] for lab in grader.maxvol.labels if lab is not None])
    if args.als_filename:
        grader.save(args.als_filename)
    print(f"{len(train)} training and {len(new)} new configurations: {len(chosen)} to add "
          f"-> {args.diff} in {time.perf_counter() - start:.2f} s", file=sys.stderr)
    return 0
