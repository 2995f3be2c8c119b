"""Training data: reading, checking, neighbour precomputation and padding into shape buckets.

Pipeline (all on the host, numpy; nothing here touches JAX):

1. :func:`read_samples` reads an MLIP ``.cfg``, any ASE-readable file (extxyz with
   ``REF_energy``/``REF_forces``/``REF_stress`` or plain ``energy``/``forces``/``stress``)
   or an ASE database (``.db``/``.json``/``.aselmdb``) into :class:`Sample` s, mapping elements to
   MLIP types through a ``species`` list (``species[t]`` is the element of type t).
2. :func:`check_samples` stops with :class:`TrainingDataError` (naming the file and the
   0-based configuration index) on NaN/inf labels or positions, missing forces when the force
   weight is > 0, missing energies when the energy weight is > 0, types beyond the potential's
   species. Stress labels are optional, as in ``mlp``: a configuration without one simply
   contributes no stress term.
3. :func:`precompute_neighbors` builds each configuration's neighbour list once
   (:func:`mtpjax.neighbors.pair_list` + :func:`~mtpjax.neighbors.pack`); image shifts are
   turned into Cartesian offsets S·cell, since cells do not change during a fit.
4. :func:`pack_buckets` groups configurations into *buckets* by neighbour capacity (rounded up
   to a multiple of ``capacity_step``) and, inside a bucket, concatenates whole
   configurations into fixed-size *groups* of ``atoms_per_group`` atoms (first-fit
   decreasing). Each bucket becomes one :class:`Batch` with arrays ``[G, A, ...]``. Compiles
   therefore happen once per bucket shape, and padding is only the tail of each group.

Units: Å, eV, eV/Å; the stress label is kept as the virial ∂E/∂ε (eV, 3×3), i.e.
ASE stress × volume = −MLIP ``PlusStress``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mtpjax.errors import InputError
from mtpjax.neighbors import pack, pair_list
from mtpjax.units import check_stress_magnitude

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))  # xx yy zz yz xz xy


class TrainingDataError(InputError):
    """Unusable training data: ``path`` (the file), ``line`` (the configuration's first line
    where known: ``BEGIN_CFG`` of a ``.cfg``, the frame's atom-count line of an extxyz) and a
    message naming the 0-based configuration index."""


@dataclass(eq=False)
class Sample:
    """One labelled configuration.

    Attributes:
        positions: float [N, 3] (Å). types: int [N] MLIP types. cell: float [3, 3] (rows).
        pbc: bool [3]. energy: eV or None. forces: float [N, 3] (eV/Å) or None.
        virial: float [3, 3] ∂E/∂ε (eV) or None. weight: per-configuration weight (≥ 0).
        source: file it came from. index: 0-based position in that file. line: its first line
            in that file (1-based) where known.
        neighbors: filled by :func:`precompute_neighbors`: (idx [N, J], offsets [N, J, 3],
            mask [N, J]) numpy arrays with J = the configuration's largest neighbour count.
    """

    positions: np.ndarray
    types: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    virial: np.ndarray | None = None
    weight: float = 1.0
    source: str = ""
    index: int = 0
    line: int | None = None
    neighbors: tuple | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def where(self) -> str:
        return f"{self.source}: configuration {self.index}"

    def error(self, message: str) -> TrainingDataError:
        """A :class:`TrainingDataError` located at this configuration."""
        return TrainingDataError(f"configuration {self.index}: {message}", self.source or None,
                                 self.line)

    @property
    def max_neighbors(self) -> int:
        if self.neighbors is None:
            raise ValueError("neighbours not computed yet (call precompute_neighbors)")
        return int(self.neighbors[2].sum(axis=1).max()) if len(self) else 0


# ----------------------------------------------------------------------------- reading


def _voigt_to_matrix(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    if v.size == 9:
        return v.reshape(3, 3)
    if v.size != 6:
        raise ValueError(f"stress must have 6 (Voigt) or 9 components, got {v.size}")
    m = np.zeros((3, 3))
    for k, (a, b) in enumerate(VOIGT):
        m[a, b] = m[b, a] = v[k]
    return m


def _from_cfg(path: Path, species_count: int | None, stress_factor: float = 1.0
              ) -> list[Sample]:
    """Samples of a ``.cfg``; ``PlusStress`` (eV, or UNIT·Å³) × ``stress_factor`` → eV."""
    from mtpjax.io.cfg import read_cfg

    samples = []
    for n, cfg in enumerate(read_cfg(path)):
        types = np.asarray(cfg.types, dtype=np.int32)
        if species_count is not None and len(types) and types.max() >= species_count:
            atom = int(np.argmax(types >= species_count))
            raise cfg.error(
                f"atom type {int(types[atom])} but the potential has species_count = "
                f"{species_count} (expected types 0..{species_count - 1})", atom=atom)
        virial = None
        if cfg.plus_stress is not None:
            virial = -_voigt_to_matrix(cfg.plus_stress) * stress_factor
        cell = np.zeros((3, 3)) if cfg.cell is None else np.asarray(cfg.cell, np.float64)
        samples.append(Sample(
            positions=np.asarray(cfg.positions, np.float64), types=types, cell=cell,
            pbc=np.asarray(cfg.pbc, bool), energy=cfg.energy,
            forces=None if cfg.forces is None else np.asarray(cfg.forces, np.float64),
            virial=virial, source=str(path), index=n, line=cfg.line,
        ))
    return samples


def _first(mapping, keys):
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return None


#: where labels are looked for in an ASE frame, in this order (info/arrays keys, then the
#: attached calculator's results)
ENERGY_KEYS = ("REF_energy", "energy")
FORCE_KEYS = ("REF_forces", "forces")
STRESS_KEYS = ("REF_stress", "stress")


def _from_atoms(atoms, n: int, path: Path, table: dict, line: int | None = None,
                stress_factor: float = 1.0) -> Sample:
    """A sample from an ASE frame; ``stress`` (× ``stress_factor`` → eV/Å³, ASE sign) × V."""
    from ase.data import chemical_symbols

    def fail(msg):
        return TrainingDataError(f"configuration {n}: {msg}", path, line)

    numbers = atoms.get_atomic_numbers()
    unknown = sorted({int(z) for z in numbers} - set(table))
    if unknown:
        names = ", ".join(chemical_symbols[z] for z in unknown)
        species = [chemical_symbols[z] for z, _ in sorted(table.items(), key=lambda kv: kv[1])]
        raise fail(f"element(s) {names} not in species {species}")
    types = np.asarray([table[int(z)] for z in numbers], dtype=np.int32)
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    energy = _first(atoms.info, ENERGY_KEYS)
    if energy is None:
        energy = _first(results, ("energy", "free_energy"))
    forces = _first(atoms.arrays, FORCE_KEYS)
    if forces is None:
        forces = results.get("forces")
    stress = _first(atoms.info, STRESS_KEYS)
    if stress is None:
        stress = results.get("stress")
    pbc = np.asarray(atoms.pbc, bool)
    cell = np.asarray(atoms.cell.array, np.float64)
    try:
        energy = None if energy is None else float(energy)
    except (TypeError, ValueError):
        raise fail(f"energy label {energy!r} is not a number") from None
    virial = None
    if stress is not None and pbc.all():
        try:
            virial = _voigt_to_matrix(stress) * stress_factor * abs(np.linalg.det(cell))
        except ValueError as exc:
            raise fail(str(exc)) from exc
    return Sample(
        positions=np.asarray(atoms.positions, np.float64), types=types, cell=cell, pbc=pbc,
        energy=energy,
        forces=None if forces is None else np.asarray(forces, np.float64),
        virial=virial, source=str(path), index=n, line=line,
    )


def species_table(species) -> dict[int, int]:
    """Atomic number → MLIP type for ``species`` (list of element symbols)."""
    from ase.data import atomic_numbers

    if species is None:
        return {}
    species = [species] if isinstance(species, str) else list(species)
    table = {}
    for t, s in enumerate(species):
        if s not in atomic_numbers:
            raise TrainingDataError(f"unknown element symbol {s!r} in species {species}; "
                                    "expected element symbols such as Si")
        if atomic_numbers[s] in table:
            raise TrainingDataError(f"species has duplicates: {species}")
        table[atomic_numbers[s]] = t
    return table


def read_samples(path, species=None, species_count: int | None = None, *,
                 stress_unit: str = "eV/A3", stress_sign: str = "ase") -> list[Sample]:
    """Read labelled configurations from ``path``.

    Args:
        path: ``.cfg`` (MLIP), ``.db``/``.json``/``.aselmdb`` (ASE database) or any format
            :func:`ase.io.read` understands (extxyz, ...).
        species: element symbols by MLIP type, needed for every format but ``.cfg``. With
            ``None`` and ``species_count == 1``, a file holding a single element maps it to
            type 0.
        species_count: the potential's C (checks ``.cfg`` types and the ``species`` length).
        stress_unit: unit of the stress labels as written: ``"eV/A3"`` (default), ``"GPa"``
            or ``"kbar"``; a ``.cfg`` ``PlusStress`` is then in UNIT·Å³ (eV by default).
        stress_sign: ``"ase"`` (default, positive under tension) or ``"vasp"`` (positive under
            compression) for extxyz/ASE ``stress`` labels; ``.cfg`` ``PlusStress`` always
            follows mlp's convention (see docs/units.md).
    Raises:
        TrainingDataError: unreadable or empty file, unknown elements (the message names the file).
    """
    from mtpjax.units import stress_factor as _stress_factor

    path = Path(path)
    if not path.exists():
        raise TrainingDataError("no such file", path)
    try:
        factor = _stress_factor(stress_unit, stress_sign)
    except ValueError as exc:
        raise TrainingDataError(str(exc)) from exc
    if species is not None and species_count is not None:
        n_species = 1 if isinstance(species, str) else len(species)
        if n_species != species_count:
            raise TrainingDataError(
                f"species {species} lists {n_species} element(s) but the potential has "
                f"species_count = {species_count}"
            )
    suffix = path.suffix.lower()
    try:
        if suffix == ".cfg":
            samples = _from_cfg(path, species_count, _stress_factor(stress_unit))
        else:
            if suffix in (".db", ".aselmdb") or (suffix == ".json" and _is_ase_db(path)):
                import ase.db

                with ase.db.connect(str(path)) as db:
                    frames = [row.toatoms(add_additional_information=True) for row in db.select()]
                for atoms in frames:  # key_value_pairs land in info["key_value_pairs"]
                    kvp = atoms.info.pop("key_value_pairs", {}) or {}
                    atoms.info.update(kvp)
                    data = atoms.info.pop("data", {}) or {}
                    for key in ("REF_forces", "forces"):
                        if key in data:
                            atoms.arrays[key] = np.asarray(data[key])
                    for key in ("REF_stress", "stress"):
                        if key in data:
                            atoms.info[key] = np.asarray(data[key])
            else:
                import ase.io

                frames = ase.io.read(str(path), index=":")
            table = species_table(species)
            if not table:
                numbers = sorted({int(z) for a in frames for z in a.get_atomic_numbers()})
                if species_count == 1 and len(numbers) == 1:
                    table = {numbers[0]: 0}
                elif frames:
                    raise TrainingDataError(
                        "a species list is needed to map elements to MLIP types "
                        "(--species, e.g. --species Si)", path)
            lines = _frame_lines(frames) if suffix in (".xyz", ".extxyz") else None
            samples = [_from_atoms(a, n, path, table, lines[n] if lines else None, factor)
                       for n, a in enumerate(frames)]
    except TrainingDataError:
        raise
    except InputError as exc:  # a .cfg format error: keep its file and line
        raise TrainingDataError(exc.message, exc.path, exc.line) from exc
    except Exception as exc:  # parser errors of any reader: name the file
        raise TrainingDataError(f"cannot read training data: {exc}", path) from exc
    if not samples:
        raise TrainingDataError("no configurations (empty file)", path)
    return samples


def _frame_lines(frames) -> list[int]:
    """1-based line of each (ext)xyz frame's atom-count line (frames are N + 2 lines)."""
    out, line = [], 1
    for atoms in frames:
        out.append(line)
        line += len(atoms) + 2
    return out


def _is_ase_db(path: Path) -> bool:
    try:
        with open(path) as fh:
            head = fh.read(200)
        return '"ids"' in head or '"nextid"' in head or head.lstrip().startswith('{"1"')
    except OSError:
        return False


# ----------------------------------------------------------------------------- checking


def check_samples(samples: list[Sample], *, energy_weight: float = 1.0,
                  force_weight: float = 0.01, species_count: int | None = None,
                  stress_unit: str = "eV/A3") -> None:
    """Validate before any compute; raise :class:`TrainingDataError` naming file and index.

    Besides finiteness and shapes, a stress label (virial / volume, eV/Å³) beyond
    :data:`mtpjax.units.MAX_PLAUSIBLE_STRESS` is refused as being in the wrong unit
    (``stress_unit`` is the unit the labels were read in, for the message)."""
    if not samples:
        raise TrainingDataError("no training configurations")
    for s in samples:
        if len(s) == 0:
            raise s.error("no atoms")
        if not np.all(np.isfinite(s.positions)):
            raise s.error("positions contain NaN or infinite values")
        if not np.all(np.isfinite(s.cell)):
            raise s.error("cell contains NaN or infinite values")
        if species_count is not None and s.types.max() >= species_count:
            raise s.error(f"atom type {int(s.types.max())} but the potential has species_count "
                          f"= {species_count} (expected types 0..{species_count - 1})")
        if s.energy is not None and not np.isfinite(s.energy):
            raise s.error("energy label is NaN or infinite")
        if s.energy is None and energy_weight > 0:
            raise s.error(f"no energy label (looked for {', '.join(ENERGY_KEYS)} and a "
                          f"calculator's energy) but the energy weight is {energy_weight}")
        if s.forces is not None:
            if s.forces.shape != s.positions.shape:
                raise s.error(f"forces have shape {s.forces.shape}, expected "
                              f"{s.positions.shape}")
            if not np.all(np.isfinite(s.forces)):
                atom = int(np.argwhere(~np.isfinite(s.forces))[0][0])
                raise s.error(f"force label of atom {atom} is NaN or infinite")
        elif force_weight > 0:
            raise s.error(f"no force labels (looked for {', '.join(FORCE_KEYS)} and a "
                          f"calculator's forces) but the force weight is {force_weight} "
                          "(use --force-weight=0 to fit energies only)")
        if s.virial is not None and not np.all(np.isfinite(s.virial)):
            raise s.error("stress label is NaN or infinite")
        if s.virial is not None and np.all(s.pbc):
            volume = abs(np.linalg.det(s.cell))
            if volume > 0:
                try:
                    check_stress_magnitude(s.virial / volume, stress_unit)
                except ValueError as exc:
                    raise s.error(str(exc)) from None
        if not (np.isfinite(s.weight) and s.weight >= 0):
            raise s.error(f"weight must be finite and ≥ 0, got {s.weight}")


# ----------------------------------------------------------------------------- neighbours


def precompute_neighbors(samples: list[Sample], cutoff: float) -> None:
    """Build each sample's neighbour arrays once (in place; skipped when already present)."""
    for s in samples:
        if s.neighbors is not None and s.neighbors[3] == cutoff:
            continue
        try:
            i, j, S = pair_list(s.positions, s.cell, s.pbc, cutoff)
        except ValueError as exc:
            raise s.error(exc.message if isinstance(exc, InputError) else str(exc)) from exc
        nbrs, max_count = pack(i, j, S, len(s), None)
        offsets = nbrs.shifts @ s.cell  # [N, J, 3] Cartesian image offsets
        s.neighbors = (nbrs.idx, offsets, nbrs.mask, cutoff)


# ----------------------------------------------------------------------------- packing


class Batch(NamedTuple):
    """Padded groups of whole configurations (a JAX pytree; every leaf has leading axis G).

    A group holds A atom slots and C configuration slots; slot C (one past the last) is the
    dump for padding atoms. Per group:

    positions float [A, 3]; offsets float [A, J, 3] (S·cell, Å); nbr_idx int [A, J] (group-local
    atom indices); nbr_mask bool [A, J]; types int [A]; atom_conf int [A] (configuration slot,
    C for padding); atom_mask bool [A]; energy float [C]; forces float [A, 3];
    virial float [C, 3, 3]; n_atoms float [C] (1 on empty slots); weight float [C]
    (0 on empty slots); has_energy, has_stress bool [C]; has_forces bool [A].
    """

    positions: np.ndarray
    offsets: np.ndarray
    nbr_idx: np.ndarray
    nbr_mask: np.ndarray
    types: np.ndarray
    atom_conf: np.ndarray
    atom_mask: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    virial: np.ndarray
    n_atoms: np.ndarray
    weight: np.ndarray
    has_energy: np.ndarray
    has_forces: np.ndarray
    has_stress: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(G, A, J, C)."""
        G, A, J = self.nbr_idx.shape
        return G, A, J, self.energy.shape[1]


def round_up(x: int, step: int) -> int:
    return int(-(-max(int(x), 1) // step) * step)


def bucket_size(x: int) -> int:
    """``x`` rounded up to the shape ladder 1..8, then 4 steps per doubling (10, 12, 14, 16,
    20, 24, 28, 32, 40, ...): at most 25 % padding, and data sets of similar size get the same
    array shapes (so the same compiled programs, see :mod:`mtpjax.fit.compile_cache`)."""
    x = max(int(x), 1)
    if x <= 8:
        return x
    step = 2 ** (x.bit_length() - 3)
    return round_up(x, step)


def group_configurations(sizes, atoms_per_group: int, order=None) -> list[list[int]]:
    """First-fit (decreasing unless ``order`` is given) of configurations into groups."""
    sizes = np.asarray(sizes)
    if order is None:
        order = np.argsort(-sizes, kind="stable")
    groups: list[list[int]] = []
    room: list[int] = []
    for k in order:
        n = int(sizes[k])
        if n > atoms_per_group:
            raise ValueError(f"configuration of {n} atoms > atoms_per_group {atoms_per_group}")
        for g, free in enumerate(room):
            if free >= n:
                groups[g].append(int(k))
                room[g] -= n
                break
        else:
            groups.append([int(k)])
            room.append(atoms_per_group - n)
    return groups


def pack_groups(samples: list[Sample], groups: list[list[int]], atoms_per_group: int,
                capacity: int, confs_per_group: int, n_groups: int | None = None,
                dtype=np.float64) -> Batch:
    """Pack ``groups`` (lists of sample indices) into a :class:`Batch` of fixed shape.

    ``n_groups`` ≥ len(groups) pads with empty groups (for a fixed G or a device multiple).
    """
    G = len(groups) if n_groups is None else int(n_groups)
    if G < len(groups):
        raise ValueError(f"{len(groups)} groups do not fit in n_groups = {G}")
    A, J, C = atoms_per_group, capacity, confs_per_group
    b = dict(
        positions=np.zeros((G, A, 3), dtype), offsets=np.zeros((G, A, J, 3), dtype),
        nbr_idx=np.tile(np.arange(A, dtype=np.int32)[None, :, None], (G, 1, J)),
        nbr_mask=np.zeros((G, A, J), bool), types=np.zeros((G, A), np.int32),
        atom_conf=np.full((G, A), C, np.int32), atom_mask=np.zeros((G, A), bool),
        energy=np.zeros((G, C), dtype), forces=np.zeros((G, A, 3), dtype),
        virial=np.zeros((G, C, 3, 3), dtype), n_atoms=np.ones((G, C), dtype),
        weight=np.zeros((G, C), dtype), has_energy=np.zeros((G, C), bool),
        has_forces=np.zeros((G, A), bool), has_stress=np.zeros((G, C), bool),
    )
    for g, members in enumerate(groups):
        if len(members) > C:
            raise ValueError(f"group {g} has {len(members)} configurations > {C} slots")
        start = 0
        for c, k in enumerate(members):
            s = samples[k]
            idx, offsets, mask = s.neighbors[:3]
            n, jn = idx.shape
            if jn > J and mask[:, J:].any():
                raise ValueError(f"{s.where}: {mask.sum(1).max()} neighbours > capacity {J}")
            jn = min(jn, J)
            sl = slice(start, start + n)
            b["positions"][g, sl] = s.positions
            b["offsets"][g, sl, :jn] = offsets[:, :jn]
            b["nbr_idx"][g, sl, :jn] = idx[:, :jn] + start
            b["nbr_mask"][g, sl, :jn] = mask[:, :jn]
            b["types"][g, sl] = s.types
            b["atom_conf"][g, sl] = c
            b["atom_mask"][g, sl] = True
            b["n_atoms"][g, c] = n
            b["weight"][g, c] = s.weight
            if s.energy is not None:
                b["energy"][g, c] = s.energy
                b["has_energy"][g, c] = True
            if s.forces is not None:
                b["forces"][g, sl] = s.forces
                b["has_forces"][g, sl] = True
            if s.virial is not None:
                b["virial"][g, c] = s.virial
                b["has_stress"][g, c] = True
            start += n
    return Batch(**b)


@dataclass
class Bucket:
    """Configurations sharing a neighbour capacity, packed into one :class:`Batch`."""

    capacity: int
    members: list[int]  # sample indices
    groups: list[list[int]]
    batch: Batch


def pack_buckets(samples: list[Sample], atoms_per_group: int | None = None,
                 capacity_step: int = 8, group_multiple: int = 1,
                 target_atoms: int = 4096, dtype=np.float64,
                 round_shapes: bool = False) -> list[Bucket]:
    """Pack all samples into buckets (one per rounded neighbour capacity).

    Args:
        atoms_per_group: A; default: per bucket, the fewest groups (a multiple of
            ``group_multiple``) of at most ``target_atoms`` atoms, filled as evenly as possible.
        capacity_step: neighbour capacities are rounded up to multiples of this.
        group_multiple: G of each bucket is padded to a multiple of this (the device count).
        round_shapes: round the group count G and the automatic atoms per group A up to
            :func:`bucket_size`, the configuration slots C to a power of two (the trainer
            does: a similar data set then reuses the compiled programs).
    """
    ladder = bucket_size if round_shapes else (lambda x: x)
    sizes = np.asarray([len(s) for s in samples])
    caps = np.asarray([round_up(s.max_neighbors, capacity_step) for s in samples])
    buckets = []
    for cap in sorted(set(caps.tolist())):
        members = [int(k) for k in np.flatnonzero(caps == cap)]
        local = None
        if atoms_per_group is None:  # per bucket: fewest groups of ≤ target_atoms, tight fit
            total, largest = int(sizes[members].sum()), int(sizes[members].max())
            n_groups = round_up(-(-total // max(target_atoms, largest)), group_multiple)
            A = ladder(round_up(max(-(-total // n_groups), largest), 8))
            while True:
                local = group_configurations(sizes[members], A)
                if len(local) <= n_groups:
                    break
                A += 8
        else:
            A = atoms_per_group
            local = group_configurations(sizes[members], A)
        groups = [[members[k] for k in g] for g in local]
        C = max(len(g) for g in groups)
        if round_shapes:  # configuration slots are cheap: a power of two
            C = 1 << (C - 1).bit_length()
        G = round_up(ladder(len(groups)), group_multiple)
        batch = pack_groups(samples, groups, A, cap, C, G, dtype)
        buckets.append(Bucket(cap, members, groups, batch))
    return buckets


def load_dataset(path, cutoff: float, species=None, species_count=None, *,
                 energy_weight: float = 1.0, force_weight: float = 0.01,
                 stress_unit: str = "eV/A3", stress_sign: str = "ase") -> list[Sample]:
    """read → check → neighbours, the usual entry point (see :func:`read_samples`)."""
    samples = read_samples(path, species=species, species_count=species_count,
                           stress_unit=stress_unit, stress_sign=stress_sign)
    check_samples(samples, energy_weight=energy_weight, force_weight=force_weight,
                  species_count=species_count, stress_unit=stress_unit)
    precompute_neighbors(samples, cutoff)
    return samples


def load_fit_data(pot, train, valid=None, *, species=None, energy_weight: float = 1.0,
                  force_weight: float = 0.01, stress_unit: str = "eV/A3",
                  stress_sign: str = "ase") -> tuple[list[Sample], list[Sample] | None]:
    """Training and validation samples for fitting ``pot`` (an :class:`MTPotential`): the
    paths ``train``/``valid`` (``.cfg``, extxyz, ASE db; ``valid`` may be None) read with
    :func:`load_dataset` at the potential's cutoff and species count. Used by
    ``mtpjax train`` and :func:`mtpjax.fit`."""
    kw = dict(cutoff=pot.max_dist, species=species, species_count=pot.species_count,
              energy_weight=energy_weight, force_weight=force_weight,
              stress_unit=stress_unit, stress_sign=stress_sign)
    train_samples = load_dataset(train, **kw)
    valid_samples = load_dataset(valid, **kw) if valid else None
    return train_samples, valid_samples


def split_validation(samples: list, fraction: float, seed: int = 0) -> tuple[list, list]:
    """(train, valid): ``round(fraction·n)`` (at least one) of the ``n`` configurations held out
    for validation, drawn without replacement from ``seed``; both keep the input order.

    Raises ValueError when the split leaves either part empty."""
    n = len(samples)
    k = max(1, round(fraction * n))
    if not 0.0 < fraction < 1.0 or k >= n:
        raise ValueError(f"valid_fraction {fraction} of {n} configuration(s) leaves no "
                         f"training or no validation configuration")
    held = np.zeros(n, bool)
    held[np.random.default_rng([seed, 13]).choice(n, k, replace=False)] = True
    return ([s for s, h in zip(samples, held, strict=True) if not h],
            [s for s, h in zip(samples, held, strict=True) if h])
