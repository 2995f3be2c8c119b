"""Shared shell for commands that evaluate a potential on a ``.cfg`` file."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from tqdm import tqdm

from mtpjax.calculator import MTPEvaluator
from mtpjax.errors import GeometryError
from mtpjax.io.cfg import Configuration
from mtpjax.neighbors import find_duplicate_atoms


def check_types(configs, species_count: int, potential_path=None) -> None:
    """Every atom type must be one of the potential's (0..species_count−1); else an
    :class:`~mtpjax.io.errors.FileFormatError` at the first offending atom row."""
    for cfg in configs:
        types = np.asarray(cfg.types)
        bad = np.flatnonzero((types < 0) | (types >= species_count))
        if len(bad):
            pot = f" {potential_path}" if potential_path else ""
            raise cfg.error(
                f"atom type {int(types[bad[0]])} but the potential{pot} has species_count = "
                f"{species_count} (expected types 0..{species_count - 1})", atom=int(bad[0]))


def convert_plus_stress(configs, unit: str = "eV/A3") -> list[Configuration]:
    """Reference ``PlusStress`` labels written in ``unit``·Å³ taken to eV (copies), each
    checked for a plausible magnitude (|PlusStress| / V ≤ 10 eV/Å³, see :mod:`mtpjax.units`)."""
    from mtpjax.units import implausible_stress, stress_factor

    factor = stress_factor(unit)
    out = []
    for cfg in configs:
        if cfg.plus_stress is not None:
            cfg = replace(cfg, plus_stress=np.asarray(cfg.plus_stress) * factor)
            if cfg.volume:
                msg = implausible_stress(cfg.plus_stress / cfg.volume, unit)
                if msg:
                    raise cfg.error("PlusStress: " + msg.replace("stress label", "label"),
                                    field="PlusStress")
        out.append(cfg)
    return out


def _atoms_named(cfg: Configuration, atoms) -> str:
    if cfg.ids is None or not atoms:
        return ""
    return f" [ids {', '.join(str(int(cfg.ids[a])) for a in atoms)} in AtomData]"


def predict(evaluator: MTPEvaluator, configs, progress: bool = True) -> list[Configuration]:
    """Copies of ``configs`` with energy (eV), forces (eV/Å) and PlusStress (eV) predicted.

    PlusStress (−virial, −Σ r_ij ⊗ ∂E/∂r_ij) is set for every configuration, periodic or not,
    as ``mlp`` does; only its conversion to GPa needs a volume (:mod:`mtpjax.errors_report`).

    Raises:
        FileFormatError: types the potential does not have, coincident atoms or a singular cell,
            located at the configuration (file, line, 0-based index) and naming the atoms.
    """
    check_types(configs, evaluator.spec.species_count)
    for cfg in configs:  # fail fast: a repeated atom line in the last configuration
        pair = find_duplicate_atoms(cfg.positions, cfg.cell, cfg.pbc)
        if pair is not None:
            a, b = pair
            image = "" if np.allclose(cfg.positions[a], cfg.positions[b], rtol=0,
                                      atol=1e-6) else " (through a periodic image)"
            raise cfg.error(f"atoms {a} and {b}{image} coincide (0-based atom indices)"
                            + _atoms_named(cfg, pair), atom=a)
    out = []
    bar = tqdm(configs, desc="evaluating", unit="cfg", disable=not progress)
    for cfg in bar:
        pbc = np.asarray(cfg.pbc, dtype=bool)
        try:
            res = evaluator.compute(cfg.positions, cfg.cell, pbc, cfg.types)
        except (GeometryError, FloatingPointError) as exc:
            bar.leave = False  # the error line stays the only one on stderr
            bar.close()
            if isinstance(exc, GeometryError):
                raise cfg.error(exc.message + _atoms_named(cfg, exc.atoms),
                                atom=exc.atoms[0] if exc.atoms else None) from exc
            raise cfg.error(f"{exc} (atoms closer than min_dist or an unstable potential?)"
                            ) from exc
        v = -res["virial"]
        plus = np.array([v[0, 0], v[1, 1], v[2, 2], v[1, 2], v[0, 2], v[0, 1]])
        out.append(
            replace(
                cfg,
                energy=res["energy"],
                forces=res["forces"],
                plus_stress=plus,
            )
        )
    return out
