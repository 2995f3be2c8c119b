"""``mtpjax train INIT.mtp TRAIN [options]``: fit an MTP, with ``mlp train``'s flags.

``INIT.mtp`` is an untrained template (``--init-params=random``, the default) or a trained
potential (``--init-params=same``). TRAIN (and ``--valid-cfgs``) may be ``.cfg``, extxyz or an ASE
database; ``--species`` maps elements to MLIP types for the latter two. Everything else can come
from a TOML file (``--config``): keys of :class:`mtpjax.fit.trainer.FitConfig`, top level or in
a ``[fit]`` table; flags on the command line win. Outputs: the best-on-validation potential
(``--trained-pot-name``), and in ``--workdir``: ``log.jsonl`` (one JSON record per iteration),
``learning_curve.png`` and ``checkpoint.npz`` (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import tomllib
from pathlib import Path

from mtpjax.errors import InputError

# flag → FitConfig field (flags left at None do not override the TOML file / defaults)
FLAG_FIELDS = {
    "energy_weight": "energy_weight", "force_weight": "force_weight",
    "stress_weight": "stress_weight", "weighting": "weighting", "max_iter": "max_iter",
    "init_params": "init_params", "seed": "seed", "optimizer": "optimizer",
    "learning_rate": "learning_rate", "batch_size": "batch_size",
    "eval_every": "eval_every", "checkpoint_every": "checkpoint_every",
    "compile_cache": "compile_cache", "valid_fraction": "valid_fraction",
    "valid_seed": "valid_seed", "patience": "patience", "valid_rtol": "valid_rtol",
    "refit_linear": "refit_linear",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("init", metavar="INIT.mtp", help="template or trained .mtp")
    parser.add_argument("train", metavar="TRAIN", help="training data (.cfg, extxyz, ASE db)")
    g = parser.add_argument_group("mlp train flags")
    g.add_argument("--energy-weight", type=float, help="w_E (default 1)")
    g.add_argument("--force-weight", type=float, help="w_F (default 0.01; paper: 0.1)")
    g.add_argument("--stress-weight", type=float, help="w_S (default 0.001)")
    g.add_argument("--weighting", choices=["vibrations", "molecules", "structures"],
                   help="size convention of the loss (default vibrations, as mlp)")
    g.add_argument("--max-iter", type=int, help="iterations (default 1000)")
    g.add_argument("--trained-pot-name", default="Trained.mtp", help="output potential")
    g.add_argument("--valid-cfgs", help="validation data (best-on-validation is saved)")
    g.add_argument("--init-params", choices=["random", "same"])
    g.add_argument("--skip-preinit", action="store_true", default=None,
                   help="no least-squares initialisation of the linear coefficients")
    o = parser.add_argument_group("mtpjax options")
    o.add_argument("--species", nargs="+", help="element of each MLIP type, e.g. --species Si")
    o.add_argument("--seed", type=int, help="random initialisation seed (default 0)")
    o.add_argument("--optimizer", choices=["varpro", "lbfgs", "bfgs", "lm", "adam"],
                   help="default varpro (variable projection, docs/fitting.md)")
    o.add_argument("--learning-rate", type=float, help="Adam peak learning rate")
    o.add_argument("--batch-size", type=int, help="Adam: configurations per minibatch")
    o.add_argument("--eval-every", type=int, help="train-error evaluation interval")
    o.add_argument("--valid-fraction", type=float, metavar="F",
                   help="hold out this fraction of TRAIN for validation (instead of "
                        "--valid-cfgs; default 0)")
    o.add_argument("--valid-seed", type=int, help="seed of the --valid-fraction split")
    o.add_argument("--patience", type=int, metavar="N",
                   help="stop when the validation loss has not improved for N iterations "
                        "(0: never, the default); the best-on-validation potential is saved")
    o.add_argument("--valid-rtol", type=float, metavar="R",
                   help="an improvement must lower the best validation loss by this "
                        "fraction (default 0)")
    o.add_argument("--refit-linear", action="store_true", default=None,
                   help="after the fit, re-solve the linear coefficients of the saved "
                        "potential on TRAIN and the validation data together (e.g. after "
                        "--valid-fraction --patience)")
    o.add_argument("--monitor-cfgs", metavar="FILE",
                   help="data whose errors are only logged ('monitor' in log.jsonl), never "
                        "used to select or stop (e.g. a test set next to --valid-fraction)")
    o.add_argument("--checkpoint-every", type=int, help="checkpoint interval (iterations)")
    o.add_argument("--compile-cache", metavar="DIR",
                   help="persistent compilation cache (default ~/.cache/mtpjax/jax or "
                        "$MTPJAX_COMPILE_CACHE; 'off': none)")
    o.add_argument("--config", metavar="TOML", help="TOML file with further fit options")
    o.add_argument("--workdir", help="log, plot and checkpoint folder "
                   "(default: <trained-pot-name>.run)")
    o.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    o.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    d = parser.add_argument_group("multi-host data parallelism (jax.distributed)")
    d.add_argument("--distributed", action="store_true",
                   help="join a multi-process run (jax.distributed.initialize; on SLURM/Open "
                        "MPI the options below are detected): batches are sharded over the "
                        "devices of all processes, process 0 writes the outputs")
    d.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    d.add_argument("--num-processes", type=int)
    d.add_argument("--process-id", type=int)
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    add_stress_arguments(o)


def add_stress_arguments(parser) -> None:
    """``--stress-unit`` / ``--stress-sign``: how stress labels are written (docs/units.md)."""
    from mtpjax.units import STRESS_SIGNS, STRESS_UNITS

    parser.add_argument("--stress-unit", choices=list(STRESS_UNITS), default="eV/A3",
                        help="unit of the stress labels: extxyz/ASE stress in UNIT, .cfg "
                             "PlusStress in UNIT·Å³ (default eV/A3, i.e. PlusStress in eV)")
    parser.add_argument("--stress-sign", choices=list(STRESS_SIGNS), default="ase",
                        help="sign of extxyz/ASE stress labels: ase (positive under tension, "
                             "default) or vasp (positive under compression)")


def _species(values):
    if not values:
        return None
    out = []
    for v in values:
        out += [s for s in v.replace(",", " ").split() if s]
    return out


def build_config(args):
    """FitConfig from defaults ← TOML ← flags."""
    from mtpjax.fit.trainer import FitConfig

    values = {}
    from_toml: dict[str, str] = {}  # option -> its dotted key in the TOML file
    text = None
    if args.config:
        try:
            text = Path(args.config).read_text()
            doc = tomllib.loads(text)
        except OSError as exc:
            raise InputError(f"cannot read the config: {exc.strerror}", args.config) from exc
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            from mtpjax.config_check import toml_error

            raise InputError(*toml_error(exc)[:1], args.config, toml_error(exc)[1]) from exc
        top = {k: v for k, v in doc.items() if not isinstance(v, dict)}
        values.update(top)
        from_toml.update({k: k for k in top})
        values.update(doc.get("fit", {}))
        from_toml.update({k: f"fit.{k}" for k in doc.get("fit", {})})
    for flag, name in FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            values[name] = value
            from_toml.pop(name, None)
    if args.skip_preinit:
        values["skip_preinit"] = True
    species = _species(args.species) or values.pop("species", None)
    values.pop("species", None)
    try:
        return FitConfig.from_dict(values), species
    except (TypeError, ValueError) as exc:
        # name the TOML line of the option at fault, or the flag
        message = str(exc)
        names = [n for n in re.findall(r"[a-z_]+", message) if n in values]
        name = names[0] if names else None
        if name in from_toml:
            from mtpjax.config_check import toml_key_line

            raise InputError(f"{from_toml[name]}: {message}", args.config,
                             toml_key_line(text, from_toml[name])) from exc
        flag = next((f for f, n in FLAG_FIELDS.items() if n == name), None)
        where = f"--{flag.replace('_', '-')}: " if flag else ""
        raise InputError(f"{where}bad fit option: {message}") from exc


def plot_learning_curve(history, path) -> None:
    """Loss and train/validation errors against iteration (PNG, matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in history if not r.get("final")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    it = [r["iter"] for r in recs]
    axes[0].semilogy(it, [r["loss"] for r in recs], label="train loss")
    if any("valid" in r for r in recs):
        axes[0].semilogy([r["iter"] for r in recs if "valid" in r],
                         [r["valid"]["loss"] for r in recs if "valid" in r], label="valid loss")
    for ax, key, scale, label in ((axes[1], "energy_mae", 1e3, "energy MAE (meV/atom)"),
                                  (axes[2], "force_rmse", 1.0, "force RMSE (eV/Å)")):
        for part in ("train", "valid"):
            pts = [(r["iter"], r[part][key] * scale) for r in recs
                   if part in r and key in r[part]]
            if pts:
                ax.semilogy(*zip(*pts, strict=True), marker=".", label=part)
        ax.set_ylabel(label)
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def init_distributed(args) -> None:
    """``jax.distributed.initialize`` from the flags (CPU collectives over gloo)."""
    import jax

    if not (args.distributed or args.coordinator):
        return
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError):  # an older/newer JAX without the option
        pass
    kwargs = {k: v for k, v in (("coordinator_address", args.coordinator),
                                ("num_processes", args.num_processes),
                                ("process_id", args.process_id)) if v is not None}
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"--distributed: {exc}") from exc


def run(args) -> int:
    import jax

    init_distributed(args)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    from mtpjax.fit.data import load_fit_data
    from mtpjax.fit.trainer import Trainer, is_main_process
    from mtpjax.io.mtp_file import read_mtp, write_mtp

    config, species = build_config(args)
    pot = read_mtp(args.init)  # errors: InputError, one line from mtpjax.cli
    if config.init_params == "same" and not pot.is_trained:
        raise InputError("has no coefficients; use --init-params=random", args.init)
    if config.valid_fraction > 0 and args.valid_cfgs:
        raise InputError("give --valid-fraction (a split of TRAIN) or --valid-cfgs, not both")
    if config.patience and not (config.valid_fraction > 0 or args.valid_cfgs):
        raise InputError("--patience needs validation data: --valid-fraction or --valid-cfgs")
    train, valid = load_fit_data(
        pot, args.train, args.valid_cfgs, species=species, energy_weight=config.energy_weight,
        force_weight=config.force_weight, stress_unit=args.stress_unit,
        stress_sign=args.stress_sign)
    if config.valid_fraction > 0:
        from mtpjax.fit.data import split_validation

        try:
            train, valid = split_validation(train, config.valid_fraction, config.valid_seed)
        except ValueError as exc:
            raise InputError(f"--valid-fraction: {exc}", args.train) from exc
    monitor = None
    if args.monitor_cfgs:
        monitor, _ = load_fit_data(
            pot, args.monitor_cfgs, None, species=species, energy_weight=config.energy_weight,
            force_weight=config.force_weight, stress_unit=args.stress_unit,
            stress_sign=args.stress_sign)

    out = Path(args.trained_pot_name)
    workdir = Path(args.workdir) if args.workdir else out.with_name(out.name + ".run")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(
        {"argv": sys.argv, "species": species, **config.__dict__}, indent=2, default=str))
    # the split is done above (a clean error naming TRAIN); the trainer gets its result
    trainer = Trainer(pot, train, valid, dataclasses.replace(config, valid_fraction=0.0),
                      workdir=workdir, progress=not args.quiet, monitor=monitor)
    n_atoms = sum(len(s) for s in train)
    print(f"mtpjax train: {len(train)} configurations ({n_atoms} atoms)"
          + (f", {len(valid)} validation" if valid else "")
          + f"; {trainer.n_dev} device(s); optimizer {config.optimizer}", file=sys.stderr)
    result = trainer.run(resume=not args.no_resume)
    if result.get("stopped"):
        print(f"mtpjax train: interrupted at iteration {result['iteration']}; checkpoint in "
              f"{workdir}; rerun the command to resume", file=sys.stderr)
        return 130
    if not is_main_process():
        return 0
    write_mtp(out, pot.with_params(result["best_params"]))
    plot_learning_curve(trainer.history, workdir / "learning_curve.png")
    final = result["final"]
    on = "validation" if valid and trainer.config.select_on_valid else "training"
    lines = [f"saved {out} (best on {on} set, iteration "
             f"{final['best_iter']}; stopped after {final['iterations']} iteration(s): "
             f"{final['stop_reason']})"]
    for part in ("train", "valid", "monitor"):
        if part in final:
            m = final[part]
            lines.append(f"  {part}: energy MAE {1e3 * m.get('energy_mae', float('nan')):.3f} "
                         f"meV/atom, force RMSE {m.get('force_rmse', float('nan')):.4f} eV/Å")
    print("\n".join(lines))
    return 0
