"""``mtpjax.fit``: the public fitting function (data files in, trained potential out)."""

from __future__ import annotations

import numpy as np
import pytest

import mtpjax
from mtpjax.errors import InputError
from mtpjax.io.cfg import Configuration, write_cfg
from mtpjax.io.mtp_file import format_mtp


def _write_cfg(path, samples):
    write_cfg(path, [Configuration(positions=s.positions, types=s.types, cell=s.cell, pbc=s.pbc,
                                   energy=s.energy, forces=s.forces, plus_stress=None)
                     for s in samples])


def test_fit_from_files_returns_a_trained_potential(tmp_path, template_l08, labelled):
    init = tmp_path / "init.mtp"
    init.write_text(format_mtp(template_l08))
    _write_cfg(tmp_path / "train.cfg", labelled[:8])
    _write_cfg(tmp_path / "valid.cfg", labelled[8:])
    config = mtpjax.FitConfig(max_iter=50, force_weight=0.1, lstsq_polish=False)
    pot = mtpjax.fit(init, tmp_path / "train.cfg", valid=tmp_path / "valid.cfg", config=config,
                     max_iter=1, eval_every=0, checkpoint_every=0)  # options override config
    assert isinstance(pot, mtpjax.MTPotential) and pot.is_trained
    assert pot.max_dist == template_l08.max_dist and pot.species_count == 1
    assert np.all(np.isfinite(pot.moment_coeffs)) and np.all(np.isfinite(pot.radial_coeffs))
    # the trained potential evaluates through the calculator
    atoms = labelled[0]
    from ase import Atoms

    a = Atoms(numbers=[14] * len(atoms.positions), positions=atoms.positions, cell=atoms.cell,
              pbc=atoms.pbc)
    a.calc = mtpjax.MTPCalculator(pot, species=["Si"])
    assert abs(a.get_potential_energy() - atoms.energy) / len(a) < 0.1


def test_fit_rejects_bad_options(template_l08, labelled):
    with pytest.raises(InputError, match="unknown fit option"):
        mtpjax.fit(template_l08, labelled, max_iters=3)
    with pytest.raises(InputError, match="no coefficients"):
        mtpjax.fit(template_l08, labelled, init_params="same")
