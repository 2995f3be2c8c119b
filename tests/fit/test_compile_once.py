"""One compilation per model in a process: a second fit (or calculator) of the same model
compiles nothing; a different model gets its own spec."""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np
import pytest

from mtpjax.calculator import MTPEvaluator
from mtpjax.fit.trainer import FitConfig, Trainer
from mtpjax.model import ModelSpec
from mtpjax.params import perturb
from tests.fit.conftest import si_cells


class _Compiles(logging.Handler):
    """Counts JAX's "Finished XLA compilation of ..." log lines (``jax_log_compiles``)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.names = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Finished XLA compilation of "):
            self.names.append(msg.split(" ")[4])


def _count_compiles(fn):
    handler = _Compiles()
    root = logging.getLogger("jax")
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        with jax.log_compiles(True):
            out = fn()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return out, handler.names


def test_same_model_same_spec_other_model_new_spec(pot_l08):
    other_coeffs = pot_l08.with_params(perturb(pot_l08.params(), 0, 0.1))
    assert ModelSpec.from_potential(pot_l08) is ModelSpec.from_potential(other_coeffs)
    wider = dataclasses.replace(pot_l08, max_dist=pot_l08.max_dist + 0.5)
    spec_wider = ModelSpec.from_potential(wider)
    assert spec_wider is not ModelSpec.from_potential(pot_l08)
    assert spec_wider.max_dist == pot_l08.max_dist + 0.5


@pytest.mark.parametrize("optimizer", ["lbfgs", "varpro"])
def test_second_fit_of_the_same_model_compiles_nothing(template_l08, labelled, optimizer):
    cfg = FitConfig(optimizer=optimizer, max_iter=2, force_weight=0.1, eval_every=1,
                    checkpoint_every=0)
    first, names = _count_compiles(lambda: Trainer(template_l08, labelled[:4], None, cfg).run())
    assert names, "the counter sees no compilation at all: it cannot tell"
    # another potential object of the same model, another random start: nothing to compile
    again = dataclasses.replace(template_l08)
    cfg2 = dataclasses.replace(cfg, seed=1)
    second, names2 = _count_compiles(lambda: Trainer(again, labelled[:4], None, cfg2).run())
    assert second["final"]["iterations"] >= 1 and first["final"]["iterations"] >= 1
    assert names2 == [], names2


def test_second_evaluator_of_the_same_model_compiles_nothing(pot_l08):
    atoms = si_cells(1, seed=3)[0]
    types = np.zeros(len(atoms), dtype=np.int32)

    def compute(pot):
        return MTPEvaluator(pot).compute(atoms.positions, atoms.cell.array, atoms.pbc, types)

    compute(pot_l08)
    other = pot_l08.with_params(perturb(pot_l08.params(), 0, 0.1))
    out, names = _count_compiles(lambda: compute(other))
    assert names == [], names
    assert np.isfinite(out["energy"])
