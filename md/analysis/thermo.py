"""MD thermo logs (CSV or whitespace tables, JSON lines) with tolerant column names.

Columns are mapped to canonical names:

=========  =====================================================  ======================
canonical  accepted names (case-insensitive, units in () or [])   unit
=========  =====================================================  ======================
step       step, steps, timestep, nstep                           —
time       time, t, time_ps                                       as logged
T          T, temp, temperature                                   K
P          P, press, pressure                                     GPa (``bar``/``kbar``
                                                                  in the name converted)
V          V, vol, volume                                         Å³ (whole cell)
E          E, pe, poteng, epot, energy, potential_energy, etotal  eV
N          N, natoms, atoms, n_atoms                              —
=========  =====================================================  ======================
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from ase import Atoms

from .trajectory import frame_pressure, frame_step

_ALIASES: dict[str, tuple[str, ...]] = {
    "step": ("step", "steps", "timestep", "nstep"),
    "time": ("time", "t", "timeps", "time_ps", "timefs", "time_fs"),
    "T": ("temp", "temperature", "tk", "t_k"),
    "P": ("p", "press", "pressure", "pgpa", "p_gpa", "pressure_gpa", "press_gpa", "pressgpa",
          "pbar", "p_bar", "press_bar", "pressbar", "pkbar", "p_kbar", "pressure_bar"),
    "V": ("v", "vol", "volume", "v_a3", "vol_a3", "volume_a3"),
    "E": ("e", "pe", "epot", "e_pot", "energy", "potential_energy", "potentialenergy", "etotal",
          "toteng", "poteng", "e_ev", "pe_ev", "energy_ev"),
    "N": ("n", "natoms", "atoms", "n_atoms"),
}


def _canonical(column: str) -> tuple[str | None, float]:
    """Canonical name and unit factor (to GPa for pressure) of a raw column name."""
    raw = column.strip().lower()
    unit = ""
    m = re.match(r"^(.*?)[\s_]*[\(\[]\s*([^\)\]]*)[\)\]]\s*$", raw)
    if m:
        raw, unit = m.group(1), m.group(2)
    key = re.sub(r"[^0-9a-z_]", "", raw)
    if key == "t" and not unit:  # bare "T" is temperature; "t" with a time unit is time
        return ("T" if column.strip() == "T" else "time"), 1.0
    if key == "t" and unit in ("k",):
        return "T", 1.0
    for canonical, names in _ALIASES.items():
        if key in names:
            factor = 1.0
            if canonical == "P":
                text = key + unit
                factor = 0.1 if "kbar" in text else 1e-4 if "bar" in text else 1.0
            return canonical, factor
    return None, 1.0


def _rows_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not a JSON line ({exc.msg})") from exc
    return rows


def _rows_table(path: Path) -> list[dict]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        return []
    header = lines[0].lstrip("#").strip()
    sep = "," if "," in header else None
    names = [h.strip() for h in header.split(sep)]
    rows = []
    for n, line in enumerate(lines[1:], 2):
        if line.lstrip().startswith("#"):
            continue
        values = [v.strip() for v in line.split(sep)]
        if len(values) != len(names):
            raise ValueError(f"{path}:{n}: {len(values)} values for {len(names)} columns")
        try:
            rows.append({k: float(v) for k, v in zip(names, values, strict=True)})
        except ValueError as exc:
            raise ValueError(f"{path}:{n}: non-numeric value ({exc})") from exc
    return rows


def read_thermo(path: str | Path) -> dict[str, np.ndarray]:
    """Read a thermo log into ``{canonical column: array}`` (pressure converted to GPa).

    Unknown columns are kept under their original names.

    Raises:
        ValueError: missing or empty file, malformed rows.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such thermo log")
    rows = _rows_jsonl(path) if path.suffix.lower() in (".jsonl", ".json", ".ndjson") \
        else _rows_table(path)
    if not rows:
        raise ValueError(f"{path}: empty thermo log (no rows)")
    columns: dict[str, np.ndarray] = {}
    for name in rows[0]:
        canonical, factor = _canonical(name)
        values = np.array([float(r.get(name, np.nan)) for r in rows]) * factor
        columns.setdefault(canonical or name, values)
    return columns


def density_g_cm3(atoms: Atoms) -> float:
    """Mass density in g/cm³ of a periodic frame (1 amu/Å³ = 1.66054 g/cm³)."""
    return float(atoms.get_masses().sum() / abs(atoms.cell.volume) * 1.66053907)


def pressures_for_frames(frames: list[Atoms], indices: np.ndarray, n_total: int,
                         thermo: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Pressure (GPa) of each frame; NaN where unknown.

    Order of preference: the frame itself (``atoms.info`` pressure keys or a stored stress);
    the thermo log matched by MD step (``atoms.info['step']``, interpolated); the thermo log
    matched by frame index when it has one row per trajectory frame.
    """
    p = np.array([frame_pressure(a) if frame_pressure(a) is not None else np.nan
                  for a in frames])
    if thermo is None or "P" not in thermo or not np.isnan(p).any():
        return p
    steps = [frame_step(a) for a in frames]
    if "step" in thermo and all(s is not None for s in steps):
        order = np.argsort(thermo["step"])
        fill = np.interp(steps, thermo["step"][order], thermo["P"][order])
    elif len(thermo["P"]) == n_total:
        fill = thermo["P"][np.asarray(indices)]
    else:
        return p
    return np.where(np.isnan(p), fill, p)
