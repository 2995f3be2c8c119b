"""`mtpjax label`: label structure files with a teacher into a dataset store (SQLite).

    mtpjax label --teacher gap:runs/teacher_gap/gap.xml --in cells.xyz --db runs/si.db
    mtpjax label --teacher ase:ase.calculators.emt:EMT --in a.xyz b.traj --db d.db --workers 2
    mtpjax label --teacher teacher.toml --in cells.xyz --db d.db --scheduler tcp://host:8786
    mtpjax label --db d.db --splits 0.8,0.1,0.1 --seed 0 --export-xyz d.xyz --export-cfg d.cfg

Teacher syntax: see `distill.teachers.parse_teacher` and docs/labelling.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distill.inputs import StructureFileError, read_structures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `label` options on `parser`."""
    parser.add_argument(
        "--teacher",
        help="gap:MODEL.xml | ase:MODULE:FACTORY[:JSON] | "
        "mtp:POT.mtp:Si[,O] | FILE.toml/.json (required with --in)",
    )
    parser.add_argument(
        "--in",
        dest="inputs",
        nargs="+",
        type=Path,
        default=[],
        metavar="FILE",
        help="structure files (any ASE format)",
    )
    parser.add_argument("--index", default=":", help="frames of each file, ase.io syntax")
    parser.add_argument("--db", type=Path, required=True, help="dataset store (.db, SQLite)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (default: one per core; 0: in-process)",
    )
    where.add_argument("--scheduler", default=None, help="Dask scheduler address (tcp://...)")
    parser.add_argument("--chunk-size", type=int, default=4, help="structures per task")
    parser.add_argument(
        "--recycle", type=int, default=100, help="replace a local worker after this many tasks"
    )
    parser.add_argument("--source", default="", help="provenance: protocol that made them")
    parser.add_argument("--parent", default="", help="provenance: dataset they come from")
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="label again structures stored as failed for this teacher",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--splits",
        default=None,
        help="assign splits, e.g. 0.8,0.1,0.1 or train=0.8,validation=0.1,test=0.1",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --splits")
    parser.add_argument("--export-xyz", type=Path, default=None, help="write labelled extxyz")
    parser.add_argument("--export-cfg", type=Path, default=None, help="write labelled MLIP .cfg")
    parser.add_argument(
        "--species",
        default=None,
        help="type order of --export-cfg, e.g. Si,O (default: sorted symbols)",
    )
    parser.add_argument("--split", default=None, help="export only this split")


def run(args: argparse.Namespace) -> int:
    """Label, then optionally assign splits and export; 0 on success, 2 on bad input."""
    try:
        return _run(args)
    except (StructureFileError, FileNotFoundError, ValueError) as exc:
        from mtpjax.cli import error_exit

        return error_exit(exc)


def _run(args: argparse.Namespace) -> int:
    from distill.engine import label
    from distill.export import export_cfg, export_extxyz
    from distill.splits import assign_splits, parse_fractions
    from distill.store import open_store
    from distill.teachers import parse_teacher, teacher_identity

    if args.inputs and not args.teacher:
        raise ValueError("--teacher is required to label --in files")
    for flag, value, low in (("--workers", args.workers, 0), ("--chunk-size", args.chunk_size, 1),
                             ("--recycle", args.recycle, 1)):
        if value is not None and value < low:
            raise ValueError(f"{flag} must be ≥ {low}, got {value}")
    spec = parse_teacher(args.teacher) if args.teacher else None
    teacher_id = teacher_identity(spec)["teacher_id"] if spec else None
    db = open_store(args.db)
    if args.inputs:
        structures = read_structures(args.inputs, args.index)
        executor = args.scheduler or ("serial" if args.workers == 0 else None)
        summary = label(
            structures,
            spec,
            db,
            executor,
            workers=args.workers or None,
            chunk_size=args.chunk_size,
            recycle=args.recycle,
            source=args.source,
            parent=args.parent,
            retry_failed=args.retry_failed,
            progress=not args.no_progress,
        )
        print(
            f"teacher {summary.teacher_id}: {summary.n_labelled} labelled, {summary.n_failed} "
            f"failed, {summary.n_skipped} already in {args.db}, {summary.n_duplicates} duplicate "
            f"inputs; {summary.labels_per_s:.3g} labels/s, {summary.atoms_per_s:.3g} atoms/s"
        )
    if args.splits:
        counts = assign_splits(db, parse_fractions(args.splits), args.seed, teacher_id)
        print("splits: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if args.export_xyz:
        n = export_extxyz(db, args.export_xyz, teacher_id, args.split)
        print(f"wrote {n} structures to {args.export_xyz}")
    if args.export_cfg:
        species = args.species.split(",") if args.species else _species(db)
        n = export_cfg(db, args.export_cfg, species, teacher_id, args.split)
        print(f"wrote {n} configurations to {args.export_cfg} (types: {','.join(species)})")
    return 0


def _species(db) -> list[str]:
    from ase.data import chemical_symbols

    numbers = {int(z) for row in db.select(status="ok", include_data=False) for z in row.numbers}
    return [chemical_symbols[z] for z in sorted(numbers)]
