"""``mtpjax md CONFIG.toml``: run molecular dynamics from a TOML config (see :mod:`md.config`).

The config is validated completely (keys, values, files) before anything is computed. Outputs go
to ``run.output_dir`` (or ``--output-dir``): ``thermo.csv``/``.jsonl``, ``trajectory.extxyz``
/``.traj``, ``restart.npz`` (several processes: ``trajectory.p{rank}.*`` and
``restart.parts/p{rank}.npz`` per process, read as one by :mod:`md.io`); ``--resume``
continues from the newer restart. With a ``[grade]``
section: ``grades.csv`` (γ every ``grade.every`` steps; also a ``gamma`` column in the thermo
log, γ on graded steps, NaN on the others), ``preselected.cfg`` (configurations
with γ > gamma_select) and exit status 3 with one line when γ > gamma_break.
"""

from __future__ import annotations

import argparse
import sys

from md.config import ConfigError, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="TOML config file (see md/configs/)")
    parser.add_argument("--output-dir", "-o", default=None, help="override run.output_dir")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newer of OUTPUT_DIR/restart.npz and the "
                             "per-process parts OUTPUT_DIR/restart.parts/")
    parser.add_argument("--devices", default=None,
                        help="number of devices to shard atoms over, or 'all' (override)")
    parser.add_argument("--decomposition", default=None,
                        choices=["auto", "domain", "replicated"],
                        help="several devices: spatial domains or replicated atoms (override)")
    parser.add_argument("--coordinator", default=None,
                        help="multi-process run: HOST:PORT of process 0 (jax.distributed)")
    parser.add_argument("--num-processes", type=int, default=None,
                        help="multi-process run: number of processes")
    parser.add_argument("--process-id", type=int, default=None,
                        help="multi-process run: index of this process (0 … N−1)")
    parser.add_argument("--distributed", action="store_true",
                        help="multi-process run configured by SLURM / OpenMPI variables")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--gamma-select", type=float, default=None, metavar="G",
                        help="save configurations with MaxVol grade γ > G (needs [grade] "
                             "active_set; overrides grade.gamma_select)")
    parser.add_argument("--gamma-break", type=float, default=None, metavar="G",
                        help="stop the run when γ > G (overrides grade.gamma_break); exit "
                             "status 3")
    parser.add_argument("--check", action="store_true",
                        help="validate the config and build the structure, then stop")


def _devices(value):
    if value is None or value == "all":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"--devices: expected a positive integer or 'all', got {value!r}")
    return n


def init_distributed(coordinator=None, num_processes=None, process_id=None,
                     auto: bool = False) -> bool:
    """``jax.distributed.initialize`` from explicit settings (all three) or, with ``auto``,
    from the SLURM / OpenMPI environment; CPU collectives use gloo. Returns whether a
    multi-process run was set up. Must run before any JAX computation."""
    explicit = [coordinator, num_processes, process_id]
    if all(v is None for v in explicit) and not auto:
        return False
    if any(v is None for v in explicit) and not all(v is None for v in explicit):
        raise ConfigError("--coordinator, --num-processes and --process-id go together "
                          "(or use --distributed under SLURM / OpenMPI)")
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id must be in 0 … {num_processes - 1}, got {process_id}")
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator is None:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=coordinator,
                                   num_processes=num_processes, process_id=process_id)
    return True


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)  # ConfigError (an InputError): one line from mtpjax.cli
    devices = _devices(args.devices)
    init_distributed(args.coordinator, args.num_processes, args.process_id, args.distributed)
    import jax

    jax.config.update("jax_enable_x64", cfg.dtype == "float64")
    from md.runner import ExtrapolationBreak, run_config
    from md.structures import build_structure
    from mtpjax.cli import error_exit
    from mtpjax.errors import GeometryError

    where = cfg.structure.get("file", args.config)
    try:
        if args.check:
            atoms = build_structure(cfg)
            print(f"{args.config}: OK — {len(atoms)} atoms, {len(cfg.stages)} stage(s), "
                  f"{cfg.total_steps} steps of {cfg.timestep_fs} fs")
            return 0
        sim = run_config(cfg, resume=args.resume, progress=False if args.no_progress else None,
                         devices=devices, output_dir=args.output_dir,
                         decomposition=args.decomposition,
                         gamma_select=args.gamma_select, gamma_break=args.gamma_break)
    except ExtrapolationBreak as exc:  # γ > gamma_break: a result, not a crash
        print(f"mtpjax md: {exc}", file=sys.stderr)
        return 3
    except GeometryError as exc:  # coincident atoms, singular cell: in the starting structure
        if exc.path is None:
            exc = exc.located(where, None, "starting structure: ")
        return error_exit(exc)
    except (ValueError, FileExistsError) as exc:
        return error_exit(exc)
    st = sim.stats
    rate = st["steps"] * sim.n_atoms / max(st["wall_s"], 1e-9)
    print(f"done: {sim.step} steps, {sim.n_atoms} atoms, {st['rebuilds']} neighbour rebuilds "
          f"({st['reallocations']} reallocations), {rate:.3g} atom-steps/s; "
          f"output in {args.output_dir or cfg.output_dir}")
    if sim.selected:
        print(f"{len(sim.selected)} configuration(s) with γ > {sim.gamma_select:g} saved to "
              f"{sim._selected_path}")
    return 0
