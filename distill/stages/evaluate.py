"""The evaluate stage: errors of every model on every test set, and cost per MD step.

Errors: energy MAE (meV/atom) and force MAE (eV/Å, over Cartesian components) of each M'_L and
M''_L against the teacher (M1) on the RSS, compression and DFT-test cells, and against DFT (M0)
on the DFT-test cells (the teacher's own M0 error is given too). Models are evaluated in padded
batches through `mtpjax.fit` (one compilation per neighbour-capacity bucket).

Cost: seconds per atom per MD step (energy + forces) of each model and of the teacher, measured
on the same compression cells, best of `cost_repeats` timed calls after a warm-up; the speed-up
is teacher cost / model cost (the paper's Fig. 3 x-axis).
"""

from __future__ import annotations

import time
from pathlib import Path

import ase.io
import numpy as np

from distill.hashing import structure_key
from distill.stages.cache import write_json
from distill.stages.data import load_teacher
from distill.stages.fits import NAMES, potential_path

#: (test set file in tests/, reference name) pairs evaluated
TARGETS = (
    ("rss.xyz", "M1"),
    ("compression.xyz", "M1"),
    ("dft_test.xyz", "M1"),
    ("dft_test_m0.xyz", "M0"),
)


def mae(pred_e, ref_e, n_atoms, pred_f, ref_f) -> dict:
    """Energy MAE per atom (meV/atom) and force-component MAE (eV/Å)."""
    de = (np.asarray(pred_e) - np.asarray(ref_e)) / np.asarray(n_atoms)
    df = np.abs(np.concatenate([np.ravel(p - r) for p, r in zip(pred_f, ref_f, strict=True)]))
    return {
        "energy_mae_meV_per_atom": float(1e3 * np.mean(np.abs(de))),
        "force_mae_eV_per_A": float(np.mean(df)),
        "n_structures": len(de),
        "n_atoms": int(np.sum(n_atoms)),
    }


def predict(pot_path: Path, frames, species) -> tuple[list[float], list[np.ndarray]]:
    """Energies (eV) and forces (eV/Å) of an MTP on `frames`, in order (batched, float64)."""
    import jax

    from mtpjax.fit.data import Sample, pack_buckets, precompute_neighbors
    from mtpjax.fit.loss import predict_group
    from mtpjax.io.mtp_file import read_mtp
    from mtpjax.model import ModelSpec

    pot = read_mtp(pot_path)
    spec = ModelSpec.from_potential(pot)
    params = pot.params()
    index = {s: i for i, s in enumerate(species)}
    samples = [
        Sample(
            positions=a.positions.copy(),
            types=np.array([index[s] for s in a.get_chemical_symbols()]),
            cell=a.cell.array.copy(),
            pbc=np.array(a.pbc, dtype=bool),
            energy=0.0,
            forces=np.zeros((len(a), 3)),
        )
        for a in frames
    ]
    precompute_neighbors(samples, pot.max_dist)
    fn = jax.jit(lambda p, g: predict_group(spec, p, g)[:2])
    energies = [0.0] * len(frames)
    forces: list[np.ndarray] = [np.zeros((0, 3))] * len(frames)
    for bucket in pack_buckets(samples, target_atoms=2048):
        for gi, group in enumerate(bucket.groups):
            g = jax.tree.map(lambda x, gi=gi: x[gi], bucket.batch)
            e, f = (np.asarray(v) for v in fn(params, g))
            conf = np.asarray(g.atom_conf)
            for c, k in enumerate(group):
                energies[k] = float(e[c])
                forces[k] = f[conf == c]
    return energies, forces


def read_frames(path: Path) -> list:
    """All frames of an extxyz file; [] for an empty file (an empty test set)."""
    return ase.io.read(path, index=":") if Path(path).stat().st_size else []


def refs(frames):
    return (
        [a.info["REF_energy"] for a in frames],
        [a.arrays["REF_forces"] for a in frames],
        [len(a) for a in frames],
    )


def errors(run_dir: Path, cfg: dict, species) -> dict:
    """{model: {target: metrics}} for every fitted model, plus the teacher vs M0."""
    tests = Path(run_dir) / "tests"
    sets = {name: read_frames(tests / name) for name, _ in TARGETS}
    m0 = sets["dft_test_m0.xyz"]
    # the teacher-labelled DFT cells in the order of the M0 file (the store may reorder)
    by_key = {structure_key(a): a for a in sets["dft_test.xyz"]}
    sets["dft_test_m0.xyz"] = [a for a in m0 if structure_key(a) in by_key]
    teacher_m0 = [by_key[structure_key(a)] for a in sets["dft_test_m0.xyz"]]
    te, tf, n = refs(teacher_m0)
    de, df, _ = refs(sets["dft_test_m0.xyz"])
    out = {"teacher": {"dft_test_m0.xyz:M0": mae(te, de, n, tf, df)}}
    for level in cfg["fit"]["levels"]:
        for model in ("direct", "indirect"):
            pot = potential_path(run_dir, level, model)
            row = {}
            for name, ref in TARGETS:
                frames = sets[name]
                if not frames:
                    continue
                e, f = predict(pot, frames, species)
                ref_e, ref_f, n = refs(frames)
                row[f"{name}:{ref}"] = mae(e, ref_e, n, f, ref_f)
            out[f"{NAMES[model]}_{level}"] = row
    return out


def time_calc(calc, cells, repeats: int) -> float:
    """Best-of-`repeats` seconds per atom per energy+forces call on `cells` (after a warm-up)."""
    best = np.inf
    rng = np.random.default_rng(0)
    for rep in range(repeats + 2):
        total, n = 0.0, 0
        for atoms in cells:
            a = atoms.copy()
            a.positions += rng.normal(0, 1e-3, a.positions.shape)  # defeat result caching
            a.calc = calc
            t = time.perf_counter()
            a.get_potential_energy()
            a.get_forces()
            total += time.perf_counter() - t
            n += len(a)
        if rep > 1:  # reps 0 and 1 compile / warm up (neighbour-list capacities settle)
            best = min(best, total / n)
    return float(best)


def cost(run_dir: Path, cfg: dict, species) -> dict:
    """Seconds per atom-step of the teacher and every model on the same compression cells."""
    from distill.teachers import build_calculator
    from mtpjax.calculator import MTPCalculator

    cells = read_frames(Path(run_dir) / "tests" / "compression.xyz")
    if not cells:
        cells = read_frames(Path(run_dir) / "tests" / "dft_test.xyz")
    cells = cells[: cfg["evaluate"]["cost_cells"]]
    reps = cfg["evaluate"]["cost_repeats"]
    out = {
        "cells": len(cells),
        "atoms_per_cell": [len(a) for a in cells],
        "teacher_s_per_atom_step": time_calc(build_calculator(load_teacher(run_dir)), cells, reps),
    }
    for level in cfg["fit"]["levels"]:
        for model in ("direct", "indirect"):
            calc = MTPCalculator(str(potential_path(run_dir, level, model)), species=species)
            s = time_calc(calc, cells, reps)
            out[f"{NAMES[model]}_{level}"] = {
                "s_per_atom_step": s,
                "speedup_vs_teacher": out["teacher_s_per_atom_step"] / s,
            }
    return out


def evaluate_stage(ctx) -> dict:
    """errors.json and cost.json in the stage folder; the summary holds both."""
    ctx.log("errors of every model on every test set")
    err = errors(ctx.run_dir, ctx.cfg, ctx.species)
    write_json(ctx.folder / "errors.json", err)
    ctx.log("cost per MD step (teacher and models, same cells)")
    c = cost(ctx.run_dir, ctx.cfg, ctx.species)
    write_json(ctx.folder / "cost.json", c)
    return {"errors": err, "cost": c}
