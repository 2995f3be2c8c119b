"""Command-line entry point `mtpjax`: a thin dispatcher over sub-command modules.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported lazily so that `mtpjax --help` is fast and a
missing optional extra (quippy, dask) only affects the command that needs it.

Bad input (any :class:`mtpjax.errors.InputError`: a malformed file, an implausible label, a
config value out of range) ends every command with one line on stderr,
``mtpjax: error: FILE:LINE: message``, and exit status 2; ``mtpjax --debug COMMAND ...`` shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from mtpjax.errors import InputError

#: set by ``--debug``: errors are re-raised with their traceback instead of one line
DEBUG = False

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "new": ("mtpjax.commands.new", "write an untrained .mtp potential of a given level"),
    "calc-efs": ("mtpjax.commands.calc_efs", "energies, forces, stresses of a .cfg (like mlp)"),
    "calc-errors": ("mtpjax.commands.calc_errors", "errors of a potential on a .cfg (like mlp)"),
    "calc-grade": ("mtpjax.commands.calc_grade",
                   "MaxVol extrapolation grades of a .cfg (like mlp calc-grade)"),
    "select-add": ("mtpjax.commands.select_add",
                   "configurations to add to a training set by MaxVol (like mlp select-add)"),
    "export-lammps": ("mtpjax.commands.export_lammps",
                      "a model bundle for LAMMPS pair_style jax/kk (lammps-jax)"),
    "train": ("mtpjax.fit.cli", "fit an MTP (mlp train compatible flags)"),
    "label": ("distill.label_cli", "label structures with a teacher into a dataset store"),
    "md": ("md.cli", "run molecular dynamics from a TOML config"),
    "analyze": ("md.analysis.cli", "structural analysis of trajectories"),
    "distill": ("distill.pipeline_cli", "the indirect-learning pipeline"),
}


def _load(name: str):
    module_name = COMMANDS[name][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise SystemExit(f"mtpjax {name}: not available in this build ({module_name})") from exc
        raise


def error_exit(exc: BaseException) -> int:
    """Print ``mtpjax: error: <exc>`` on one line (the traceback too with ``--debug``); 2."""
    if DEBUG:
        traceback.print_exception(exc)
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"mtpjax: error: {message}", file=sys.stderr)
    return 2


def device_out_of_memory(exc: BaseException) -> bool:
    """True for XLA's out-of-memory error (``RESOURCE_EXHAUSTED``) on any device."""
    return (type(exc).__name__ in ("JaxRuntimeError", "XlaRuntimeError")
            and "RESOURCE_EXHAUSTED" in str(exc))


def out_of_memory_exit(exc: BaseException) -> int:
    """One line naming the device's out-of-memory error and what to try (traceback with
    ``--debug``); status 1 (not bad input)."""
    if DEBUG:
        traceback.print_exception(exc)
    first = " ".join(str(exc).split())[:300]
    print("mtpjax: error: the device ran out of memory (" + first + "). Try fewer atoms per "
          "device or float32; on a GPU, XLA_PYTHON_CLIENT_PREALLOCATE=false and, for CUDA-graph "
          "errors, XLA_FLAGS=--xla_gpu_enable_command_buffer= (docs/gpu.md)", file=sys.stderr)
    return 1


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtpjax", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (anywhere on the command line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _load(name).add_arguments(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 on success, 2 on bad input (one line on stderr), 1 when a device
    runs out of memory (one line with what to try), 130 if stopped."""
    global DEBUG
    argv = list(sys.argv[1:] if argv is None else argv)
    DEBUG = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(_load(args.command).run(args) or 0)
    except InputError as exc:
        return error_exit(exc)
    except Exception as exc:
        if device_out_of_memory(exc):
            return out_of_memory_exit(exc)
        raise


if __name__ == "__main__":
    sys.exit(main())
