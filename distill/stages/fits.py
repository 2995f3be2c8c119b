"""The fits stage: M'_L (D0, DFT labels) and M''_L (D0 relabelled + D1, teacher labels).

Both models of a level get the same hyper-parameters (the ``[fit]`` table: level, radial basis,
cutoffs, weights, optimiser, iterations, seed). Every fit is its own sub-task with a stamp in
``fits/L<level>_<model>/``; the trainer checkpoints into ``train/`` there, so a killed pipeline
resumes inside the unfinished fit and does not redo the finished ones.
"""

from __future__ import annotations

import time
from pathlib import Path

from distill.hashing import file_sha256
from distill.stages.cache import is_done, read_stamp, stage_key, write_stamp

TRAIN_FILES = {"direct": "train_direct.xyz", "indirect": "train_indirect.xyz"}
NAMES = {"direct": "M'", "indirect": "M''"}


def fit_dir(run_dir: Path, level: int, model: str) -> Path:
    return Path(run_dir) / "fits" / f"L{level:02d}_{model}"


def potential_path(run_dir: Path, level: int, model: str) -> Path:
    """The trained potential of one fit."""
    return fit_dir(run_dir, level, model) / "pot.mtp"


def untrained(level: int, f: dict, species: list[str]):
    """The untrained MTP of `level` (the same template as ``mtpjax new``)."""
    from mtpjax.api import new_potential

    return new_potential(level, len(species), min_dist=f["min_dist_A"],
                         max_dist=f["max_dist_A"], radial_basis_size=f["radial_basis_size"])


def fit_one(
    train_file: Path, folder: Path, level: int, f: dict, species: list[str], progress: bool
) -> dict:
    """Fit one potential into ``folder/pot.mtp``; return its final training errors and time."""
    from mtpjax.fit import FitConfig, Trainer, load_dataset
    from mtpjax.io.mtp_file import write_mtp

    pot = untrained(level, f, species)
    config = FitConfig(
        max_iter=f["max_iter"],
        energy_weight=f["energy_weight"],
        force_weight=f["force_weight"],
        stress_weight=f["stress_weight"],
        optimizer=f["optimizer"],
        seed=f["seed"],
        checkpoint_every=5,
        eval_every=max(f["max_iter"], 1),
        valid_fraction=f["valid_fraction"],
        valid_seed=f["valid_seed"],
        patience=f["patience"],
        valid_rtol=f["valid_rtol"],
    )
    train = load_dataset(
        train_file,
        cutoff=pot.max_dist,
        species=list(species),
        species_count=pot.species_count,
        energy_weight=f["energy_weight"],
        force_weight=f["force_weight"],
    )
    start = time.perf_counter()
    trainer = Trainer(pot, train, None, config, workdir=folder / "train", progress=progress)
    result = trainer.run(resume=True)
    tmp = folder / ".pot.mtp.tmp"
    write_mtp(tmp, pot.with_params(result["best_params"]))
    tmp.replace(folder / "pot.mtp")
    final = result["final"]
    valid = final.get("valid", {})
    return {
        "level": level,
        "train_structures": len(trainer.train_samples),
        "train_atoms": int(sum(len(s) for s in trainer.train_samples)),
        "valid_structures": len(trainer.valid_samples),
        # the iterations actually run (not the cap), why the fit stopped (converged,
        # patience, max_iter, ...), and the iteration whose coefficients were kept
        "iterations": final["iterations"],
        "max_iter": f["max_iter"],
        "stop_reason": final["stop_reason"],
        "best_iter": final["best_iter"],
        "seconds": round(time.perf_counter() - start, 2),
        "train_energy_mae_meV_per_atom": 1e3 * final["train"].get("energy_mae", float("nan")),
        "train_force_rmse_eV_per_A": final["train"].get("force_rmse", float("nan")),
        "valid_energy_mae_meV_per_atom": 1e3 * valid.get("energy_mae", float("nan")),
        "valid_force_rmse_eV_per_A": valid.get("force_rmse", float("nan")),
    }


def fresh_workdir(train_dir: Path, key: str) -> None:
    """The trainer's folder for the fit with stage key ``key``: kept (the trainer resumes its
    checkpoint) only when an interrupted fit with the same key left it; a checkpoint of other
    inputs or settings (a changed config) is removed, never resumed."""
    import shutil

    marker = train_dir / "key"
    if train_dir.exists() and not (marker.is_file() and marker.read_text() == key):
        shutil.rmtree(train_dir)
    train_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(key)


def _fit_in_worker(train_file: Path, folder: Path, level: int, f: dict, species: list[str]):
    """:func:`fit_one` in a spawned worker process (float64, no progress bar)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    return fit_one(train_file, folder, level, f, species, False)


def fits_stage(ctx) -> dict:
    """Every (level, model) fit, skipping those already stamped with the same inputs.

    With ``fit.workers`` = n > 1 the fits run in n spawned worker processes at once (the
    highest levels first), else one after the other in this process."""
    f = ctx.cfg["fit"]
    summary = {}
    jobs = [(lev, m) for lev in f["levels"] for m in ("direct", "indirect")]
    todo = []
    for i, (level, model) in enumerate(jobs):
        train_file = ctx.run_dir / "labels" / TRAIN_FILES[model]
        folder = fit_dir(ctx.run_dir, level, model)
        key = stage_key(
            fit={k: v for k, v in f.items() if k != "workers"}, level=level, model=model,
            species=ctx.species, train=file_sha256(train_file)
        )
        name = f"{NAMES[model]}_{level}"
        if is_done(folder, key):
            ctx.log(f"fit {i + 1}/{len(jobs)} {name}: up to date")
            summary[f"L{level}_{model}"] = read_stamp(folder)["summary"]
            ctx.event("fit", name=name, status="skipped")
            continue
        todo.append((i, level, model, train_file, folder, key, name))

    def start(job):
        i, level, model, train_file, folder, key, name = job
        ctx.log(f"fit {i + 1}/{len(jobs)} {name}: level {level} on {train_file.name}")
        ctx.event("fit", name=name, status="started")
        fresh_workdir(folder / "train", key)
        return time.perf_counter()

    def finish(job, out, t0):
        _, level, model, _, folder, key, name = job
        write_stamp(folder, key, time.perf_counter() - t0, out)
        ctx.event("fit", name=name, status="done", seconds=out["seconds"])
        ctx.log(f"fit {name}: {out['iterations']} iterations ({out['stop_reason']}), "
                f"{out['seconds']:.0f} s")
        summary[f"L{level}_{model}"] = out

    workers = min(f.get("workers", 1), len(todo))
    if workers > 1:
        from concurrent.futures import as_completed

        from distill.executors import process_pool

        with process_pool(workers) as pool:
            futures = {}
            for job in sorted(todo, key=lambda j: -j[1]):  # the slow, high levels first
                t0 = start(job)
                futures[pool.submit(_fit_in_worker, job[3], job[4], job[1], f,
                                    list(ctx.species))] = (job, t0)
            for fut in as_completed(futures):
                job, t0 = futures[fut]
                finish(job, fut.result(), t0)
    else:
        for job in todo:
            t0 = start(job)
            finish(job, fit_one(job[3], job[4], job[1], f, ctx.species, ctx.progress), t0)
    return {k: summary[k] for k in (f"L{lev}_{m}" for lev, m in jobs) if k in summary}
