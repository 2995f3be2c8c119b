"""``mtpjax export-lammps POT.mtp -o model.json``: a model bundle for lammps-jax's
``pair_style jax/kk`` (StableHLO through ``jax.export``; :mod:`mtpjax.lammps_bundle`,
docs/lammps.md)."""

from __future__ import annotations

import sys

from mtpjax.errors import InputError
from mtpjax.io.mtp_file import read_mtp
from mtpjax.lammps_bundle import PLATFORMS, PRECISIONS, export_bundle, write_bundle


def add_arguments(parser) -> None:
    parser.add_argument("potential", help="trained .mtp file")
    parser.add_argument("-o", "--output", required=True, help="bundle to write (JSON)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float64",
                        help="float type of positions, energy and forces (default float64)")
    parser.add_argument("--max-atoms", type=int, default=8192,
                        help="per-rank capacity of local + ghost atoms (default 8192)")
    parser.add_argument("--max-neighbors", type=int, default=96,
                        help="neighbours per atom within cutoff + skin the program holds "
                             "(default 96; more makes energy and forces NaN)")
    parser.add_argument("--max-edges", type=int, default=None,
                        help="per-rank edge capacity (default max-atoms × max-neighbors)")
    parser.add_argument("--platform", choices=PLATFORMS, default="cuda",
                        help="platform of the StableHLO (default cuda, what pair_style jax/kk "
                             "runs)")


def run(args) -> int:
    pot = read_mtp(args.potential)
    if not pot.is_trained:
        raise InputError("has no coefficients (an untrained template?); expected a trained "
                         ".mtp", args.potential)
    for flag in ("max_atoms", "max_neighbors", "max_edges"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be ≥ 1, got {value}")
    bundle = export_bundle(pot, max_atoms=args.max_atoms, max_edges=args.max_edges,
                           max_neighbors=args.max_neighbors, precision=args.precision,
                           platform=args.platform)
    write_bundle(args.output, bundle)
    c = bundle["contract"]
    print(f"wrote {args.output}: {c['precision']}, {args.platform}, cutoff {c['cutoff']} Å, "
          f"{c['n_species']} species (LAMMPS type t = MLIP type t-1), capacity "
          f"{c['max_atoms']} atoms / {c['max_edges']} edges per rank, "
          f"{args.max_neighbors} neighbours per atom", file=sys.stderr)
    return 0
