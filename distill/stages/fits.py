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
    result = Trainer(pot, train, None, config, workdir=folder / "train", progress=progress).run(
        resume=True
    )
    tmp = folder / ".pot.mtp.tmp"
    write_mtp(tmp, pot.with_params(result["best_params"]))
    tmp.replace(folder / "pot.mtp")
    final = result["final"]["train"]
    return {
        "level": level,
        "train_structures": len(train),
        "train_atoms": int(sum(len(s) for s in train)),
        "iterations": f["max_iter"],
        "iterations_run": result["final"].get("iter"),
        "seconds": round(time.perf_counter() - start, 2),
        "train_energy_mae_meV_per_atom": 1e3 * final.get("energy_mae", float("nan")),
        "train_force_rmse_eV_per_A": final.get("force_rmse", float("nan")),
    }


def fits_stage(ctx) -> dict:
    """Every (level, model) fit, skipping those already stamped with the same inputs."""
    f = ctx.cfg["fit"]
    summary = {}
    jobs = [(lev, m) for lev in f["levels"] for m in ("direct", "indirect")]
    for i, (level, model) in enumerate(jobs):
        train_file = ctx.run_dir / "labels" / TRAIN_FILES[model]
        folder = fit_dir(ctx.run_dir, level, model)
        key = stage_key(
            fit=f, level=level, model=model, species=ctx.species, train=file_sha256(train_file)
        )
        name = f"{NAMES[model]}_{level}"
        if is_done(folder, key):
            ctx.log(f"fit {i + 1}/{len(jobs)} {name}: up to date")
            summary[f"L{level}_{model}"] = read_stamp(folder)["summary"]
            ctx.event("fit", name=name, status="skipped")
            continue
        ctx.log(f"fit {i + 1}/{len(jobs)} {name}: level {level} on {train_file.name}")
        ctx.event("fit", name=name, status="started")
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        out = fit_one(train_file, folder, level, f, ctx.species, ctx.progress)
        write_stamp(folder, key, time.perf_counter() - start, out)
        ctx.event("fit", name=name, status="done", seconds=out["seconds"])
        summary[f"L{level}_{model}"] = out
    return summary
