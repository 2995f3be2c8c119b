"""The functions of mtpjax's public API (``from mtpjax import ...``; see :mod:`mtpjax`).

Thin layers over the modules that do the work: :mod:`mtpjax.io.mtp_file` (reading and
writing ``.mtp`` files), :mod:`mtpjax.potential` (the energy/forces/virial path) and
:mod:`mtpjax.fit` (the trainer behind ``mtpjax train``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import jax

    from mtpjax.fit.data import Sample
    from mtpjax.fit.trainer import FitConfig
    from mtpjax.model import ModelSpec
    from mtpjax.potential import Neighbors
    from mtpjax.potential_data import MTPotential

PathLike = str | os.PathLike


def read_potential(path: PathLike) -> MTPotential:
    """Read an MLIP-2 ``.mtp`` file (trained or an untrained template) into an
    :class:`~mtpjax.potential_data.MTPotential`.

    Raises :class:`mtpjax.errors.InputError` (a ``FileFormatError``) naming the file and line
    for a malformed file.
    """
    from mtpjax.io.mtp_file import read_mtp

    return read_mtp(path)


def write_potential(path: PathLike, potential: MTPotential) -> None:
    """Write ``potential`` as an MLIP-2 ``.mtp`` file (17 significant digits: a write/read
    round trip keeps every float64 bit; ``mlp`` reads the file)."""
    from mtpjax.io.mtp_file import write_mtp

    write_mtp(path, potential)


def new_potential(level: int, species_count: int = 1, *, min_dist: float = 1.5,
                  max_dist: float = 5.0, radial_basis_size: int = 8,
                  radial_funcs_count: int | None = None,
                  radial_basis_type: str = "RBChebyshev") -> MTPotential:
    """The untrained MTP of basis ``level`` (even, 2..28) for ``species_count`` species, as
    ``mtpjax new`` writes it: the basis from the level formula
    (:func:`mtpjax.basis_generate.generate_basis`), no coefficients.

    Args:
        min_dist, max_dist: radial basis range in Å (max_dist is the cutoff).
        radial_basis_size: number of Chebyshev functions.
        radial_funcs_count: number of radial functions f_μ (None: as many as the basis uses;
            more is refused, as MLIP's reader refuses it).
        radial_basis_type: ``"RBChebyshev"`` or ``"RBChebyshev_repuls"``.
    """
    from mtpjax.basis_generate import generate_basis
    from mtpjax.potential_data import MTPotential

    basis = generate_basis(level)
    k = basis.radial_funcs_needed if radial_funcs_count is None else radial_funcs_count
    if k > basis.radial_funcs_needed:
        # MLIP-2's reader stops on such a file ("Wrong number of radial functions specified")
        raise ValueError(f"radial_funcs_count = {k}, but level {level} uses "
                         f"{basis.radial_funcs_needed} radial functions and MLIP's reader "
                         "requires exactly that many")
    return MTPotential(basis=basis, species_count=species_count, min_dist=min_dist,
                       max_dist=max_dist, radial_basis_size=radial_basis_size,
                       radial_funcs_count=k, radial_basis_type=radial_basis_type)


def energy_fn(spec: ModelSpec, params: dict[str, jax.Array], positions: jax.Array,
              cell: jax.Array, types: jax.Array, neighbors: Neighbors,
              atom_mask: jax.Array | None = None,
              block_size: int | str | None = "auto") -> tuple[jax.Array, jax.Array, jax.Array]:
    """Energy (eV), forces float [N, 3] (eV/Å) and virial ∂E/∂ε float [3, 3] (eV) of one
    configuration: the core path of mtpjax (:func:`mtpjax.potential.energy_forces_virial`),
    pure and jit-able; ``spec`` is static (close over it or mark it static).

    Args:
        spec: ``ModelSpec.from_potential(pot)`` (:mod:`mtpjax.model`).
        params: ``pot.params()`` as arrays (float64 for parity with ``mlp``).
        positions: float [N, 3] (Å). cell: float [3, 3], rows are lattice vectors.
        types: int [N], MLIP type indices.
        neighbors: padded neighbour list, e.g. ``mtpjax.neighbors.allocate(positions, cell,
            pbc, pot.max_dist).neighbors`` (host) or :mod:`mtpjax.cell_list` (device).
        atom_mask: bool [N], False for padding atoms (None: all real).
        block_size: atoms per block of the explicit reverse pass (``"auto"``: by backend).

    The ASE stress is ``virial / volume`` (eV/Å³); MLIP's PlusStress is ``−virial``. For
    ASE users :class:`mtpjax.MTPCalculator` wraps all of this.
    """
    from mtpjax.potential import energy_forces_virial

    return energy_forces_virial(spec, params, positions, cell, types, neighbors,
                                atom_mask=atom_mask, block_size=block_size)


def fit(potential: MTPotential | PathLike, train: PathLike | Sequence[Sample], *,
        valid: PathLike | Sequence[Sample] | None = None, species: Sequence[str] | None = None,
        config: FitConfig | None = None, workdir: PathLike | None = None,
        resume: bool = True, progress: bool = False, dtype: str = "float64",
        stress_unit: str = "eV/A3", stress_sign: str = "ase", **options: Any) -> MTPotential:
    """Train ``potential`` on a data set and return the trained :class:`MTPotential` (the best
    on ``valid`` when given, else on ``train``), as ``mtpjax train`` does.

    Args:
        potential: an untrained template (``init_params="random"``, the default) or a trained
            potential (``init_params="same"``): :class:`MTPotential` or ``.mtp`` path.
        train, valid: data files (``.cfg``, extxyz, ASE database) or already loaded samples
            (:func:`mtpjax.fit.load_dataset`).
        species: element of each MLIP type, for extxyz/ASE data (e.g. ``["Si"]``).
        config: a :class:`mtpjax.fit.FitConfig`; ``options`` override its fields
            (e.g. ``max_iter=200, force_weight=0.1, optimizer="lbfgs"``).
        workdir: where ``log.jsonl`` and ``checkpoint.npz`` go (None: no files); with
            ``resume`` a rerun continues from the checkpoint.
        progress: show a progress bar. dtype: ``"float64"`` (as mlp) or ``"float32"``.
        stress_unit, stress_sign: how the stress labels are written (docs/units.md).

    Raises:
        mtpjax.errors.InputError: bad data, options or an untrained potential with
            ``init_params="same"``.
        mtpjax.fit.StopTraining: training was interrupted (Ctrl-C); with ``workdir`` the
            checkpoint lets the same call resume.
    """
    import jax

    from mtpjax.errors import InputError
    from mtpjax.fit.data import load_fit_data
    from mtpjax.fit.trainer import FitConfig, StopTraining, Trainer
    from mtpjax.potential_data import MTPotential

    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    pot = potential if isinstance(potential, MTPotential) else read_potential(potential)
    values = dataclasses.asdict(config) if config is not None else {}
    values.update(options)
    try:
        config = FitConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad fit option: {exc}") from exc
    if config.init_params == "same" and not pot.is_trained:
        raise InputError("has no coefficients; use init_params='random'",
                         None if isinstance(potential, MTPotential) else potential)
    with jax.enable_x64(dtype == "float64"):
        def samples(data):
            if data is None or not isinstance(data, str | os.PathLike):
                return None if data is None else list(data)
            return load_fit_data(
                pot, data, species=species, energy_weight=config.energy_weight,
                force_weight=config.force_weight, stress_unit=stress_unit,
                stress_sign=stress_sign)[0]

        train_samples, valid_samples = samples(train), samples(valid)
        if workdir is not None:
            os.makedirs(workdir, exist_ok=True)
        trainer = Trainer(pot, train_samples, valid_samples, config, workdir=workdir,
                          progress=progress)
        result = trainer.run(resume=resume)
    if result.get("stopped"):
        where = f"; checkpoint in {workdir}" if workdir is not None else ""
        raise StopTraining(f"training interrupted at iteration {result['iteration']}{where}")
    return pot.with_params(result["best_params"])
