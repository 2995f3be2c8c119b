"""The validation-loss stopping rule: a held-out split of the training configurations,
``patience``, the best-on-validation coefficients restored; bad settings fail cleanly."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from mtpjax.cli import main
from mtpjax.fit.data import split_validation
from mtpjax.fit.trainer import FitConfig, StopTraining, Trainer
from mtpjax.io.mtp_file import format_mtp

from .conftest import label_with, si_cells


@pytest.fixture(scope="module")
def noisy(pot_l08):
    """16 small cells, labels of the level-8 potential plus large noise (something to over-fit)."""
    samples = label_with(pot_l08, si_cells(16, seed=1))
    rng = np.random.default_rng(0)
    out = []
    for s in samples:
        out.append(dataclasses.replace(
            s, energy=s.energy + rng.normal(0, 0.05 * len(s.positions)),
            forces=s.forces + rng.normal(0, 0.3, s.forces.shape)))
    return out


CFG = dict(optimizer="varpro", max_iter=30, force_weight=0.1, eval_every=0, jac_atoms=32,
           valid_fraction=0.5, patience=3)


@pytest.fixture(scope="module")
def overfit(template_l08, noisy, tmp_path_factory):
    """The uninterrupted fit: (trainer, result)."""
    trainer = Trainer(template_l08, noisy, None, FitConfig(**CFG, checkpoint_every=0),
                      workdir=tmp_path_factory.mktemp("full"), mesh=None)
    return trainer, trainer.run()


def test_split_is_seeded_disjoint_and_complete(labelled):
    train, valid = split_validation(labelled, 0.25, seed=4)
    assert (len(train), len(valid)) == (9, 3)
    ids = sorted(s.index for s in train + valid)
    assert ids == sorted(s.index for s in labelled)
    again = split_validation(labelled, 0.25, seed=4)[1]
    other = split_validation(labelled, 0.25, seed=5)[1]
    assert [s.index for s in again] == [s.index for s in valid]
    assert [s.index for s in other] != [s.index for s in valid]
    with pytest.raises(ValueError, match="leaves no"):
        split_validation(labelled[:1], 0.5)


def test_patience_stops_an_over_fitting_varpro_fit_and_restores_the_best(overfit):
    """Half the noisy cells held out: the validation loss turns up while the training loss
    still falls; the rule stops `patience` iterations after the best validation loss, before
    VarPro's own convergence and the cap, and returns the coefficients of that best iteration."""
    trainer, res = overfit
    assert (len(trainer.train_samples), len(trainer.valid_samples)) == (8, 8)
    final = res["final"]
    steps = [r for r in trainer.history if not r.get("final")]
    valid = np.array([r["valid"]["loss"] for r in steps])
    best = int(np.argmin(valid))
    assert final["stop_reason"] == "patience"
    assert final["best_iter"] == steps[best]["iter"]
    assert final["iterations"] == final["best_iter"] + 3 < CFG["max_iter"]
    assert not trainer._varpro().converged  # training alone would have gone on
    assert steps[-1]["loss"] < steps[best]["loss"]  # training loss still falling: over-fitting
    assert valid[-1] > valid[best]
    # the returned coefficients are those of the best iteration, not the last
    assert final["valid"]["loss"] == pytest.approx(valid[best], rel=1e-12)
    last = trainer.evaluate(res["params"], trainer.valid_batches)["loss"]
    assert last == pytest.approx(valid[-1], rel=1e-12) and last > final["valid"]["loss"]


def test_resumed_fit_stops_where_the_uninterrupted_one_did(tmp_path, template_l08, noisy,
                                                          overfit):
    """Killed between the best iteration and the stop: the resumed fit replays the rule's
    state from its log and stops at the same iteration with the same coefficients."""
    full = overfit[1]["final"]
    kill = full["best_iter"] + 1

    def stop(it, rec):
        if it == kill:
            raise StopTraining

    cfg = FitConfig(**CFG, checkpoint_every=1)
    first = Trainer(template_l08, noisy, None, cfg, workdir=tmp_path, mesh=None).run(stop)
    assert first == {"stopped": True, "iteration": kill}
    resumed = Trainer(template_l08, noisy, None, cfg, workdir=tmp_path, mesh=None).run()
    final = resumed["final"]
    assert (final["iterations"], final["stop_reason"], final["best_iter"]) == (
        full["iterations"], "patience", full["best_iter"])
    for key, value in overfit[1]["best_params"].items():
        np.testing.assert_allclose(resumed["best_params"][key], value, rtol=1e-12, atol=0)


def test_bad_settings_are_one_clean_line(tmp_path, template_l08, labelled, capsys):
    for kwargs, word in [({"valid_fraction": 1.0}, "valid_fraction"),
                         ({"patience": -1}, "patience"), ({"valid_rtol": -0.1}, "valid_rtol")]:
        with pytest.raises(ValueError, match=word):
            FitConfig(**kwargs)
    with pytest.raises(ValueError, match="needs validation data"):
        Trainer(template_l08, labelled, None, FitConfig(patience=2), mesh=None)
    init = tmp_path / "init.mtp"
    init.write_text(format_mtp(template_l08))
    from .test_cli import _write_cfg

    _write_cfg(tmp_path / "train.cfg", labelled[:4])
    for flags, pattern in [(["--patience", "3"], r"--patience needs validation data"),
                           (["--valid-fraction", "1.5"], r"valid_fraction must be in \[0, 1\)"),
                           (["--valid-fraction", "0.1", "--valid-cfgs", "x.cfg"], "not both"),
                           (["--monitor-cfgs", str(tmp_path / "nothere.cfg")], "nothere.cfg")]:
        rc = main(["train", str(init), str(tmp_path / "train.cfg"), "--workdir",
                   str(tmp_path / "run"), "--quiet", *flags])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert re.search(pattern, err) and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_monitor_set_is_only_logged_and_refit_solves_all_cells(template_l08, noisy, pot_l08,
                                                               overfit):
    """A monitor set (e.g. the test cells) changes nothing in the fit: same losses, stop and
    best iteration as without it; it is logged in every record. ``refit_linear`` keeps the
    selected radial coefficients and re-solves the linear ones on training + held-out cells:
    equal to a dense numpy least squares of all those cells' rows to 1e-10."""
    from mtpjax.fit.data import pack_buckets
    from mtpjax.model import ModelSpec

    from .conftest import dense_lstsq

    monitor = label_with(pot_l08, si_cells(3, seed=7))
    trainer = Trainer(template_l08, noisy, None,
                      FitConfig(**CFG, checkpoint_every=0, refit_linear=True),
                      mesh=None, monitor=monitor)
    res = trainer.run()
    ref_trainer, ref = overfit
    steps = [r for r in trainer.history if not r.get("final")]
    ref_steps = [r for r in ref_trainer.history if not r.get("final")]
    assert [r["valid"]["loss"] for r in steps] == [r["valid"]["loss"] for r in ref_steps]
    assert all("monitor" in r and "monitor" not in q for r, q in zip(steps, ref_steps, strict=True))
    final = res["final"]
    assert (final["best_iter"], final["stop_reason"]) == (ref["final"]["best_iter"], "patience")
    assert final["refit_linear"] and "monitor" in final
    np.testing.assert_array_equal(res["best_params"]["radial_coeffs"],
                                  ref["best_params"]["radial_coeffs"])
    # the refit differs from the selected coefficients and solves all 16 cells
    spec = ModelSpec.from_potential(template_l08)
    everything = trainer.train_samples + trainer.valid_samples
    assert len(everything) == len(noisy)
    batches = [b.batch for b in pack_buckets(everything, 64)]
    theta, _ = dense_lstsq(spec, trainer.weights, res["best_params"], batches)
    got = np.concatenate([res["best_params"]["species_coeffs"],
                          res["best_params"]["moment_coeffs"]])
    np.testing.assert_allclose(got, theta, rtol=1e-10, atol=1e-10 * np.abs(theta).max())
    before = np.concatenate([ref["best_params"]["species_coeffs"],
                             ref["best_params"]["moment_coeffs"]])
    assert np.abs(got - before).max() > 1e-6 * np.abs(before).max()


def test_refit_ridge_losses_are_the_held_out_loss(template_l08, noisy):
    """``refit_ridge``: the held-out loss it ranks each ridge by (from the (P+1)² factors)
    is the trainer's own validation loss of the ridge solution fitted on the training cells;
    with the grid [0] it is the plain refit on all cells."""
    from mtpjax.fit.lstsq import ridge_solve

    cfg = FitConfig(**{**CFG, "max_iter": 0}, checkpoint_every=0, refit_linear=True)
    trainer = Trainer(template_l08, noisy, None, cfg, mesh=None)
    params = trainer.run()["best_params"]
    grid = [0.0, 1e-3, 1e-1]
    refit, info = trainer.refit_ridge(params, grid)
    assert info["grid"] == grid and info["ridge"] in grid
    assert info["held_out_losses"][grid.index(info["ridge"])] == min(info["held_out_losses"])
    from mtpjax.fit.varpro import host_value

    R_fit = host_value(trainer._linear_qr_fn()(
        params["radial_coeffs"], trainer._linear_batches(trainer.train_samples)[0]))
    C = trainer.spec.species_count
    for g, loss in zip(grid, info["held_out_losses"], strict=True):
        theta = ridge_solve(R_fit, g, n_free=C)
        p = {**params, "species_coeffs": theta[:C], "moment_coeffs": theta[C:]}
        assert trainer.evaluate(p, trainer.valid_batches)["loss"] == pytest.approx(loss,
                                                                                 rel=1e-9)
    plain, _ = trainer.refit_ridge(params, [0.0])
    ref = trainer.refit_linear(params)
    for key in ("species_coeffs", "moment_coeffs"):
        np.testing.assert_allclose(plain[key], ref[key], rtol=1e-9,
                                   atol=1e-9 * np.abs(ref[key]).max())
