"""Starting structures shared by `mtpjax md` and the distillation pipeline.

* :func:`random_structure` — random atoms in a cubic cell at a density, all pairs ≥ a distance;
* :func:`build_structure` — the starting structure of a validated `mtpjax md` config (file,
  random packing or crystal).

Lengths in Å, densities in g/cm³.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from md.config import MDConfig


def random_structure(n_atoms: int, density_g_cm3: float, element: str = "Si",
                     min_distance_A: float = 2.0, seed: int = 0,
                     max_batches: int = 10000) -> Atoms:
    """Random atoms in a cubic cell at a given density with all distances ≥ ``min_distance_A``
    (periodic; sequential insertion in batches with a k-d tree)."""
    from ase.data import atomic_masses, atomic_numbers
    from scipy.spatial import cKDTree

    mass = atomic_masses[atomic_numbers[element]]
    length = (n_atoms * mass * 1.66053907 / density_g_cm3) ** (1.0 / 3.0)
    rng = np.random.default_rng(seed)
    accepted = np.zeros((0, 3))
    for _ in range(max_batches):
        if len(accepted) >= n_atoms:
            break
        cand = rng.random((max(16, n_atoms - len(accepted)), 3)) * length
        if len(accepted):
            d, _ = cKDTree(accepted, boxsize=length).query(cand, k=1)
            cand = cand[d >= min_distance_A]
        keep = []
        if len(cand):
            tree = cKDTree(cand, boxsize=length)
            dropped = set()
            for i, j in sorted(tree.query_pairs(min_distance_A)):
                if i not in dropped:
                    dropped.add(j)
            keep = [i for i in range(len(cand)) if i not in dropped]
        accepted = np.concatenate([accepted, cand[keep]])[:n_atoms]
    if len(accepted) < n_atoms:
        raise RuntimeError(
            f"could not place {n_atoms} atoms {min_distance_A} Å apart at {density_g_cm3} g/cm³")
    return Atoms(f"{element}{n_atoms}", positions=accepted, cell=np.eye(3) * length, pbc=True)


def build_structure(cfg: MDConfig) -> Atoms:
    """Starting structure of a config (file, random packing or crystal)."""
    s = cfg.structure
    if "file" in s:
        import ase.io

        from mtpjax.errors import InputError

        try:
            atoms = ase.io.read(s["file"], index=s.get("index", -1))
        except Exception as exc:
            raise InputError(f"cannot read structure ({exc})", s["file"]) from exc
        if not np.all(atoms.pbc) or atoms.cell.volume <= 0:
            raise InputError("the structure must be periodic in 3D (pbc T T T and a cell of "
                             "non-zero volume)", s["file"])
        from mtpjax.errors import GeometryError
        from mtpjax.neighbors import pair_list

        try:  # coincident atoms (< 1e-6 Å, images included) would give NaN forces at step 0
            pair_list(atoms.positions, atoms.cell.array, atoms.pbc, 1e-3)
        except GeometryError as exc:
            raise exc.located(s["file"], None, f"frame {s.get('index', -1)}: ") from exc
        return atoms
    if "random" in s:
        r = s["random"]
        return random_structure(r["n_atoms"], r["density_g_cm3"],
                                r.get("element", cfg.species[0]), r.get("min_distance_A", 2.0),
                                r.get("seed", 0))
    from ase.build import bulk

    r = s["crystal"]
    atoms = bulk(r.get("element", cfg.species[0]), r["name"], a=r["a_A"], cubic=True)
    return atoms.repeat(tuple(r.get("repeat", [1, 1, 1])))
