"""Shared shell for commands that evaluate a potential on a ``.cfg`` file."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from tqdm import tqdm

from mtpjax.calculator import MTPEvaluator
from mtpjax.io.cfg import Configuration


def predict(evaluator: MTPEvaluator, configs, progress: bool = True) -> list[Configuration]:
    """Copies of ``configs`` with energy (eV), forces (eV/Å) and PlusStress (eV) predicted.

    PlusStress (−virial, −Σ r_ij ⊗ ∂E/∂r_ij) is set for every configuration, periodic or not,
    as ``mlp`` does; only its conversion to GPa needs a volume (:mod:`mtpjax.errors_report`).
    """
    out = []
    for cfg in tqdm(configs, desc="evaluating", unit="cfg", disable=not progress):
        pbc = np.asarray(cfg.pbc, dtype=bool)
        res = evaluator.compute(cfg.positions, cfg.cell, pbc, cfg.types)
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
