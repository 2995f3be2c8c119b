"""Read and write MLIP ``.cfg`` files (many configurations, optional fields).

A configuration block::

    BEGIN_CFG
     Size
        N
     Supercell            (optional: absent = non-periodic)
        a_x a_y a_z       (1–3 lattice vectors; periodic along the given ones)
     AtomData:  id type cartes_x cartes_y cartes_z [fx fy fz]
        ...
     Energy               (optional, eV)
        E
     PlusStress:  xx yy zz yz xz xy      (optional, eV; = −virial = −ASE stress · V)
        ...
     Feature   name value (optional, repeated)
    END_CFG

Types are 0-based MLIP species indices. Units: Å, eV, eV/Å; ``PlusStress`` is in eV (the
negative virial, = −ASE stress × volume; see docs/units.md).

MLIP-3 (and ``mlp select-add``) may add further one-line blocks, ``EnergyWeight``,
``ForceWeight``, ``StressWeight`` (one number) and ``Stress: xx yy zz yz xz xy`` (six numbers),
``MV_grade``, and extra ``AtomData`` columns (``nbh_grades``, ...): they are read, checked (finite
numbers) and kept in :attr:`Configuration.extra`, and not written back.

The reader is strict: every malformed line raises :class:`~mtpjax.io.errors.FileFormatError`
(an :class:`~mtpjax.errors.InputError`) with the file and 1-based line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtpjax.io.errors import FileFormatError

STRESS_KEYS = ("xx", "yy", "zz", "yz", "xz", "xy")


@dataclass(eq=False)
class Configuration:
    """One atomic configuration with optional labels.

    Attributes:
        positions: float [N, 3] Cartesian (Å).
        types: int [N] MLIP type indices (0-based).
        cell: float [3, 3] rows = lattice vectors, or None (non-periodic).
        pbc: bool [3] periodic directions (rows of ``Supercell`` present).
        energy: total energy (eV) or None.
        forces: float [N, 3] (eV/Å) or None.
        plus_stress: float [6] (eV), order xx yy zz yz xz xy, or None.
        features: ``Feature`` lines as name → value (strings).
        ids: int [N] atom ids as written.
        extra: MLIP-3 blocks read but not used (``EnergyWeight``, ``Stress``, ...): name →
            float array; extra ``AtomData`` columns as ``"column name"`` → float [N].
        path, line, index: where it was read (file, 1-based line of ``BEGIN_CFG``, 0-based
            position in the file), or None; atom_lines: int [N] line of each atom row;
            field_lines: field name (``Energy``, ``PlusStress``, ...) → line of its value.
    """

    positions: np.ndarray
    types: np.ndarray
    cell: np.ndarray | None = None
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, bool))
    energy: float | None = None
    forces: np.ndarray | None = None
    plus_stress: np.ndarray | None = None
    features: dict = field(default_factory=dict)
    ids: np.ndarray | None = None
    extra: dict = field(default_factory=dict, repr=False)
    path: str | None = field(default=None, repr=False)
    line: int | None = field(default=None, repr=False)
    index: int | None = field(default=None, repr=False)
    atom_lines: np.ndarray | None = field(default=None, repr=False)
    field_lines: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def volume(self) -> float | None:
        if self.cell is None or not np.all(self.pbc):
            return None
        return float(abs(np.linalg.det(self.cell)))

    def error(self, message: str, atom: int | None = None,
              field: str | None = None) -> FileFormatError:
        """An error located in this configuration: at the row of ``atom`` or the value line of
        ``field`` (``"Energy"``, ``"PlusStress"``) when known, else at its ``BEGIN_CFG``; the
        message starts with ``configuration K:`` (K 0-based)."""
        line = self.field_lines.get(field, self.line) if field else self.line
        if atom is not None and self.atom_lines is not None and 0 <= atom < len(self.atom_lines):
            line = int(self.atom_lines[atom])
        prefix = f"configuration {self.index}: " if self.index is not None else ""
        return FileFormatError(self.path or "<configuration>", line, prefix + message)

    @property
    def stress(self) -> np.ndarray | None:
        """ASE Voigt stress (eV/Å³) = −PlusStress / V, or None."""
        if self.plus_stress is None or self.volume is None:
            return None
        return -np.asarray(self.plus_stress) / self.volume


def _float(tok: str, path, line: int) -> float:
    try:
        value = float(tok)
    except ValueError as exc:
        raise FileFormatError(path, line, f"expected a number, got {tok!r}") from exc
    if not np.isfinite(value):
        raise FileFormatError(path, line, f"expected a finite number, got {tok!r}")
    return value


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


#: one-line blocks MLIP-3 may write: name -> number of values (read and kept in ``extra``)
EXTRA_BLOCKS = {"EnergyWeight": 1, "ForceWeight": 1, "StressWeight": 1, "Stress": 6,
                "MV_grade": 1}
KNOWN_FIELDS = ("Size", "Supercell", "AtomData", "Energy", "PlusStress", "Feature",
                *EXTRA_BLOCKS)


def _check_cell(rows: np.ndarray, path, line: int) -> None:
    """Lattice vectors (Å) must be linearly independent (non-zero volume / area / length)."""
    scale = max(1.0, float(np.abs(rows).max()))
    if np.any(np.linalg.norm(rows, axis=1) < 1e-8) or np.linalg.matrix_rank(
            rows, tol=1e-8 * scale) < len(rows):
        what = {3: "volume", 2: "area", 1: "length"}[len(rows)]
        raise FileFormatError(path, line, f"singular Supercell (zero {what}: lattice vectors "
                              f"{rows.tolist()} are not linearly independent)")


def _parse_block(lines: list[tuple[int, str]], path, begin_line: int = 0,
                 index: int | None = None) -> Configuration:
    """Parse the lines between BEGIN_CFG and END_CFG (each with its 1-based line number)."""
    size = size_line = None
    cell_rows: list[np.ndarray] = []
    atoms = None
    atom_lines = None
    columns: list[str] = []
    energy = None
    plus = None
    features: dict = {}
    extra: dict = {}
    seen: dict[str, int] = {}
    field_lines: dict[str, int] = {}
    k = 0

    def value_line(key, lineno, count):
        """The numbers on the line after header ``key`` (exactly ``count`` of them)."""
        nonlocal k
        if k >= len(lines) or not lines[k][1].strip() or not _is_number(lines[k][1].split()[0]):
            raise FileFormatError(path, lineno, f"{key} without a value: expected {count} "
                                  f"number{'s' if count > 1 else ''} on the next line")
        ln, text = lines[k]
        field_lines[key] = ln
        k += 1
        toks = text.split()
        if len(toks) != count:
            raise FileFormatError(path, ln, f"{key} needs {count} number"
                                  f"{'s' if count > 1 else ''}, got {len(toks)}")
        return ln, [_float(t, path, ln) for t in toks]

    while k < len(lines):
        lineno, text = lines[k]
        head = text.strip()
        k += 1
        if not head:
            continue
        key = head.split()[0].split(":")[0]
        if key in seen and key != "Feature":
            raise FileFormatError(path, lineno, f"{key} given twice in one configuration "
                                  f"(first on line {seen[key]})")
        seen[key] = lineno
        if key == "Size":
            if k >= len(lines) or not lines[k][1].strip():
                raise FileFormatError(path, lineno, "Size without a value: expected the number "
                                      "of atoms on the next line")
            size_line, text = lines[k]
            k += 1
            try:
                size = int(text.strip())
            except ValueError as exc:
                raise FileFormatError(path, size_line, f"bad Size {text.strip()!r}: expected "
                                      "the number of atoms (an integer)") from exc
            if size < 0:
                raise FileFormatError(path, size_line, "negative Size")
        elif key == "Supercell":
            while k < len(lines) and lines[k][1].split() and _is_number(lines[k][1].split()[0]):
                ln, row = lines[k]
                k += 1
                toks = row.split()
                if len(toks) != 3:
                    raise FileFormatError(path, ln, f"Supercell row needs 3 numbers (a lattice "
                                          f"vector in Å), got {len(toks)}")
                cell_rows.append(np.array([_float(t, path, ln) for t in toks]))
            if not cell_rows:
                raise FileFormatError(path, lineno, "Supercell without lattice vectors: "
                                      "expected 1 to 3 rows of 3 numbers")
            if len(cell_rows) > 3:
                raise FileFormatError(path, lineno, f"Supercell has {len(cell_rows)} rows, "
                                      "expected at most 3")
            _check_cell(np.array(cell_rows), path, lineno)
        elif key == "AtomData":
            if size is None:
                raise FileFormatError(path, lineno, "AtomData before Size")
            columns = head.split(":", 1)[1].split() if ":" in head else []
            for required in ("type", "cartes_x", "cartes_y", "cartes_z"):
                if required not in columns:
                    raise FileFormatError(path, lineno, f"AtomData lacks column {required!r} "
                                          "(expected 'AtomData: id type cartes_x cartes_y "
                                          "cartes_z [fx fy fz]')")
            if len(set(columns)) != len(columns):
                raise FileFormatError(path, lineno, f"AtomData repeats a column: {columns}")
            type_col = columns.index("type")
            rows, row_lines = [], []
            while k < len(lines) and lines[k][1].split() and _is_number(lines[k][1].split()[0]):
                ln, row = lines[k]
                k += 1
                toks = row.split()
                if len(toks) != len(columns):
                    raise FileFormatError(path, ln, f"expected {len(columns)} columns "
                                          f"({' '.join(columns)}), got {len(toks)}")
                values = [_float(t, path, ln) for t in toks]
                if values[type_col] != round(values[type_col]) or values[type_col] < 0:
                    raise FileFormatError(
                        path, ln, f"atom type must be an integer ≥ 0, got {toks[type_col]!r}"
                    )
                rows.append(values)
                row_lines.append(ln)
            if len(rows) != size:
                at = lines[k][0] if k < len(lines) else lineno
                raise FileFormatError(
                    path, at if len(rows) < size else row_lines[size],
                    f"Size = {size} (line {size_line}) but AtomData (line {lineno}) has "
                    f"{len(rows)} atom rows; expected {size}")
            atoms = np.array(rows, dtype=np.float64).reshape(size, len(columns))
            atom_lines = np.asarray(row_lines, dtype=np.int64)
        elif key == "Energy":
            _, (energy,) = value_line("Energy", lineno, 1)
        elif key == "PlusStress":
            names = head.split(":", 1)[1].split() if ":" in head else list(STRESS_KEYS)
            if sorted(names) != sorted(STRESS_KEYS):
                raise FileFormatError(path, lineno, f"PlusStress components {names}; expected "
                                      "xx yy zz yz xz xy")
            _, vals = value_line("PlusStress", lineno, 6)
            d = dict(zip(names, vals, strict=True))
            plus = np.array([d[n] for n in STRESS_KEYS])
        elif key == "Feature":
            parts = head.split(None, 2)
            if len(parts) < 2:
                raise FileFormatError(path, lineno, "Feature without a name (expected "
                                      "'Feature NAME VALUE')")
            features[parts[1]] = parts[2] if len(parts) > 2 else ""
        elif key in EXTRA_BLOCKS:
            _, vals = value_line(key, lineno, EXTRA_BLOCKS[key])
            extra[key] = np.asarray(vals)
        else:
            raise FileFormatError(path, lineno, f"unknown field {key!r}; expected one of "
                                  f"{', '.join(KNOWN_FIELDS)} (or END_CFG)")
    if size is None:
        raise FileFormatError(path, begin_line or None, "configuration without Size")
    if atoms is None:
        if size:
            raise FileFormatError(path, begin_line or None, "configuration without AtomData")
        atoms = np.zeros((0, len(columns) or 5))
        atom_lines = np.zeros(0, np.int64)
        columns = columns or ["id", "type", "cartes_x", "cartes_y", "cartes_z"]
    col = {c: i for i, c in enumerate(columns)}
    types = atoms[:, col["type"]]
    positions = atoms[:, [col["cartes_x"], col["cartes_y"], col["cartes_z"]]]
    forces = None
    force_cols = [c for c in ("fx", "fy", "fz") if c in col]
    if force_cols and len(force_cols) != 3:
        raise FileFormatError(path, int(seen["AtomData"]), f"AtomData has {force_cols} but not "
                              "all of fx fy fz")
    if force_cols:
        forces = atoms[:, [col["fx"], col["fy"], col["fz"]]]
    used = {"id", "type", "cartes_x", "cartes_y", "cartes_z", "fx", "fy", "fz"}
    for c in columns:
        if c not in used:
            extra[f"column {c}"] = atoms[:, col[c]].copy()
    cell = None
    pbc = np.zeros(3, bool)
    if cell_rows:
        cell = np.zeros((3, 3))
        cell[: len(cell_rows)] = np.array(cell_rows)
        pbc[: len(cell_rows)] = True
    ids = atoms[:, col["id"]].astype(np.int64) if "id" in col else np.arange(1, size + 1)
    return Configuration(
        positions=positions,
        types=types.astype(np.int64),
        cell=cell,
        pbc=pbc,
        energy=energy,
        forces=forces,
        plus_stress=plus,
        features=features,
        ids=ids,
        extra=extra,
        path=str(path),
        line=begin_line or None,
        index=index,
        atom_lines=atom_lines,
        field_lines=field_lines,
    )


def iter_cfg(path):
    """Yield :class:`Configuration` objects from an ``.cfg`` file, one at a time.

    Raises:
        FileFormatError: (an :class:`~mtpjax.errors.InputError`) naming the file and line.
    """
    path = Path(path)
    try:
        handle = path.open()
    except OSError as exc:
        raise FileFormatError(path, None, f"cannot read file: {exc.strerror}") from exc
    block: list[tuple[int, str]] | None = None
    begin_line = 0
    count = 0
    with handle:
        try:
            for lineno, text in enumerate(handle, start=1):
                stripped = text.strip()
                if stripped == "BEGIN_CFG":
                    if block is not None:
                        raise FileFormatError(path, lineno, "BEGIN_CFG inside a configuration: "
                                              f"missing END_CFG for the one begun on line "
                                              f"{begin_line}")
                    block, begin_line = [], lineno
                elif stripped == "END_CFG":
                    if block is None:
                        raise FileFormatError(path, lineno, "END_CFG without BEGIN_CFG")
                    try:
                        cfg = _parse_block(block, path, begin_line, count)
                    except FileFormatError as exc:
                        raise exc.located(exc.path, exc.line,
                                          f"configuration {count}: ") from None
                    yield cfg
                    count += 1
                    block = None
                elif block is not None:
                    block.append((lineno, text))
                elif stripped and not stripped.startswith("#"):
                    raise FileFormatError(path, lineno, f"text outside BEGIN_CFG/END_CFG: "
                                          f"{stripped[:60]!r}")
        except UnicodeDecodeError as exc:
            raise FileFormatError(path, None, "not a text file (expected an MLIP .cfg "
                                  "file)") from exc
    if block is not None:
        raise FileFormatError(path, begin_line, "configuration not closed by END_CFG "
                              "(truncated file?)")


def read_cfg(path) -> list[Configuration]:
    """All configurations of an ``.cfg`` file."""
    return list(iter_cfg(path))


def format_configuration(cfg: Configuration, digits: int = 12) -> str:
    """Text of one configuration block; positions, forces, energy, PlusStress with ``digits``
    decimals (≥ 12 significant digits for the values mlp works with)."""
    f = f"{{:.{digits}f}}"
    n = len(cfg)
    out = ["BEGIN_CFG", " Size", f"    {n}"]
    if cfg.cell is not None and np.any(cfg.pbc):
        out.append(" Supercell")
        for d in range(3):
            if cfg.pbc[d]:
                out.append("    " + " ".join(f.format(v) for v in cfg.cell[d]))
    cols = "id type cartes_x cartes_y cartes_z"
    if cfg.forces is not None:
        cols += " fx fy fz"
    out.append(f" AtomData:  {cols}")
    ids = cfg.ids if cfg.ids is not None else np.arange(1, n + 1)
    for a in range(n):
        row = [str(int(ids[a])), str(int(cfg.types[a]))]
        row += [f.format(v) for v in cfg.positions[a]]
        if cfg.forces is not None:
            row += [f.format(v) for v in cfg.forces[a]]
        out.append("    " + " ".join(row))
    if cfg.energy is not None:
        out += [" Energy", f"    {f.format(cfg.energy)}"]
    if cfg.plus_stress is not None:
        out.append(" PlusStress:  xx yy zz yz xz xy")
        out.append("    " + " ".join(f.format(v) for v in cfg.plus_stress))
    for name, value in cfg.features.items():
        out.append(f" Feature   {name}\t{value}")
    out.append("END_CFG")
    return "\n".join(out) + "\n"


def write_cfg(path, configs) -> None:
    """Write configurations to ``path`` (atomically: temporary file then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as fh:
        for cfg in configs:
            fh.write(format_configuration(cfg))
            fh.write("\n")
    tmp.replace(path)
