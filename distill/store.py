"""The dataset store: labelled structures in an SQLite file through `ase.db`.

One row per (structure, teacher). Key-value pairs of a row:

- ``uid``: sha256 of the structure key and the teacher id (`distill.hashing.label_key`);
- ``skey``: sha256 of (numbers, positions, cell, pbc); ``teacher``: the teacher id;
  ``teacher_kind``; ``status``: ``"ok"`` or ``"failed"`` with ``reason``;
- provenance: ``labelled_at`` (UTC, ISO 8601), ``source`` (protocol that made the structure),
  ``parent`` (dataset it came from), ``split`` (after `assign_splits`).

The row's calculator results hold the labels (energy eV, forces eV/Å, stress eV/Å³ in ASE
Voigt order, the latter only for periodic cells); ``data["teacher"]`` holds the full teacher
identity. Only the labelling parent writes, one transaction per finished chunk, so a killed
run loses at most the chunks in flight and never leaves half a chunk.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import ase.db
from ase.calculators.singlepoint import SinglePointCalculator

from distill.compute import Label, bare

OK, FAILED = "ok", "failed"
_INDEX = "distill_text_key_value_index"


@dataclasses.dataclass(frozen=True)
class Record:
    """One labelled (or failed) structure, ready to be written."""

    uid: str
    skey: str
    atoms: object
    label: Label
    source: str = ""
    parent: str = ""


def open_store(path: Path | str):
    """Open (or create) the SQLite store at `path`; returns the `ase.db` connection.

    Adds an index on (key, value) of ase.db's text key-value table, which ase.db itself indexes
    by key only, so that looking a uid up stays fast in stores of 10⁵ rows.
    """
    path = Path(path)
    if path.suffix != ".db":
        raise ValueError(f"dataset store {path}: expected a .db (SQLite) file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    # SQLite locks the file itself; ase.db's extra lock *file* would survive a SIGKILL of the
    # writer and make every later run wait forever, so it is not used.
    db = ase.db.connect(path, type="db", append=True, use_lock_file=False)
    db.count()  # creates ase.db's tables in a new file
    with sqlite3.connect(path) as con:
        con.execute(f"CREATE INDEX IF NOT EXISTS {_INDEX} ON text_key_values(key, value)")
    return db


def stored_uids(db, teacher_id: str | None = None, status: str | None = None) -> set[str]:
    """The uids already in the store (optionally of one teacher and one status)."""
    sql = "SELECT value FROM text_key_values WHERE key = 'uid'"
    args: list[str] = []
    for key, value in (("teacher", teacher_id), ("status", status)):
        if value is not None:
            sql += " AND id IN (SELECT id FROM text_key_values WHERE key = ? AND value = ?)"
            args += [key, value]
    with sqlite3.connect(db.filename) as con:
        return {uid for (uid,) in con.execute(sql, args)}


def write_records(db, records: list[Record], identity: dict) -> None:
    """Write `records` in one transaction, replacing a failed row with the same uid."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with db:
        for rec in records:
            old = [row.id for row in db.select(uid=rec.uid, include_data=False)]
            if old:
                db.delete(old)
            atoms = bare(rec.atoms)
            lab = rec.label
            if lab.ok:
                atoms.calc = SinglePointCalculator(
                    atoms,
                    energy=lab.energy,
                    forces=lab.forces,
                    **({"stress": lab.stress} if lab.stress is not None else {}),
                )
            kvp = {
                "uid": rec.uid,
                "skey": rec.skey,
                "teacher": identity["teacher_id"],
                "teacher_kind": identity["kind"],
                "status": OK if lab.ok else FAILED,
                "labelled_at": stamp,
            }
            kvp.update(
                {
                    k: v
                    for k, v in (
                        ("reason", lab.reason),
                        ("source", rec.source),
                        ("parent", rec.parent),
                    )
                    if v
                }
            )
            db.write(atoms, key_value_pairs=kvp, data={"teacher": identity})


def select_labelled(
    db, teacher_id: str | None = None, split: str | None = None, status: str = OK
) -> Iterator:
    """Rows of labelled structures, in insertion order (optionally one teacher / split)."""
    query = {k: v for k, v in (("teacher", teacher_id), ("split", split)) if v is not None}
    yield from db.select(status=status, sort="id", include_data=False, **query)


def count(db, **query) -> int:
    """Number of rows matching `query` (ase.db key=value selection)."""
    return db.count(**query)
