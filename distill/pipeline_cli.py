"""``mtpjax distill run CONFIG.toml [--run-dir DIR]``: the indirect-learning pipeline.

Also ``mtpjax distill check CONFIG.toml`` (validate only). The config is validated completely
before anything is computed (exit 2 with the key named); see docs/pipeline.md.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("run", "run (or resume) every stage that is not up to date"),
        ("check", "validate the config and stop"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("config", metavar="CONFIG.toml")
        p.add_argument("--run-dir", default=None, help="override run.dir")
        if name == "run":
            p.add_argument(
                "--redo",
                nargs="+",
                default=None,
                metavar="STAGE",
                help="run these stages even when up to date",
            )
            p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from distill.stages.config import load
    from mtpjax.errors import InputError

    try:
        cfg = load(args.config, args.run_dir)
        if args.action == "check":
            print(
                f"{args.config}: OK — run directory {cfg['run']['dir']}, stages "
                f"{', '.join(cfg['run']['stages'])}, levels {cfg['fit']['levels']}"
            )
            return 0
        from distill.pipeline import run as run_pipeline

        results = run_pipeline(
            args.config, args.run_dir, progress=not args.no_progress, only=args.redo
        )
    except InputError as exc:  # a bad config, or bad input met while running (an address)
        from mtpjax.cli import error_exit

        return error_exit(exc)
    done = [k for k, v in results.items() if v["status"] == "done"]
    print(
        f"distill: finished; ran {', '.join(done) or 'nothing'} "
        f"({len(results) - len(done)} stage(s) up to date); report in "
        f"{cfg['run']['dir']}/report/report.md"
    )
    return 0
