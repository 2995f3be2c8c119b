"""ASE calculator for MTPs: ``MTPCalculator(potential_or_path, species=[...])``.

Gives energy, free_energy (eV), per-atom energies (eV), forces (eV/Å) and stress
(eV/Å³, ASE Voigt order xx yy zz yz xz xy; only for cells periodic in 3D).
``species`` maps MLIP type indices to elements: ``species[t]`` is the element of type t.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.data import atomic_numbers

from mtpjax.errors import InputError
from mtpjax.io.mtp_file import read_mtp
from mtpjax.model import ModelSpec
from mtpjax.neighbors import allocate, compact, in_range, needs_rebuild, update
from mtpjax.padding import bucket_size, pad_atoms
from mtpjax.potential import Neighbors, energy_forces_virial, pair_vectors, site_energies
from mtpjax.potential_data import MTPotential
from mtpjax.precision import highest_precision

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from mtpjax.grade import Grader


def types_from_numbers(numbers, species: list[str]) -> np.ndarray:
    """MLIP type index of each atom, int [N]; ``ValueError`` for an element not in ``species``."""
    table = np.full(max(atomic_numbers.values()) + 1, -1, dtype=np.int32)
    for t, s in enumerate(species):
        table[atomic_numbers[s]] = t
    numbers = np.asarray(numbers, dtype=np.int64)
    types = table[np.clip(numbers, 0, len(table) - 1)]  # vectorised: called on every evaluation
    bad = (types < 0) | (numbers < 0) | (numbers >= len(table))
    if bad.any():
        from ase.data import chemical_symbols

        names = ", ".join(chemical_symbols[z] if 0 <= z < len(chemical_symbols) else str(z)
                          for z in sorted({int(z) for z in numbers[bad]}))
        raise ValueError(f"element(s) {names} not in the potential's species {species}")
    return types


def _check_species(species, species_count: int) -> list[str]:
    if species is None:
        raise ValueError("species is required: a list of element symbols, one per MLIP type")
    species = [species] if isinstance(species, str) else list(species)
    for s in species:
        if s not in atomic_numbers:
            raise ValueError(f"unknown element symbol {s!r} in species")
    if len(species) != species_count:
        raise ValueError(
            f"species lists {len(species)} element(s) but the potential has "
            f"species_count = {species_count}"
        )
    if len(set(species)) != len(species):
        raise ValueError(f"species has duplicates: {species}")
    return species


#: the packed list evaluated on the device holds the pairs within cutoff + INNER_SKIN_A (Å) of
#: where it was packed; it is repacked (host, numpy, from the skin list) once an atom moved more
#: than INNER_SKIN_A / 2
INNER_SKIN_A = 0.1
#: extra reach (Å) of the packing, so that float32 rounding on the device never meets a pair
#: the host left out (the energy applies the exact cutoff itself)
PACK_MARGIN_A = 1e-4


@lru_cache(maxsize=32)
def compiled_functions(spec: ModelSpec):
    """Jit-compiled ``(efv, sites)`` of a model, once per spec in a process (every evaluator
    and calculator of the same model shares their compilations).

    ``efv(params, positions, cell, types, neighbors, atom_mask) -> (E, F, V)`` and
    ``sites(params, positions, cell, types, neighbors) -> site energies`` (eV, eV/Å, eV).
    """
    efv = jax.jit(highest_precision(
        lambda p, x, c, t, n, m: energy_forces_virial(spec, p, x, c, t, n, atom_mask=m)
    ))
    sites = jax.jit(highest_precision(
        lambda p, x, c, t, n: site_energies(spec, p, pair_vectors(x, c, n), t, t[n.idx], n.mask)
    ))
    return efv, sites


class MTPEvaluator:
    """Jit-compiled energy/forces/virial for one potential, with cached neighbour lists.

    Two Verlet levels, both on the host in numpy (no eager device ops): the skin list (all pairs
    within cutoff + ``skin``, by a cell-list search) is reused while atoms moved less than
    skin/2, else rebuilt; from it, the pairs within cutoff + :data:`INNER_SKIN_A` are packed into
    ``[n_pad, J]`` buffers on the device (`mtpjax.neighbors.in_range`, `compact`), reused while
    atoms moved less than INNER_SKIN_A/2. So the skin costs no pair work on the device, and most
    calls transfer positions and cell only. n_pad and J are shape buckets (~19 % apart); J only
    grows for a given system, so positions-only changes compile nothing after the first call
    (unless an atom gains neighbours past J's bucket: then one compile for the next bucket).

    Args:
        potential: :class:`MTPotential` or path to an ``.mtp`` file.
        dtype: ``"float64"`` (default; parity with mlp) or ``"float32"``.
        skin: neighbour-list skin (Å) for reuse between nearby geometries.
    """

    def __init__(self, potential: MTPotential | str | os.PathLike, dtype: str = "float64",
                 skin: float = 0.5) -> None:
        pot = potential if isinstance(potential, MTPotential) else read_mtp(potential)
        if not pot.is_trained:
            raise InputError(
                "the potential has no coefficients (an untrained template?); expected a trained "
                ".mtp (radial_coeffs, species_coeffs, moment_coeffs)",
                None if isinstance(potential, MTPotential) else potential,
            )
        if dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
        self.potential = pot
        self.spec = ModelSpec.from_potential(pot)
        self.dtype = dtype
        self.skin = float(skin)
        self._params_np = pot.params()
        self._nl = None
        self._nl_host = None  # (NeighborList, its Neighbors as numpy arrays)
        self._capacity = 0  # columns J of the packed neighbours; grows only, reset per system
        # device-side caches, so that a positions-only call transfers little: parameters per
        # dtype; packed neighbours while the pairs in range stay the same; padded types and
        # atom mask per type array
        self._params_dev: dict[str, dict] = {}
        self._nbrs_dev = None  # (NeighborList, n_pad, packed positions, cell, device Neighbors)
        self._types_dev = None  # (types, n_pad, device types, device atom mask)
        self._efv, self._sites = compiled_functions(self.spec)

    def _x64(self):
        return jax.enable_x64(self.dtype == "float64")

    def neighbors(self, positions, cell, pbc):
        """Neighbour list for this geometry, reused (skin) or rebuilt as needed."""
        nl = self._nl
        if (
            nl is None
            or len(nl.reference_positions) != len(positions)
            or not np.array_equal(nl.pbc, pbc)
        ):
            nl = allocate(
                positions, cell, pbc, self.spec.cutoff, self.skin, capacity_multiplier=1.2
            )
            self._capacity = 0  # a new system: size the packed neighbours afresh
        else:
            nl = update(nl, positions, cell)
        self._nl = nl
        return nl.neighbors

    def compute(self, positions, cell, pbc, types, per_atom: bool = False) -> dict:
        """Energy (eV), forces [N, 3] (eV/Å), virial dE/dε [3, 3] (eV), optional site energies
        ``energies`` [N] (eV). Arrays are padded to shape buckets so that compiles stay few."""
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        types = np.asarray(types, dtype=np.int32)
        n = len(positions)
        if types.shape != (n,):
            raise ValueError(f"types has shape {types.shape}, expected ({n},)")
        if types.size and (types.min() < 0 or types.max() >= self.spec.species_count):
            raise ValueError(
                f"type index {int(types.max() if types.max() >= 0 else types.min())} out of "
                f"range: the potential has species_count = {self.spec.species_count}"
            )
        self.neighbors(positions, cell, pbc)
        n_pad = bucket_size(n)
        nbrs_p = self._device_neighbors(positions, cell, n_pad)
        pos_p = np.zeros((n_pad, 3), dtype=np.float64)
        pos_p[:n] = positions
        with self._x64():
            dt = jnp.float64 if self.dtype == "float64" else jnp.float32
            params = self._device_params()
            x = jnp.asarray(pos_p, dt)
            c = jnp.asarray(cell, dt)
            types_p, atom_mask = self._device_types(types, n_pad)
            energy, forces, virial = self._efv(params, x, c, types_p, nbrs_p, atom_mask)
            out = {
                "energy": float(energy),
                "forces": np.asarray(forces, dtype=np.float64)[:n],
                "virial": np.asarray(virial, dtype=np.float64),
            }
            if per_atom:
                sites = self._sites(params, x, c, types_p, nbrs_p)
                out["energies"] = np.asarray(sites, dtype=np.float64)[:n]
        if not (np.isfinite(out["energy"]) and np.all(np.isfinite(out["forces"]))):
            raise FloatingPointError("MTP evaluation produced NaN or infinite values")
        return out

    def _device_params(self) -> dict:
        """The potential's parameters as device arrays of this evaluator's dtype (cached)."""
        params = self._params_dev.get(self.dtype)
        if params is None:
            dt = jnp.float64 if self.dtype == "float64" else jnp.float32
            params = {k: jnp.asarray(v, dt) for k, v in self._params_np.items()}
            self._params_dev[self.dtype] = params
        return params

    def _device_types(self, types: np.ndarray, n_pad: int):
        """Padded types int [n_pad] and atom mask bool [n_pad] on the device (cached)."""
        cached = self._types_dev
        if cached is None or cached[1] != n_pad or not np.array_equal(cached[0], types):
            _, types_p, atom_mask = pad_atoms(np.zeros((len(types), 3)), types, n_pad)
            cached = (types.copy(), n_pad, jnp.asarray(types_p), jnp.asarray(atom_mask))
            self._types_dev = cached
        return cached[2], cached[3]

    def _device_neighbors(self, positions: np.ndarray, cell: np.ndarray, n_pad: int) -> Neighbors:
        """The skin list's pairs within cutoff + INNER_SKIN_A, packed to [n_pad, J] on the
        device (J: a bucket that only grows); reused while atoms moved < INNER_SKIN_A / 2."""
        nl = self._nl
        inner = min(INNER_SKIN_A, self.skin)
        cached = self._nbrs_dev
        if (cached is not None and cached[0] is nl and cached[1] == n_pad
                and not needs_rebuild(cached[2], cached[3], positions, cell, inner,
                                      nl.shift_bound)):
            return cached[4]
        if self._nl_host is None or self._nl_host[0] is not nl:
            self._nl_host = (nl, Neighbors(*(np.asarray(a) for a in nl.neighbors)))
        host = self._nl_host[1]
        inside = in_range(host, positions, cell, self.spec.cutoff + inner + PACK_MARGIN_A)
        count = int(inside.sum(axis=1).max(initial=0))
        self._capacity = max(self._capacity, bucket_size(max(count, 1), minimum=16))
        dev = Neighbors(*(jnp.asarray(a) for a in compact(host, inside, self._capacity, n_pad)))
        self._nbrs_dev = (nl, n_pad, positions.copy(), cell.copy(), dev)
        return dev


class MTPCalculator(Calculator):
    """ASE calculator for an MLIP-2 compatible MTP.

    Args:
        potential_or_path: :class:`MTPotential` or path to an ``.mtp`` file.
        species: element symbols, ``species[t]`` = element of MLIP type t.
        dtype: ``"float64"`` (default) or ``"float32"`` (≈1e-6 relative accuracy).
        skin: neighbour-list skin (Å): the list is rebuilt once an atom moved skin/2. It costs
            no device work (only pairs within cutoff + 0.1 Å are evaluated), only host work on
            a rebuild and a repack, hence a larger default than :class:`MTPEvaluator`'s (whose
            batch commands rebuild for every configuration anyway).
        active_set: for :meth:`grade`: a :class:`mtpjax.grade.Grader` or the path of a state
            saved by ``mtpjax calc-grade/select-add --als-filename`` (same potential).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self, potential_or_path: MTPotential | str | os.PathLike,
        species: Sequence[str] | str | None = None, dtype: str = "float64", skin: float = 1.0,
        active_set: Grader | str | os.PathLike | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(potential_or_path, (str, Path)) and not Path(potential_or_path).exists():
            raise FileNotFoundError(f"potential file not found: {potential_or_path}")
        self.evaluator = MTPEvaluator(potential_or_path, dtype=dtype, skin=skin)
        self.species = _check_species(species, self.evaluator.spec.species_count)
        self.active_set = None
        if active_set is not None:
            from mtpjax.grade import Grader

            grader = active_set if isinstance(active_set, Grader) else Grader.load(active_set)
            mine, theirs = self.evaluator.potential.params(), grader.potential.params()
            if any(not np.array_equal(mine[k], theirs[k]) for k in mine):
                raise InputError("the active set was selected with a different potential")
            self.active_set = grader

    def grade(self, atoms: Atoms | None = None) -> float:
        """MaxVol extrapolation grade γ of ``atoms`` (default: the attached atoms), as
        ``mlp calc-grade`` (needs ``active_set``); γ > 1 means extrapolation."""
        if self.active_set is None:
            raise ValueError("grade() needs an active set: MTPCalculator(..., active_set=PATH)")
        atoms = atoms if atoms is not None else self.atoms
        if atoms is None:
            raise ValueError("no atoms to grade")
        return self.active_set.grade_atoms(atoms, self.species)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        types = types_from_numbers(atoms.numbers, self.species)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        result = self.evaluator.compute(
            atoms.positions, cell, pbc, types, per_atom="energies" in properties
        )
        self.results["energy"] = result["energy"]
        self.results["free_energy"] = result["energy"]
        self.results["forces"] = result["forces"]
        if "energies" in result:
            self.results["energies"] = result["energies"]
        if pbc.all():
            volume = abs(np.linalg.det(cell))
            s = result["virial"] / volume
            self.results["stress"] = np.array(
                [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]]
            )
        # no stress for cells not periodic in 3D: ASE then raises its "property not
        # implemented" error from get_stress(), as for any calculator lacking a result
