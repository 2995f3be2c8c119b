"""The evaluate stage: errors of every model on every test set, and cost per MD step.

Errors: energy MAE (meV/atom) and force MAE (eV/Å, over Cartesian components) of each M'_L and
M''_L against the teacher (M1) on the RSS, compression and DFT-test cells, and against DFT (M0)
on the DFT-test cells (the teacher's own M0 error is given too). Models are evaluated in padded
batches through `mtpjax.fit` (one compilation per neighbour-capacity bucket).

Cost, as the paper measures it: MD throughput (atom-steps per second) of each model (the MD
engine, :func:`md.throughput.mtp_md_rate`, after a compiling warm-up) and of the teacher (ASE
Langevin MD, a few steps after a warm-up step) on the same cell of ``8·md_repeat³`` atoms
(demo: 1000); the speed-up is model rate / teacher rate, and the cost relative to the teacher
(the paper's Fig. 3 x-axis) its inverse. Target: a speed-up ≥ :data:`TARGET_SPEEDUP` at
1000 atoms, reported as met or not.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

import ase.io
import numpy as np

from distill.hashing import structure_key
from distill.stages.cache import read_frames, write_json
from distill.stages.data import load_teacher
from distill.stages.fits import NAMES, potential_path

#: the speed-up of student MD over teacher MD the project aims at (issue 18), at 1000 atoms
TARGET_SPEEDUP = 30.0

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


@lru_cache(maxsize=16)
def predictor(spec):
    """A jit-compiled ``(params, group) -> (energies [C] eV, forces [A, 3] eV/Å)`` for MTPs of
    the model ``spec`` (`ModelSpec.from_potential` gives one spec per model structure, so
    M'_L and M''_L of one template, and every later call in the process, share the function
    and its compilations: it compiles once per group shape)."""
    import jax

    from mtpjax.fit.loss import predict_group

    return jax.jit(lambda p, g: predict_group(spec, p, g, virials=False)[:2])


def predict(pot_path: Path, frames, species) -> tuple[list[float], list[np.ndarray]]:
    """Energies (eV) and forces (eV/Å) of an MTP on `frames`, in order (batched, float64).
    Potentials of one model structure share the compiled programs (:func:`predictor`)."""
    import jax

    from mtpjax.fit.data import Sample, pack_buckets, precompute_neighbors
    from mtpjax.io.mtp_file import read_mtp
    from mtpjax.model import ModelSpec

    pot = read_mtp(pot_path)
    fn = predictor(ModelSpec.from_potential(pot))
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
    # the DFT test cells are the same structures under both references: predicted once
    m0_order = [structure_key(a) for a in sets["dft_test_m0.xyz"]]
    for level in cfg["fit"]["levels"]:
        for model in ("direct", "indirect"):
            pot = potential_path(run_dir, level, model)
            row, done = {}, {}
            for name, ref in TARGETS:
                frames = sets[name]
                if not frames:
                    continue
                if name == "dft_test_m0.xyz" and "dft_test.xyz" in done:
                    e0, f0 = done["dft_test.xyz"]
                    at = {structure_key(a): k for k, a in enumerate(sets["dft_test.xyz"])}
                    e = [e0[at[k]] for k in m0_order]
                    f = [f0[at[k]] for k in m0_order]
                else:
                    e, f = predict(pot, frames, species)
                    done[name] = (e, f)
                ref_e, ref_f, n = refs(frames)
                row[f"{name}:{ref}"] = mae(e, ref_e, n, f, ref_f)
            out[f"{NAMES[model]}_{level}"] = row
    return out


def cost_cell(cfg: dict, species) -> ase.Atoms:
    """The cell every model's and the teacher's MD throughput is measured on: diamond
    (a = 5.431 Å) repeated ``evaluate.md_repeat``³ times (8·r³ atoms), rattled by 0.05 Å."""
    from md.analysis.crystals import build_crystal

    r = cfg["evaluate"]["md_repeat"]
    atoms = build_crystal("diamond", species[0]).repeat((r, r, r))
    atoms.rattle(0.05, seed=0)
    return atoms


def teacher_md_rate(calc, atoms, steps: int, temperature_K: float) -> dict:
    """The teacher's MD throughput: ASE Langevin NVT (`distill.sampling.run_protocol`), one
    untimed warm-up step, then ``steps`` timed steps (one energy+forces call each). A short run:
    its rate is what a long run of the same cell would sustain (no compilation, no caches)."""
    from distill import sampling
    from md.throughput import nvt_stage

    atoms = atoms.copy()
    sampling.run_protocol(atoms, calc, [nvt_stage("warm-up", 1, temperature_K)],
                          thermo_every=10**9)
    t0 = time.perf_counter()
    sampling.run_protocol(atoms, calc, [nvt_stage("timed", steps, temperature_K)], seed=1,
                          thermo_every=10**9)
    wall = time.perf_counter() - t0
    n = len(atoms)
    return {"n_atoms": n, "steps": int(steps), "warmup_steps": 1, "wall_s": wall,
            "atom_steps_per_s": steps * n / wall, "s_per_atom_step": wall / (steps * n)}


def cost(run_dir: Path, cfg: dict, species) -> dict:
    """MD throughput (atom-steps/s) of the teacher and every model on the same cell
    (:func:`cost_cell`); the speed-up of a model is its rate over the teacher's."""
    from distill.teachers import build_calculator
    from md.throughput import mtp_md_rate

    e = cfg["evaluate"]
    atoms = cost_cell(cfg, species)
    teacher = teacher_md_rate(build_calculator(load_teacher(run_dir)), atoms, e["teacher_steps"],
                              e["md_temperature_K"])
    out = {
        "method": "md_throughput",
        "n_atoms": len(atoms),
        "cell": f"diamond {e['md_repeat']}x{e['md_repeat']}x{e['md_repeat']} (a = 5.431 A, "
                f"rattled 0.05 A), NVT Langevin {e['md_temperature_K']:g} K, 1 fs",
        "teacher": {**teacher, "how": f"ASE Langevin MD, {teacher['steps']} step(s) timed "
                    "after 1 warm-up step; the rate of this short run is taken as the "
                    "teacher's MD throughput"},
        "teacher_s_per_atom_step": teacher["s_per_atom_step"],
        "target_speedup": TARGET_SPEEDUP,
    }
    for level in cfg["fit"]["levels"]:
        for model in ("direct", "indirect"):
            r = mtp_md_rate(str(potential_path(run_dir, level, model)), atoms, species,
                            steps=e["md_steps"], warmup_steps=e["md_warmup_steps"],
                            temperature_K=e["md_temperature_K"])
            out[f"{NAMES[model]}_{level}"] = {
                **r, "speedup_vs_teacher": r["atom_steps_per_s"] / teacher["atom_steps_per_s"]}
    return out


def evaluate_stage(ctx) -> dict:
    """errors.json and cost.json in the stage folder; the summary holds both."""
    ctx.log("errors of every model on every test set")
    err = errors(ctx.run_dir, ctx.cfg, ctx.species)
    write_json(ctx.folder / "errors.json", err)
    ctx.log("MD throughput (teacher and models, same cell)")
    c = cost(ctx.run_dir, ctx.cfg, ctx.species)
    write_json(ctx.folder / "cost.json", c)
    return {"errors": err, "cost": c}
