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

Types are 0-based MLIP species indices. Units: Å, eV, eV/Å.
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

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def volume(self) -> float | None:
        if self.cell is None or not np.all(self.pbc):
            return None
        return float(abs(np.linalg.det(self.cell)))

    @property
    def stress(self) -> np.ndarray | None:
        """ASE Voigt stress (eV/Å³) = −PlusStress / V, or None."""
        if self.plus_stress is None or self.volume is None:
            return None
        return -np.asarray(self.plus_stress) / self.volume


def _float(tok: str, path, line: int) -> float:
    try:
        return float(tok)
    except ValueError as exc:
        raise FileFormatError(path, line, f"expected a number, got {tok!r}") from exc


def _parse_block(lines: list[tuple[int, str]], path) -> Configuration:
    """Parse the lines between BEGIN_CFG and END_CFG (each with its 1-based line number)."""
    size = None
    cell_rows: list[np.ndarray] = []
    atoms = None
    columns: list[str] = []
    energy = None
    plus = None
    features: dict = {}
    k = 0
    while k < len(lines):
        lineno, text = lines[k]
        head = text.strip()
        k += 1
        if not head:
            continue
        key = head.split()[0].rstrip(":")
        if key == "Size":
            if k >= len(lines):
                raise FileFormatError(path, lineno, "Size without a value")
            lineno, text = lines[k]
            k += 1
            try:
                size = int(text.strip())
            except ValueError as exc:
                raise FileFormatError(path, lineno, f"bad Size {text.strip()!r}") from exc
            if size < 0:
                raise FileFormatError(path, lineno, "negative Size")
        elif key == "Supercell":
            while k < len(lines) and len(lines[k][1].split()) == 3:
                ln, row = lines[k]
                try:
                    cell_rows.append(np.array([float(t) for t in row.split()]))
                except ValueError:
                    break
                k += 1
            if not cell_rows:
                raise FileFormatError(path, lineno, "Supercell without lattice vectors")
        elif key == "AtomData":
            if size is None:
                raise FileFormatError(path, lineno, "AtomData before Size")
            columns = head.split(":", 1)[1].split()
            for required in ("type", "cartes_x", "cartes_y", "cartes_z"):
                if required not in columns:
                    raise FileFormatError(path, lineno, f"AtomData lacks column {required!r}")
            rows = []
            for _ in range(size):
                if k >= len(lines):
                    raise FileFormatError(path, lineno, f"expected {size} atom lines")
                ln, row = lines[k]
                k += 1
                toks = row.split()
                if len(toks) != len(columns):
                    raise FileFormatError(
                        path, ln, f"expected {len(columns)} columns, got {len(toks)}"
                    )
                values = [_float(t, path, ln) for t in toks]
                type_col = columns.index("type")
                if values[type_col] != round(values[type_col]) or values[type_col] < 0:
                    raise FileFormatError(
                        path, ln, f"atom type must be an integer ≥ 0, got {toks[type_col]!r}"
                    )
                rows.append(values)
            atoms = np.array(rows, dtype=np.float64).reshape(size, len(columns))
        elif key == "Energy":
            lineno, text = lines[k]
            k += 1
            energy = _float(text.strip(), path, lineno)
        elif key == "PlusStress":
            names = head.split(":", 1)[1].split() if ":" in head else list(STRESS_KEYS)
            lineno, text = lines[k]
            k += 1
            vals = [_float(t, path, lineno) for t in text.split()]
            if len(vals) != len(names) or sorted(names) != sorted(STRESS_KEYS):
                raise FileFormatError(path, lineno, "PlusStress needs xx yy zz yz xz xy")
            d = dict(zip(names, vals, strict=True))
            plus = np.array([d[n] for n in STRESS_KEYS])
        elif key == "Feature":
            parts = head.split(None, 2)
            if len(parts) < 2:
                raise FileFormatError(path, lineno, "Feature without a name")
            features[parts[1]] = parts[2] if len(parts) > 2 else ""
        else:
            # MLIP writes other optional blocks (EnergyWeight, Stress, ...): skip their values
            if head.endswith(":") or key in ("EnergyWeight", "Stress", "MV_grade"):
                continue
            raise FileFormatError(path, lineno, f"unknown field {key!r}")
    if size is None:
        raise FileFormatError(path, lines[0][0] if lines else None, "configuration without Size")
    if atoms is None:
        if size:
            raise FileFormatError(path, lines[0][0], "configuration without AtomData")
        atoms = np.zeros((0, len(columns) or 5))
        columns = columns or ["id", "type", "cartes_x", "cartes_y", "cartes_z"]
    col = {c: i for i, c in enumerate(columns)}
    types = atoms[:, col["type"]]
    if np.any(types != np.round(types)) or np.any(types < 0):
        raise FileFormatError(path, lines[0][0], "atom types must be non-negative integers")
    positions = atoms[:, [col["cartes_x"], col["cartes_y"], col["cartes_z"]]]
    forces = None
    if all(c in col for c in ("fx", "fy", "fz")):
        forces = atoms[:, [col["fx"], col["fy"], col["fz"]]]
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
    )


def iter_cfg(path):
    """Yield :class:`Configuration` objects from an ``.cfg`` file, one at a time."""
    path = Path(path)
    try:
        handle = path.open()
    except OSError as exc:
        raise FileFormatError(path, None, f"cannot read file: {exc.strerror}") from exc
    block: list[tuple[int, str]] | None = None
    begin_line = 0
    with handle:
        for lineno, text in enumerate(handle, start=1):
            stripped = text.strip()
            if stripped == "BEGIN_CFG":
                if block is not None:
                    raise FileFormatError(path, lineno, "BEGIN_CFG inside a configuration")
                block, begin_line = [], lineno
            elif stripped == "END_CFG":
                if block is None:
                    raise FileFormatError(path, lineno, "END_CFG without BEGIN_CFG")
                yield _parse_block(block, path)
                block = None
            elif block is not None:
                block.append((lineno, text))
            elif stripped and not stripped.startswith("#"):
                raise FileFormatError(path, lineno, f"text outside BEGIN_CFG/END_CFG: {stripped!r}")
    if block is not None:
        raise FileFormatError(path, begin_line, "configuration not closed by END_CFG")


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
