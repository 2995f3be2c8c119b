"""The fitting loop: initialise, optimise (L-BFGS or Adam), evaluate, log, checkpoint, polish.

:class:`Trainer` ties the pieces together:

1. data → shape buckets (:mod:`mtpjax.fit.data`), placed on the devices of a 1-D mesh
   ``("data",)`` when more than one local device exists (groups sharded, gradients reduced by
   ``psum`` inside :func:`mtpjax.fit.loss.make_loss_fn`);
2. initial coefficients: the file's (``init_params="same"``) or random from ``seed``; unless
   ``skip_preinit``, a random start gets its linear coefficients from the closed-form
   least-squares solve on the device(s) (:mod:`mtpjax.fit.lstsq`) — our counterpart of
   ``mlp``'s pre-training.
   The same QR pass yields the Jacobi scaling of the linear coefficients
   (:class:`mtpjax.fit.optim.Scaling`);
3. iterations of full-batch L-BFGS, dense BFGS or Levenberg–Marquardt, or minibatch AdamW
   (optionally an exact least-squares re-solve of the linear coefficients every
   ``relinearize_every`` quasi-Newton iterations); every iteration appends a JSON line
   (loss, gradient norm, wall time, and every ``eval_every`` iterations train/validation errors);
   the best coefficients on the validation set (on the training loss without one) are kept;
   the validation set may be a seeded split of the training configurations
   (``valid_fraction``), and ``patience`` stops the fit when its loss has not improved (by
   ``valid_rtol``, relative) for that many iterations (the final record says why a fit
   stopped: ``stop_reason``, and which iteration it kept: ``best_iter``);
4. a final least-squares polish of the linear coefficients, kept when it does not make the
   validation loss worse;
5. checkpoints (:mod:`mtpjax.fit.checkpoint`) every ``checkpoint_every`` iterations and on
   interruption; ``resume=True`` continues from the checkpoint to the same result as an
   uninterrupted run (same arithmetic in the same order).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtpjax.fit import checkpoint as ckpt
from mtpjax.fit.data import (
    Sample,
    group_configurations,
    pack_buckets,
    pack_groups,
    round_up,
    split_validation,
)
from mtpjax.fit.loss import LossWeights, make_loss_fn, summarize
from mtpjax.fit.lstsq import (
    group_weights,
    make_linear_qr,
    place_like,
    radial_column_norms,
    ridge_solve,
    select_ridge,
    solve_linear,
)
from mtpjax.fit.optim import Scaling, adamw, bfgs, lbfgs
from mtpjax.model import ModelSpec
from mtpjax.params import check_params, init_params
from mtpjax.potential_data import MTPotential

OPTIMIZERS = ("varpro", "lbfgs", "bfgs", "adam", "lm")
# optimisers that see the whole training set every step
FULL_BATCH = ("varpro", "lbfgs", "bfgs", "lm")
QUASI_NEWTON = ("lbfgs", "bfgs")


@dataclass
class FitConfig:
    """Every option of a fit (TOML ``[fit]`` table keys = these field names)."""

    optimizer: str = "varpro"  # varpro | lbfgs | bfgs | adam | lm
    max_iter: int = 1000
    energy_weight: float = 1.0
    force_weight: float = 0.01
    stress_weight: float = 0.001
    weighting: str = "vibrations"  # vibrations | molecules | structures
    seed: int = 0
    init_params: str = "random"  # random | same
    skip_preinit: bool = False
    radial_scale: float | None = None  # None: from the data (see Trainer.auto_radial_scale)
    precondition: bool = True
    lstsq_polish: bool = True
    lstsq_ridge: float = 0.0
    lstsq_atoms: int = 256  # group size of the least-squares pass (memory ∝ tangents × atoms)
    lstsq_configs: int | None = None  # subsample (seeded) for the least-squares passes
    atoms_per_group: int | None = None
    target_atoms: int = 4096
    # L-BFGS
    memory_size: int = 200  # ≥ #coefficients at levels ≤ 16: L-BFGS ≈ dense BFGS (as mlp)
    max_linesearch_steps: int = 20
    # every this many (L-)BFGS iterations, re-solve the linear coefficients exactly (least
    # squares for the current radial coefficients; mlp's BFGS does it every 50). 0: never —
    # the default, because in earlier level-16 runs one full re-solve cost 30-50 iterations
    # and gained less (docs/fitting.md)
    relinearize_every: int = 0
    tol: float = 0.0  # stop when the gradient norm (scaled variables) falls below
    # Levenberg–Marquardt (full Jacobian, groups of lstsq_atoms atoms)
    lm_lambda: float = 1e-3
    # variable projection (Levenberg–Marquardt on the radial coefficients, the linear ones
    # re-solved exactly at every trial point): atoms per group of its Jacobian passes
    # (memory ∝ (#coefficients) × atoms); the trials per iteration are max_linesearch_steps
    jac_atoms: int = 512
    lm_hessian_fraction: float = 1.0  # share of the groups whose Jacobian forms JᵀJ per step
    # Adam
    learning_rate: float = 1e-2
    schedule: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    batch_size: int = 16  # configurations per minibatch
    # bookkeeping
    eval_every: int = 10
    select_on_valid: bool = True  # False: the validation set is only monitored
    # a validation split of the training configurations: this fraction (drawn with
    # valid_seed) is held out of the fit (instead of a separate validation set)
    valid_fraction: float = 0.0
    valid_seed: int = 0
    # early stopping: stop when the validation loss has not fallen below its best by more
    # than the relative margin valid_rtol for `patience` iterations (0: never); the
    # best-on-validation coefficients are returned
    patience: int = 0
    valid_rtol: float = 0.0
    # after the fit, re-solve the linear coefficients of the selected (e.g. best-on-validation)
    # potential by least squares on the training and validation configurations together
    # (its radial coefficients kept): the validation set chose the stopping point, then
    # every labelled configuration informs the linear part
    refit_linear: bool = False
    # with refit_linear: standardised ridge strengths (mtpjax.fit.lstsq.ridge_solve, the
    # species coefficients unpenalised) tried for the linear part; the one with the lowest
    # held-out loss when fitted on the training cells alone is used for the refit on all
    # (empty: plain least squares)
    refit_ridge_grid: tuple[float, ...] = ()
    max_time: float | None = None  # stop iterating after this many seconds (then polish)
    checkpoint_every: int = 10
    data_parallel: bool = True
    # persistent compilation cache folder (None: the default, see mtpjax.fit.compile_cache;
    # "off": none)
    compile_cache: str | None = None

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, "
                             f"got {self.optimizer!r}")
        if self.init_params not in ("random", "same"):
            raise ValueError(f"init_params must be 'random' or 'same', got {self.init_params!r}")
        if self.max_iter < 0:
            raise ValueError("max_iter must be ≥ 0")
        if not 0.0 < self.lm_hessian_fraction <= 1.0:
            raise ValueError("lm_hessian_fraction must be in (0, 1]")
        if self.relinearize_every < 0:
            raise ValueError("relinearize_every must be ≥ 0")
        for name in ("energy_weight", "force_weight", "stress_weight", "lstsq_ridge",
                     "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number ≥ 0, got {value!r}")
        if self.weighting not in ("vibrations", "molecules", "structures"):
            raise ValueError(f"weighting must be vibrations, molecules or structures, got "
                             f"{self.weighting!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name in ("batch_size", "memory_size", "lstsq_atoms", "target_atoms", "jac_atoms",
                     "max_linesearch_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not (isinstance(self.valid_fraction, int | float) and 0.0 <= self.valid_fraction < 1.0):
            raise ValueError(f"valid_fraction must be in [0, 1), got {self.valid_fraction!r}")
        if not (isinstance(self.valid_rtol, int | float) and 0.0 <= self.valid_rtol < 1.0):
            raise ValueError(f"valid_rtol must be in [0, 1), got {self.valid_rtol!r}")
        self.refit_ridge_grid = tuple(self.refit_ridge_grid)
        if not all(isinstance(v, int | float) and math.isfinite(v) and v >= 0
                   for v in self.refit_ridge_grid):
            raise ValueError(f"refit_ridge_grid must hold finite numbers ≥ 0, got "
                             f"{list(self.refit_ridge_grid)!r}")
        for name in ("eval_every", "checkpoint_every", "warmup_steps", "patience"):  # 0: never
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0 (0: never), got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values: dict) -> FitConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown fit option(s): {', '.join(unknown)}")
        return cls(**values)

    @property
    def loss_weights(self) -> LossWeights:
        return LossWeights(self.energy_weight, self.force_weight, self.stress_weight,
                           self.weighting)


class StopTraining(Exception):
    """Raised by a callback to stop after the current iteration (state is checkpointed)."""


def default_mesh(enabled: bool = True):
    """1-D mesh ``("data",)`` over all devices of all processes (``jax.devices()``: after
    ``jax.distributed.initialize`` every host's), or None for a single device."""
    devices = jax.devices()
    if not enabled or len(devices) < 2:
        return None
    return jax.sharding.Mesh(np.asarray(devices), ("data",))


def _device_put(batch, mesh):
    """Place a batch on the mesh, groups (axis 0) sharded; every process holds the whole
    host array and contributes the shards of its own devices."""
    return place_like(batch, mesh)


def _fetch(tree):
    """Replicated results as host arrays when several processes share the mesh (a value that
    spans other hosts' devices cannot be read directly); unchanged in a single process."""
    if jax.process_count() == 1:
        return tree
    from mtpjax.fit.varpro import host_value

    return jax.tree.map(lambda x: host_value(x) if isinstance(x, jax.Array) else x, tree)


def is_main_process() -> bool:
    """Only process 0 writes logs, checkpoints and potentials."""
    return jax.process_index() == 0


class Trainer:
    """Fit ``pot``'s coefficients to ``train`` (validated samples with neighbours).

    Args:
        pot: template or trained :class:`MTPotential` (its hyper-parameters are kept).
        train, valid: lists of :class:`Sample` (``valid`` may be None).
        config: :class:`FitConfig`.
        workdir: where ``checkpoint.npz``, ``log.jsonl`` go (None: no files).
        mesh: a 1-D ``("data",)`` mesh, ``"auto"`` (all local devices) or None.
        monitor: samples whose errors are only logged (``"monitor"`` in every record that
            has ``"valid"``, and in the final one), never used to select or stop: e.g. a
            test set watched while ``valid_fraction`` holds out the validation set.
    """

    def __init__(self, pot: MTPotential, train: list[Sample], valid: list[Sample] | None,
                 config: FitConfig, workdir=None, mesh="auto", progress: bool = False,
                 monitor: list[Sample] | None = None):
        from mtpjax import memory_maps
        from mtpjax.fit import compile_cache

        compile_cache.enable(config.compile_cache)
        # a process that fits many times (grade rounds, sweeps) must not die at the kernel's
        # cap on memory mappings with every program it ever compiled still held
        memory_maps.release_if_near_cap()
        if config.valid_fraction > 0:
            if valid:
                raise ValueError("valid_fraction splits the training set: give it or a "
                                 "validation set, not both")
            train, valid = split_validation(train, config.valid_fraction, config.valid_seed)
        if config.patience and not valid:
            raise ValueError("patience (early stopping) needs validation data: valid_fraction "
                             "> 0 or a validation set")
        self.pot = pot
        self.spec = ModelSpec.from_potential(pot)
        self.config = config
        self.weights = config.loss_weights
        self.mesh = default_mesh(config.data_parallel) if mesh == "auto" else mesh
        self.n_dev = 1 if self.mesh is None else self.mesh.devices.size
        self.train_samples = train
        self.valid_samples = valid or []
        self.workdir = None if workdir is None else Path(workdir)
        self.progress = progress
        self.loss_fn, self.terms_fn = make_loss_fn(self.spec, self.weights, self.mesh)
        self._terms = jax.jit(self.terms_fn)
        self.train_buckets = pack_buckets(train, config.atoms_per_group,
                                          group_multiple=self.n_dev,
                                          target_atoms=config.target_atoms, round_shapes=True)
        self.train_batches = tuple(_device_put(b.batch, self.mesh) for b in self.train_buckets)
        self.valid_batches = ()
        if self.valid_samples:
            vb = pack_buckets(self.valid_samples, None, group_multiple=self.n_dev,
                              target_atoms=config.target_atoms, round_shapes=True)
            self.valid_batches = tuple(_device_put(b.batch, self.mesh) for b in vb)
        self.monitor_batches = ()
        if monitor:
            mb = pack_buckets(monitor, None, group_multiple=self.n_dev,
                              target_atoms=config.target_atoms, round_shapes=True)
            self.monitor_batches = tuple(_device_put(b.batch, self.mesh) for b in mb)
        self._lstsq_batches = None
        self._vp = None
        self.history: list[dict] = []
        self._reset_stopping()

    # ------------------------------------------------------------------ helpers
    @property
    def checkpoint_path(self):
        return None if self.workdir is None else self.workdir / "checkpoint.npz"

    @property
    def log_path(self):
        return None if self.workdir is None else self.workdir / "log.jsonl"

    def auto_radial_scale(self) -> float:
        """U(−a, a) radial coefficients with a = 0.5 / (mean neighbours · ((r_max − r_min)/2)²)."""
        counts = [s.neighbors[2].sum(1).mean() for s in self.train_samples]
        half = 0.5 * (self.spec.max_dist - self.spec.min_dist)
        return 0.5 / (max(float(np.mean(counts)), 1.0) * half**2)

    def _linear_batches(self, samples):
        """``samples`` packed into groups of ``lstsq_atoms`` atoms for the least-squares pass
        (rounded shapes, groups sharded over the mesh): (device batches, host batches)."""
        host = [b.batch for b in pack_buckets(
            samples, max(self.config.lstsq_atoms, round_up(max(len(s) for s in samples), 8)),
            group_multiple=self.n_dev, round_shapes=True)]
        return tuple(_device_put(b, self.mesh) for b in host), host

    def lstsq(self, params: dict, return_norms: bool = False):
        """Least-squares linear coefficients for ``params``' radial coefficients (on the
        device(s), groups of ``lstsq_atoms`` sharded over the mesh)."""
        if self._lstsq_batches is None:
            samples = self.train_samples
            n_sub = self.config.lstsq_configs
            if n_sub and n_sub < len(samples):
                pick = np.random.default_rng([self.config.seed, 7]).choice(
                    len(samples), n_sub, replace=False)
                samples = [samples[k] for k in np.sort(pick)]
            self._lstsq_batches, host = self._linear_batches(samples)
            self._lstsq_weights = group_weights(host, self.mesh)
        return solve_linear(self.spec, self.weights, params, self._lstsq_batches,
                            ridge=self.config.lstsq_ridge, qr_fn=self._linear_qr_fn(),
                            return_norms=return_norms, mesh=self.mesh)

    def _linear_qr_fn(self):
        if getattr(self, "_lstsq_qr", None) is None:
            self._lstsq_qr = make_linear_qr(self.spec, self.weights, self.mesh)
        return self._lstsq_qr

    def refit_ridge(self, params: dict, grid) -> tuple[dict, dict]:
        """``params`` with the linear coefficients re-solved on training + validation cells
        with the standardised ridge of ``grid`` that did best on the validation cells when
        solved on the training cells alone (:func:`mtpjax.fit.lstsq.select_ridge`); one
        least-squares pass over each set, the rest on the (P+1)² factors. Returns
        (params, {"ridge", "held_out_losses"})."""
        from mtpjax.fit.varpro import host_value

        radial = jnp.asarray(params["radial_coeffs"])
        qr = self._linear_qr_fn()
        R_fit = host_value(qr(radial, self._linear_batches(self.train_samples)[0]))
        R_held = host_value(qr(radial, self._linear_batches(self.valid_samples)[0]))
        C = self.spec.species_count
        ridge, losses = select_ridge(R_fit, R_held, grid, n_free=C)
        R_all = np.linalg.qr(np.vstack([R_fit, R_held]), mode="r")
        theta = ridge_solve(R_all, ridge, n_free=C)
        out = {k: np.asarray(v) for k, v in params.items()}
        out["species_coeffs"], out["moment_coeffs"] = theta[:C].copy(), theta[C:].copy()
        return out, {"ridge": ridge, "grid": [float(g) for g in grid],
                     "held_out_losses": losses}

    def refit_linear(self, params: dict) -> dict:
        """``params`` with the linear coefficients re-solved (least squares, ``lstsq_ridge``)
        on the training and validation configurations together, radial ones kept."""
        batches, _ = self._linear_batches(list(self.train_samples) + list(self.valid_samples))
        solved, _ = solve_linear(self.spec, self.weights, params, batches,
                                 ridge=self.config.lstsq_ridge, qr_fn=self._linear_qr_fn(),
                                 mesh=self.mesh)
        return solved

    def evaluate(self, params, batches) -> dict:
        if not batches:
            return {}
        return summarize(_fetch(self._terms(_fetch(params), batches)))

    def initial_params(self) -> tuple[dict, Scaling]:
        cfg = self.config
        if cfg.init_params == "same":
            if not self.pot.is_trained:
                raise ValueError("--init-params=same needs a potential with coefficients")
            params = check_params(self.spec, self.pot.params())
        else:
            scale = cfg.radial_scale if cfg.radial_scale is not None else self.auto_radial_scale()
            params = init_params(self.spec, cfg.seed, scale)
        params = {k: np.asarray(v, np.float64) for k, v in params.items()}
        if cfg.optimizer == "varpro":  # the linear coefficients are always the exact optimum
            from mtpjax.fit.varpro import host_value, join_params

            radial = jnp.asarray(params["radial_coeffs"])
            theta, _ = self._varpro().solve_linear(radial)
            params = {k: host_value(v) for k, v in
                      join_params(self.spec, radial, theta).items()}
            return params, Scaling.identity(params)
        need_qr = cfg.precondition or (cfg.init_params == "random" and not cfg.skip_preinit)
        scaling = Scaling.identity(params)
        if need_qr:
            solved, _, norms = self.lstsq(params, return_norms=True)
            if cfg.init_params == "random" and not cfg.skip_preinit:
                params = solved
            if cfg.precondition:
                scaling = Scaling.from_column_norms(params, norms, self.spec.species_count)
                rnorms = radial_column_norms(self.spec, self.weights, params,
                                             self._lstsq_batches, self._lstsq_weights,
                                             mesh=self.mesh)
                scaling = scaling.with_radial(rnorms, norms)
        return params, scaling

    # ------------------------------------------------------------------ optimisers
    def _make_lbfgs(self, scaling: Scaling):
        return quasi_newton_step(self.loss_fn, self.config.optimizer, self.config.memory_size,
                                 self.config.max_linesearch_steps)

    def _make_adam(self, params):
        cfg = self.config
        return adam_step(self.loss_fn, cfg.learning_rate, cfg.max_iter, cfg.warmup_steps,
                         cfg.schedule, cfg.weight_decay, tuple(sorted(params)))

    def _varpro(self):
        """The :class:`mtpjax.fit.varpro.VarPro` iteration over groups of ``jac_atoms``."""
        if self._vp is None:
            from mtpjax.fit.varpro import VarPro

            samples = self.train_samples
            A = max(self.config.jac_atoms, round_up(max(len(s) for s in samples), 8))
            batches = tuple(_device_put(b.batch, self.mesh) for b in pack_buckets(
                samples, A, group_multiple=self.n_dev, round_shapes=True))
            self._vp = VarPro(self.spec, self.weights, batches, self.mesh,
                              ridge=self.config.lstsq_ridge,
                              max_trials=self.config.max_linesearch_steps)
        return self._vp

    def _varpro_step(self, u, opt_state, scales, batches):
        """One variable-projection iteration (``scales`` are the identity for varpro)."""
        from mtpjax.fit.varpro import join_params

        radial, theta, value, lam, gnorm = self._varpro().step(
            u["radial_coeffs"], jnp.concatenate([u["species_coeffs"], u["moment_coeffs"]]),
            float(opt_state["value"]), float(opt_state["lam"]))
        state = {"lam": jnp.asarray(lam), "k": opt_state["k"] + 1, "value": jnp.asarray(value)}
        return join_params(self.spec, radial, theta), state, value, gnorm

    def _lm_groups(self):
        """All training configurations packed into groups of ``lstsq_atoms`` atoms (fixed
        shapes, groups sharded over the mesh): (batches, atoms per group [G] per batch)."""
        if getattr(self, "_lm_batches", None) is None:
            samples = self.train_samples
            A = max(self.config.lstsq_atoms, round_up(max(len(s) for s in samples), 8))
            host = [b.batch for b in pack_buckets(samples, A, group_multiple=self.n_dev,
                                                  round_shapes=True)]
            self._lm_batches = (tuple(_device_put(b, self.mesh) for b in host),
                                [np.asarray(b.atom_mask).sum(axis=1).astype(float) for b in host])
        return self._lm_batches

    def _lm_step(self, u, opt_state, scales, batches):
        """One Levenberg–Marquardt step (Marquardt's diagonal damping, λ adapted ×1/3, ×4).

        The gradient and the loss are those of the whole training set. The Gauss–Newton matrix
        JᵀJ comes from forward-mode Jacobians of the residuals over all groups, or, with
        ``lm_hessian_fraction`` < 1, over a random fraction of them (a new draw every
        iteration, seeded by ``seed`` and the iteration) scaled up by atoms: a subsampled
        Gauss–Newton matrix is still a good curvature model at a fraction of the cost, and
        the full gradient keeps the fixed point that of the whole data set. Everything runs
        on the device(s): JᵀJ in one data-parallel pass (:func:`make_group_sums`, one
        all-reduce), the damped solve (:func:`mtpjax.fit.varpro.damped_solve`) replicated;
        the host only reads the trial losses.
        """
        from mtpjax.fit.varpro import host_value

        cfg = self.config
        lm_batches, atoms = self._lm_groups()
        if getattr(self, "_neq_fn", None) is None:
            self._neq_fn, self._loss_jit, self._value_grad_u, self._lm_trial = lm_functions(
                self.spec, self.weights, self.mesh, self.loss_fn)
        k_iter = int(opt_state.get("k", 0))
        flat_atoms = np.concatenate(atoms)
        full = np.flatnonzero(flat_atoms > 0)  # the non-empty groups, in order
        pick = full
        if cfg.lm_hessian_fraction < 1.0:
            n_pick = max(1, round(cfg.lm_hessian_fraction * len(full)))
            pick = full[np.sort(np.random.default_rng([cfg.seed, 11, k_iter]).choice(
                len(full), n_pick, replace=False))]
        w = np.zeros(len(flat_atoms))
        w[pick] = flat_atoms.sum() / flat_atoms[pick].sum()
        w = place_like(tuple(np.split(w, np.cumsum([len(a) for a in atoms])[:-1])), self.mesh)
        H = self._neq_fn(u, scales, lm_batches, w)
        value, g, gnorm = self._value_grad_u(u, scales, batches)
        loss0 = float(host_value(value))
        lam = float(opt_state["lam"])
        best_u, best_loss = u, loss0
        for _ in range(cfg.max_linesearch_steps):
            t = self._lm_trial(u, H, g, lam)
            value = float(host_value(self._loss_jit(t, scales, batches)))
            if np.isfinite(value) and value < loss0:
                best_u, best_loss = t, value
                lam = max(lam / 3.0, 1e-15)
                break
            lam *= 4.0
        state = {"lam": jnp.asarray(lam), "k": jnp.asarray(k_iter + 1)}
        return best_u, state, best_loss, float(host_value(gnorm))

    def _adam_batches(self, epoch: int):
        """Fixed-shape minibatches of epoch ``epoch`` (deterministic from seed and epoch)."""
        cfg = self.config
        samples = self.train_samples
        sizes = np.asarray([len(s) for s in samples])
        bs = min(cfg.batch_size, len(samples))
        largest = np.sort(sizes)[::-1][:bs].sum()
        A = round_up(-(-largest // self.n_dev) + sizes.max(), 8)
        J = max(round_up(s.max_neighbors, 8) for s in samples)
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(samples))
        out = []
        for start in range(0, len(order), bs):
            members = order[start:start + bs]
            groups: list[list[int]] = [[] for _ in range(self.n_dev)]
            load = np.zeros(self.n_dev, int)
            for k in members:  # least-loaded: every group ≤ total/n_dev + largest
                d = int(np.argmin(load))
                groups[d].append(int(k))
                load[d] += sizes[k]
            out.append(pack_groups(samples, groups, A, J, bs, self.n_dev))
        return out

    # ------------------------------------------------------------------ main loop
    def run(self, callback=None, resume: bool = True) -> dict:
        """Fit; returns {"params", "best_params", "history", "best"}.

        ``callback(iteration, record)`` may raise :class:`StopTraining` (checkpoint, then stop).
        """
        cfg = self.config
        t_start = time.perf_counter()
        path = self.checkpoint_path
        state_tree = None
        if resume and path is not None and path.exists():
            state_tree, meta = self._restore()
            start = meta["iteration"]
            elapsed0 = meta.get("elapsed", 0.0)
            for rec in self.history:  # the stopping rule's state, replayed from the log
                self._track(rec)
        else:
            params, scaling = self.initial_params()
            state_tree = self._fresh_state(params, scaling)
            start, elapsed0 = 0, 0.0
            self._truncate_log(0)
            rec = self._record(0, state_tree, float("nan"), float("nan"), elapsed0, t_start,
                               force_eval=True)
            self._update_best(state_tree, rec)
            self._track(rec)
            self._log(rec)
            if cfg.optimizer == "varpro":
                state_tree["opt"]["value"] = jnp.asarray(rec["loss"])
        if cfg.optimizer in QUASI_NEWTON:
            _, step = self._make_lbfgs(None)
        elif cfg.optimizer == "lm":
            step = self._lm_step
        elif cfg.optimizer == "varpro":
            step = self._varpro_step
        else:
            _, step = self._make_adam(state_tree["u"])
            steps_per_epoch = -(-len(self.train_samples) // min(cfg.batch_size,
                                                                len(self.train_samples)))
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_iter, initial=start, desc=f"train ({cfg.optimizer})",
                       unit="it", dynamic_ncols=True)
        stopped = False
        it = start
        reason = "max_iter"
        epoch_cache = {}
        try:
            for it in range(start + 1, cfg.max_iter + 1):
                if cfg.optimizer in FULL_BATCH:
                    u, opt_state, value, gnorm = _fetch(step(
                        state_tree["u"], state_tree["opt"], state_tree["scales"],
                        self.train_batches))
                else:
                    epoch, k = divmod(it - 1, steps_per_epoch)
                    if epoch not in epoch_cache:
                        epoch_cache = {epoch: [_device_put(b, self.mesh)
                                               for b in self._adam_batches(epoch)]}
                    u, opt_state, value, gnorm = _fetch(step(
                        state_tree["u"], state_tree["opt"], state_tree["scales"],
                        epoch_cache[epoch][k]))
                state_tree = {**state_tree, "u": u, "opt": opt_state}
                if (cfg.optimizer in QUASI_NEWTON and cfg.relinearize_every
                        and it % cfg.relinearize_every == 0 and it < cfg.max_iter):
                    state_tree = self._relinearize(state_tree)
                rec = self._record(it, state_tree, float(value), float(gnorm), elapsed0, t_start)
                if cfg.optimizer in ("lm", "varpro"):  # the damping the next step starts from
                    rec["lam"] = float(opt_state["lam"])
                self._update_best(state_tree, rec)
                self._track(rec)
                self._log(rec)
                if bar is not None:
                    post = {"loss": f"{rec['loss']:.4g}"}
                    if "valid" in rec and "energy_mae" in rec["valid"]:
                        post["val_E"] = f"{1e3 * rec['valid']['energy_mae']:.2f}meV"
                    bar.set_postfix(post)
                    bar.update(1)
                if path is not None and cfg.checkpoint_every and it % cfg.checkpoint_every == 0:
                    self._save(state_tree, it, elapsed0 + time.perf_counter() - t_start)
                if callback is not None:
                    callback(it, rec)
                if self._patience_exhausted(it):
                    reason = "patience"
                    break
                if cfg.tol > 0 and gnorm < cfg.tol:
                    reason = "tol"
                    break
                if cfg.optimizer == "varpro" and self._varpro().converged:
                    reason = "converged"
                    break
                if cfg.max_time and elapsed0 + time.perf_counter() - t_start > cfg.max_time:
                    reason = "max_time"
                    break
        except (StopTraining, KeyboardInterrupt):
            stopped = True
            if path is not None:
                self._save(state_tree, it, elapsed0 + time.perf_counter() - t_start)
        finally:
            if bar is not None:
                bar.close()
        if stopped:
            return {"stopped": True, "iteration": it}
        return self._finish(state_tree, it, elapsed0, t_start, reason)

    # ------------------------------------------------------------------ stopping rule
    def _reset_stopping(self):
        self._ref_score, self._ref_iter = math.inf, 0  # last validation loss that counted
        self._best_iter = 0  # iteration of the selected (best) coefficients

    def _track(self, rec):
        """Update the stopping rule's state with one logged record (also on resume)."""
        if rec.get("best"):
            self._best_iter = rec["iter"]
        if "valid" not in rec:
            return
        score = rec["valid"]["loss"]
        if math.isfinite(score) and score < self._ref_score * (1.0 - self.config.valid_rtol):
            self._ref_score, self._ref_iter = score, rec["iter"]

    def _patience_exhausted(self, it: int) -> bool:
        """The validation loss has not improved (by ``valid_rtol``) for ``patience`` iterations."""
        p = self.config.patience
        return bool(p and self.valid_batches and it - self._ref_iter >= p)

    # ------------------------------------------------------------------ internals
    def _relinearize(self, state_tree) -> dict:
        """Exact least-squares linear coefficients for the current radial ones.

        The L-BFGS memory is kept (the jump and the gradient change it causes form the next
        curvature pair); only the line search's cached value/gradient are invalidated so
        that the next step re-evaluates them at the new point.
        """
        params = {k: np.asarray(v) for k, v in self._params(state_tree).items()}
        solved, _ = self.lstsq(params)
        value = optax.tree_utils.tree_get(state_tree["opt"], "value")
        if not self.evaluate(solved, self.train_batches)["loss"] < float(value):
            return state_tree  # e.g. a subsampled least-squares pass that does not help
        scaling = Scaling(state_tree["scales"])
        u = scaling.from_params({k: jnp.asarray(v) for k, v in solved.items()})
        opt = optax.tree_utils.tree_set(state_tree["opt"], value=jnp.full_like(value, jnp.inf))
        return {**state_tree, "u": u, "opt": opt}

    def _fresh_state(self, params, scaling: Scaling) -> dict:
        cfg = self.config
        scales = {k: jnp.asarray(v) for k, v in scaling.scales.items()}
        u = Scaling(scales).from_params({k: jnp.asarray(v) for k, v in params.items()})
        if cfg.optimizer in QUASI_NEWTON:
            # strongly typed: optax's initial line-search state holds weakly typed scalars,
            # which made the second iteration compile the step again
            opt_state = jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype),
                                     self._make_lbfgs(scaling)[0].init(u))
        elif cfg.optimizer == "lm":
            opt_state = {"lam": jnp.asarray(float(cfg.lm_lambda)), "k": jnp.asarray(0)}
        elif cfg.optimizer == "varpro":
            opt_state = {"lam": jnp.asarray(float(cfg.lm_lambda)), "k": jnp.asarray(0),
                         "value": jnp.asarray(np.inf)}
        else:
            opt_state = self._make_adam(u)[0].init(u)
        p = {k: jnp.asarray(v) for k, v in params.items()}
        return {"u": u, "opt": opt_state, "scales": scales,
                "best_params": p, "best_score": jnp.asarray(np.inf)}

    def _params(self, state_tree) -> dict:
        return Scaling(state_tree["scales"]).to_params(state_tree["u"])

    def _record(self, it, state_tree, value, gnorm, elapsed0, t_start, force_eval=False):
        rec = {"iter": it, "time": round(elapsed0 + time.perf_counter() - t_start, 4),
               "clock": round(time.time(), 3), "cpu": round(time.process_time(), 3),
               "loss": value, "grad_norm": gnorm}
        evaluate = force_eval or (self.config.eval_every and it % self.config.eval_every == 0) \
            or it == self.config.max_iter
        params = self._params(state_tree)
        if evaluate:
            rec["train"] = self.evaluate(params, self.train_batches)
            rec["loss"] = rec["train"]["loss"]
        if self.valid_batches and (evaluate or self.config.optimizer in FULL_BATCH):
            rec["valid"] = self.evaluate(params, self.valid_batches)
        if self.monitor_batches and (evaluate or self.config.optimizer in FULL_BATCH):
            rec["monitor"] = self.evaluate(params, self.monitor_batches)
        return rec

    def _score(self, rec) -> float | None:
        on_valid = self.valid_batches and self.config.select_on_valid
        if on_valid:
            return rec["valid"]["loss"] if "valid" in rec else None
        if "train" in rec:
            return rec["train"]["loss"]
        if self.config.optimizer in FULL_BATCH:
            return rec["loss"]  # full-batch loss of the current coefficients
        return None

    def _update_best(self, state_tree, rec):
        score = self._score(rec)
        if score is None or not math.isfinite(score):
            return
        if score < float(state_tree["best_score"]):
            state_tree["best_score"] = jnp.asarray(score)
            state_tree["best_params"] = self._params(state_tree)
            rec["best"] = True

    def _finish(self, state_tree, it, elapsed0, t_start, reason: str = "max_iter") -> dict:
        params = {k: np.asarray(v) for k, v in self._params(state_tree).items()}
        best = {k: np.asarray(v) for k, v in state_tree["best_params"].items()}
        best_score = float(state_tree["best_score"])
        polished = None
        if self.config.lstsq_polish and self.config.optimizer != "varpro":
            polished, _ = self.lstsq(best)
            if self.valid_batches and self.config.select_on_valid:
                score = self.evaluate(polished, self.valid_batches)["loss"]
            else:
                score = self.evaluate(polished, self.train_batches)["loss"]
            if score <= best_score or not math.isfinite(best_score):
                best, best_score = polished, score
        refit = bool(self.config.refit_linear and self.valid_samples)
        ridge_info = None
        if refit and self.config.refit_ridge_grid:
            best, ridge_info = self.refit_ridge(best, self.config.refit_ridge_grid)
        elif refit:  # the validation set chose the point; all labelled data fit its linear part
            best = self.refit_linear(best)
        rec = {"iter": it, "time": round(elapsed0 + time.perf_counter() - t_start, 4),
               "clock": round(time.time(), 3), "cpu": round(time.process_time(), 3),
               "final": True, "polished": polished is not None and best is polished,
               "refit_linear": refit, **({"refit_ridge": ridge_info} if ridge_info else {}),
               "iterations": int(it), "stop_reason": reason, "best_iter": int(self._best_iter),
               "train": self.evaluate(best, self.train_batches)}
        rec["loss"] = rec["train"]["loss"]
        if self.valid_batches:
            rec["valid"] = self.evaluate(best, self.valid_batches)
        if self.monitor_batches:
            rec["monitor"] = self.evaluate(best, self.monitor_batches)
        self._log(rec)
        return {"params": params, "best_params": best, "best_score": best_score,
                "history": self.history, "final": rec}

    def _save(self, state_tree, it, elapsed):
        if not is_main_process():
            return
        ckpt.save(self.checkpoint_path, state_tree,
                  {"iteration": int(it), "elapsed": float(elapsed),
                   "config": asdict(self.config)})

    def _restore(self):
        u0 = {k: jnp.zeros(v) for k, v in _shapes(self.spec).items()}
        scaling = Scaling.identity(u0)
        template = self._fresh_state(u0, scaling)
        state, meta = ckpt.load(self.checkpoint_path, template)
        state = jax.tree.map(jnp.asarray, state)
        self._truncate_log(meta["iteration"])
        return state, meta

    def _truncate_log(self, upto: int):
        self.history = []
        self._reset_stopping()
        if self.log_path is None or not is_main_process():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if upto > 0 and self.log_path.exists():
            for line in self.log_path.read_text().splitlines():
                rec = json.loads(line)
                if rec.get("iter", 0) <= upto and not rec.get("final"):
                    kept.append(line)
                    self.history.append(rec)
        self.log_path.write_text("".join(line + "\n" for line in kept))

    def _log(self, rec):
        self.history.append(rec)
        if self.log_path is not None and is_main_process():
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")


@lru_cache(maxsize=32)
def quasi_newton_step(loss_fn, optimizer: str, memory_size: int, max_linesearch_steps: int):
    """(optax transform, jit-compiled step) of BFGS (``optimizer == "bfgs"``) or L-BFGS on
    ``loss_fn`` in the scaled variables u = θ / s.

    ``step(u, state, scales, batches) -> (u, state, loss, |grad|)``. Built once per loss
    function and settings in a process (``loss_fn`` comes from the cached
    :func:`mtpjax.fit.loss.make_loss_fn`), so a later fit of the same model compiles nothing.
    """
    if optimizer == "bfgs":
        opt = bfgs(max_linesearch_steps)
    else:
        opt = lbfgs(memory_size, max_linesearch_steps)

    def step(u, state, scales, batches):
        sc = Scaling(scales)

        def f(v):
            return loss_fn(sc.to_params(v), batches)

        value, grad = optax.value_and_grad_from_state(f)(u, state=state)
        updates, state = opt.update(grad, state, u, value=value, grad=grad, value_fn=f)
        u = optax.apply_updates(u, updates)
        new_value = optax.tree_utils.tree_get(state, "value")
        return u, state, new_value, optax.tree_utils.tree_norm(grad)

    return opt, jax.jit(step)


@lru_cache(maxsize=32)
def adam_step(loss_fn, learning_rate: float, total_steps: int, warmup_steps: int,
              schedule: str, weight_decay: float, param_keys: tuple):
    """(optax AdamW, jit-compiled minibatch step) on ``loss_fn``, weight decay on the radial
    coefficients only; ``step(u, state, scales, batch) -> (u, state, loss, |grad|)``. Cached
    like :func:`quasi_newton_step`."""
    opt = adamw(learning_rate, total_steps, warmup_steps, schedule, weight_decay,
                dict.fromkeys(param_keys))

    def step(u, state, scales, batch):
        sc = Scaling(scales)
        value, grad = jax.value_and_grad(lambda v: loss_fn(sc.to_params(v), (batch,)))(u)
        updates, state = opt.update(grad, state, u)
        return optax.apply_updates(u, updates), state, value, optax.tree_utils.tree_norm(grad)

    return opt, jax.jit(step)


@lru_cache(maxsize=32)
def lm_functions(spec: ModelSpec, weights: LossWeights, mesh, loss_fn):
    """The jit-compiled pieces of the Levenberg–Marquardt step, once per model, weights and
    mesh: (Gauss–Newton sums over groups, loss, (loss, Jᵀr, |∇loss|), damped trial point)."""
    from jax.flatten_util import ravel_pytree

    from mtpjax.fit.lstsq import group_normal_eq, make_group_sums
    from mtpjax.fit.varpro import damped_solve

    neq = group_normal_eq(spec, weights)
    neq_fn = make_group_sums(lambda u, s, g: neq(u, s, g)[0], mesh)
    loss_jit = jax.jit(lambda v, sc, b: loss_fn(Scaling(sc).to_params(v), b))

    def value_grad(v, sc, b):
        value, grad = jax.value_and_grad(lambda x: loss_fn(Scaling(sc).to_params(x), b))(v)
        g = 0.5 * ravel_pytree(grad)[0]  # Jᵀr: loss = rᵀr
        return value, g, 2.0 * jnp.linalg.norm(g)

    def trial(v, H, g, lam):
        flat, unravel = ravel_pytree(v)
        return unravel(flat + damped_solve(H, g, lam))

    return neq_fn, loss_jit, jax.jit(value_grad), jax.jit(trial)


def _shapes(spec: ModelSpec):
    from mtpjax.params import param_shapes

    return param_shapes(spec)


def fit(pot: MTPotential, train, valid=None, config: FitConfig | None = None, **kwargs):
    """Convenience: ``Trainer(pot, train, valid, config).run()`` → trained :class:`MTPotential`."""
    config = config or FitConfig()
    result = Trainer(pot, train, valid, config, **kwargs).run()
    return pot.with_params(result["best_params"]), result


__all__ = ["FitConfig", "Trainer", "StopTraining", "fit", "default_mesh",
           "group_configurations"]
