"""Reading trajectories (extxyz, ASE .traj, anything ase.io.read knows) with clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.units import GPa

#: ``atoms.info`` keys read as the frame's pressure in GPa, in this order.
PRESSURE_KEYS = ("pressure_GPa", "pressure", "press", "P")
#: ``atoms.info`` keys read as the MD step of a frame.
STEP_KEYS = ("step", "timestep", "Timestep", "time_step")


@dataclass(frozen=True)
class Trajectory:
    """Frames read from ``path``; ``indices`` are their positions in the file (0-based)."""

    path: Path
    frames: list[Atoms]
    indices: np.ndarray
    n_total: int


def read_trajectory(path: str | Path, every: int = 1) -> Trajectory:
    """Read every ``every``-th frame of a trajectory file (the last frame is always kept).

    Frames are streamed with :func:`ase.io.iread`, so only the kept frames stay in memory.

    Raises:
        ValueError: the file is missing, cannot be parsed, or holds no frames.
    """
    path = Path(path)
    if every < 1:
        raise ValueError(f"--every must be ≥ 1, got {every}")
    if not path.is_file():
        raise ValueError(f"{path}: no such trajectory file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty trajectory (0 bytes, no frames)")
    frames: list[Atoms] = []
    indices: list[int] = []
    last: Atoms | None = None
    n = 0
    try:
        for n, atoms in enumerate(ase.io.iread(path, index=":"), 1):
            last = atoms
            if (n - 1) % every == 0:
                frames.append(atoms)
                indices.append(n - 1)
    except StopIteration:
        pass
    except Exception as exc:  # ase raises many types for malformed files
        raise ValueError(f"{path}: cannot read trajectory ({type(exc).__name__}: {exc})") from exc
    if last is None:
        raise ValueError(f"{path}: empty trajectory (no frames)")
    if indices[-1] != n - 1:
        frames.append(last)
        indices.append(n - 1)
    return Trajectory(path, frames, np.asarray(indices), n)


def frame_pressure(atoms: Atoms) -> float | None:
    """Pressure of a frame in GPa from ``atoms.info`` or a stored stress; ``None`` if absent."""
    for key in PRESSURE_KEYS:
        if key in atoms.info:
            return float(atoms.info[key])
    calc = atoms.calc
    if calc is not None and "stress" in getattr(calc, "results", {}):
        stress = np.asarray(calc.results["stress"], dtype=float).reshape(-1)
        diagonal = stress[:3] if stress.size == 6 else stress.reshape(3, 3).diagonal()
        return float(-diagonal.mean() / GPa)
    return None


def frame_step(atoms: Atoms) -> float | None:
    """MD step of a frame from ``atoms.info`` (keys :data:`STEP_KEYS`); ``None`` if absent."""
    for key in STEP_KEYS:
        if key in atoms.info:
            return float(atoms.info[key])
    return None
