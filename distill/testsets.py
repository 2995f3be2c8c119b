"""Test sets made with the teacher: "RSS" random relaxed cells and compression-MD snapshots.

RSS (paper SM): random cells of 1–64 atoms, atoms ≥ 2 Å apart, 20 ± 5 Å³/atom, built with 1–4
symmetry operations (pyxtal is not needed: the orbit of random generating points under a small
point group — identity; inversion or a two-fold axis; a three-fold axis in a hexagonal cell;
2/m — is placed in a cell compatible with the group), then relaxed with the teacher (positions
and cell, ASE FIRE + FrechetCellFilter) at a pressure drawn from an exponential distribution of
width 5 GPa.

Compression: snapshots of small cells compressed by teacher MD (`distill.sampling`), kept where
the pressure lies in a window (paper: 64 atoms, 5–20 GPa).

Units: Å, Å³/atom, GPa, eV.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from ase import Atoms, units
from ase.geometry import get_distances

C2Z = np.diag([-1.0, -1.0, 1.0])
MZ = np.diag([1.0, 1.0, -1.0])
INV = -np.eye(3)
C3Z = np.array([[0.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 0.0, 1.0]])  # hexagonal basis

#: point groups by order, as (name, fractional rotation matrices, lattice kind)
GROUPS = {
    1: [("1", [np.eye(3)], "triclinic")],
    2: [("-1", [np.eye(3), INV], "triclinic"), ("2", [np.eye(3), C2Z], "monoclinic")],
    3: [("3", [np.eye(3), C3Z, C3Z @ C3Z], "hexagonal")],
    4: [("2/m", [np.eye(3), C2Z, INV, MZ], "monoclinic")],
}


@dataclasses.dataclass(frozen=True)
class RSSSettings:
    """Random-cell settings (paper values as defaults). Volumes Å³/atom, distances Å, GPa."""

    n_structures: int = 100
    min_atoms: int = 1
    max_atoms: int = 64
    volume_per_atom: float = 20.0
    volume_spread: float = 5.0
    min_distance: float = 2.0
    max_ops: int = 4
    pressure_scale_GPa: float = 5.0
    relax_steps: int = 200
    fmax: float = 0.05
    max_tries: int = 200


def lattice(kind: str, volume: float, rng: np.random.Generator) -> np.ndarray:
    """A random cell (rows = vectors, Å) of `volume` Å³ compatible with the lattice kind."""
    ratios = rng.uniform(0.75, 1.35, size=3)
    if kind == "hexagonal":
        ratios[1] = ratios[0]
        angles = np.radians([90.0, 90.0, 120.0])
    elif kind == "monoclinic":  # two-fold axis and mirror along c: c ⟂ a, b
        angles = np.radians([90.0, 90.0, rng.uniform(65.0, 115.0)])
    else:
        angles = np.radians(rng.uniform(70.0, 110.0, size=3))
    from ase.geometry import cellpar_to_cell

    cell = cellpar_to_cell(np.concatenate([ratios, np.degrees(angles)]))
    return cell * (volume / abs(np.linalg.det(cell))) ** (1.0 / 3.0)


def orbit(points: np.ndarray, ops: list[np.ndarray], tol: float = 1e-3) -> np.ndarray:
    """Fractional coordinates of the orbits of `points` under `ops`, wrapped, duplicates merged."""
    out: list[np.ndarray] = []
    for p in points:
        for op in ops:
            q = (op @ p) % 1.0
            if not any(np.all(np.abs(((q - r) + 0.5) % 1.0 - 0.5) < tol) for r in out):
                out.append(q)
    return np.array(out)


def random_symmetric_cell(s: RSSSettings, rng: np.random.Generator, symbol: str = "Si"):
    """One random cell satisfying `s` (atoms ≥ min_distance apart), or None after max_tries.

    Returns (Atoms, group name). The atom count is drawn uniformly in [min_atoms, max_atoms] and
    the group order uniformly in 1..max_ops (a group is used only where its orbits fit the count);
    the volume per atom uniformly in v ± spread. Generating points are inserted one at a time,
    each tried up to 50 times until its whole orbit keeps the minimum distance.
    """
    target = int(rng.integers(s.min_atoms, s.max_atoms + 1))
    for _ in range(s.max_tries):
        order = int(rng.integers(1, min(s.max_ops, target) + 1))
        name, ops, kind = GROUPS[order][int(rng.integers(len(GROUPS[order])))]
        n_gen = max(1, int(round(target / order)))
        n = n_gen * order
        if not s.min_atoms <= n <= s.max_atoms:
            continue
        v = rng.uniform(s.volume_per_atom - s.volume_spread, s.volume_per_atom + s.volume_spread)
        cell = lattice(kind, v * n, rng)
        frac = np.zeros((0, 3))
        for _ in range(n_gen):
            for _ in range(50):
                new = orbit(rng.random((1, 3)), ops)
                if len(new) != order:  # on a special position: skip
                    continue
                trial = np.concatenate([frac, new])
                atoms = Atoms(f"{symbol}{len(trial)}", scaled_positions=trial, cell=cell,
                              pbc=True)
                if min_distance(atoms) >= s.min_distance:
                    frac = trial
                    break
            else:
                break
        if len(frac) == n:
            atoms = Atoms(f"{symbol}{n}", scaled_positions=frac, cell=cell, pbc=True)
            atoms.info["rss_group"] = name
            return atoms, name
    return None


def min_distance(atoms: Atoms) -> float:
    """Smallest periodic interatomic distance in Å (self-images included for tiny cells)."""
    d = np.inf
    if len(atoms) > 1:
        _, dist = get_distances(atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        d = np.min(dist[~np.eye(len(atoms), dtype=bool)])
    lengths = atoms.cell.lengths()
    reciprocal = 1.0 / np.linalg.norm(np.linalg.inv(atoms.cell.array).T, axis=1)
    return float(min(d, *lengths, *reciprocal))


def relax(atoms: Atoms, calc, pressure_GPa: float, fmax: float, steps: int) -> Atoms:
    """Relax positions and cell with the teacher at `pressure_GPa`; raises on non-finite results."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    if hasattr(calc, "set_default_properties"):  # quippy: virial in the same call as forces
        calc.set_default_properties(["energy", "forces", "stress"])
    atoms = atoms.copy()
    atoms.calc = calc
    FIRE(FrechetCellFilter(atoms, scalar_pressure=pressure_GPa * units.GPa), logfile=None).run(
        fmax=fmax, steps=steps
    )
    energy = atoms.get_potential_energy()
    if not (np.isfinite(energy) and np.all(np.isfinite(atoms.positions))):
        raise FloatingPointError("relaxation diverged")
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
    out.info.update(atoms.info)
    return out


def rss_set(calc, s: RSSSettings, seed: int = 0, progress=None, done: Sequence = (),
            on_result=None) -> tuple[list[Atoms], dict]:
    """`s.n_structures` random cells relaxed by `calc`; returns (cells, statistics).

    Each cell carries ``info``: rss_group, rss_pressure_GPa (target). A cell whose relaxation
    raises is dropped and counted in statistics["failed"]; a cell that could not be built within
    `s.max_tries` in statistics["unbuilt"].

    Attempt i's outcome is its relaxed cell, "failed" or "unbuilt". Resuming: `done` holds the
    outcomes of the first ``len(done)`` attempts of an earlier call with the same `calc`, `s`
    and `seed`; those are not relaxed again (their random cells are still drawn, so the later
    attempts get the cells an uninterrupted call would). `on_result(i, outcome)` receives every
    new attempt's outcome as soon as it is known; `progress(i)` is called after it.
    """
    rng = np.random.default_rng(seed)
    outcomes: list = list(done)[: s.n_structures]
    for i in range(s.n_structures):
        made = random_symmetric_cell(s, rng)
        p = None if made is None else float(rng.exponential(s.pressure_scale_GPa))
        if i < len(outcomes):
            continue  # known from `done`
        if made is None:
            outcome = "unbuilt"
        else:
            atoms, _ = made
            atoms.info["rss_pressure_GPa"] = p
            try:
                outcome = relax(atoms, calc, p, s.fmax, s.relax_steps)
            except Exception:  # noqa: BLE001 - a teacher failure drops one cell, not the set
                outcome = "failed"
        outcomes.append(outcome)
        if on_result is not None:
            on_result(i, outcome)
        if progress is not None:
            progress(i)
    cells = [o for o in outcomes if isinstance(o, Atoms)]
    stats = {
        "n": len(cells),
        "failed": sum(1 for o in outcomes if isinstance(o, str) and o == "failed"),
        "unbuilt": sum(1 for o in outcomes if isinstance(o, str) and o == "unbuilt"),
        "atoms": int(sum(len(a) for a in cells)),
    }
    return cells, stats


def in_pressure_window(snapshots: list[Atoms], p_min: float, p_max: float) -> list[Atoms]:
    """Snapshots whose ``info["pressure_GPa"]`` lies in [p_min, p_max] GPa."""
    return [a for a in snapshots if p_min <= a.info.get("pressure_GPa", np.nan) <= p_max]
