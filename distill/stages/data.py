"""Stages that make data with the teacher: teacher, sample (D1), labels, tests.

Each function takes the stage context (`distill.pipeline.Context`) and returns a JSON summary;
files go into ``ctx.folder``. Labels pass through the dataset store (`distill.engine.label`), so
provenance (teacher id, source) is kept and a rerun labels only what is missing.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from distill import sampling, testsets
from distill.stages.cache import read_frames, read_json, write_extxyz, write_json, write_text
from distill.teacher_run import rss_to_file, run_to_files
from distill.teachers import TeacherSpec, build_calculator, teacher_identity

TEACHER_JSON = "teacher.json"


# ------------------------------------------------------------------ teacher
def teacher_stage(ctx) -> dict:
    """Fit the quick GAP on D0 (``fit_gap = true``) or take ``teacher.spec``; write teacher.json."""
    t = ctx.cfg["teacher"]
    extra = {}
    if t["fit_gap"]:
        from distill.gap_fit import MODEL_NAME, GapSettings, accuracy, fit_gap

        settings = dataclasses.replace(GapSettings(), soap_sparse=t["gap_sparse"])
        out = ctx.folder / "gap"
        ctx.log(f"fitting GAP teacher ({t['gap_sparse']} SOAP sparse points) on "
                f"{ctx.cfg['d0']['train']}")
        stamp = fit_gap(Path(ctx.cfg["d0"]["train"]), out, settings, threads=t["gap_threads"])
        spec = TeacherSpec("gap", str((out / MODEL_NAME).resolve()))
        acc = accuracy(out / MODEL_NAME, Path(ctx.cfg["d0"]["test"]))
        extra = {"gap_fit_seconds": stamp["fit_seconds"], "accuracy_vs_dft": acc}
    else:
        r = t["resolved"]
        model = str(Path(r["model"]).resolve()) if r["kind"] != "ase" else r["model"]
        spec = TeacherSpec(r["kind"], model, tuple(r["species"]), r["kwargs"])
    identity = teacher_identity(spec)
    doc = {"spec": dataclasses.asdict(spec), "identity": identity, **extra}
    write_json(ctx.folder / TEACHER_JSON, doc)
    return {"teacher_id": identity["teacher_id"], "kind": spec.kind, "model": spec.model, **extra}


def load_teacher(run_dir: Path) -> TeacherSpec:
    """The teacher spec written by the teacher stage."""
    s = read_json(Path(run_dir) / "teacher" / TEACHER_JSON)["spec"]
    return TeacherSpec(s["kind"], s["model"], tuple(s["species"]), s["kwargs"])


def teacher_id(run_dir: Path) -> str:
    return read_json(Path(run_dir) / "teacher" / TEACHER_JSON)["identity"]["teacher_id"]


# ------------------------------------------------------------------ D1 sampling
def sample_stage(ctx) -> dict:
    """Teacher MD: random cell → NVT → NPT pressure ramp; a snapshot every k steps → d1.xyz.

    Each run is a sub-task with its own stamp (``run_<r>.json``, beside its snapshots
    ``run_<r>.xyz`` and ``thermo_<r>.csv``): a killed stage keeps its finished runs, and a
    killed run goes on from its last thermo record (``restart_<r>.npz``). With
    ``sample.workers`` = n > 1 the runs go to n spawned worker processes at once. D1 is the
    runs' snapshots as written (so a resumed stage gives the same d1.xyz as a fresh one)."""
    s = ctx.cfg["sample"]
    stages = sample_protocol(s)
    student_only = s["selection"] == "grade" and s["grade_proposer"] == "student"
    todo = [] if student_only else list(range(s["runs"]))
    keys = {r: d1_run_key(ctx, r) for r in todo}
    done = {r: _d1_run_done(ctx.folder, r, keys[r]) for r in todo}
    missing = [r for r in todo if done[r] is None]
    for r in todo:
        if done[r] is not None:
            ctx.log(f"D1 run {r + 1}/{s['runs']}: up to date")
    workers = min(s["workers"], len(missing))
    if workers > 1:
        from concurrent.futures import as_completed

        from distill.executors import process_pool

        with process_pool(workers) as pool:
            futures = {}
            for r in missing:
                ctx.log(f"D1 run {r + 1}/{s['runs']} (worker process): {_d1_run_text(s, stages)}")
                futures[pool.submit(d1_run, ctx.run_dir, ctx.folder, ctx.cfg, r, keys[r])] = r
            for fut in as_completed(futures):
                r = futures[fut]
                done[r] = fut.result()
                ctx.log(f"D1 run {r + 1}/{s['runs']}: done")
    else:
        for r in missing:
            ctx.log(f"D1 run {r + 1}/{s['runs']}: {_d1_run_text(s, stages)}")
            done[r] = d1_run(ctx.run_dir, ctx.folder, ctx.cfg, r, keys[r])
    frames, runs = [], []
    for r in todo:
        frames += read_frames(ctx.folder / f"run_{r}.xyz")
        runs.append(done[r])
    teacher_md_steps = len(runs) * sum(st.steps for st in stages)
    if s["selection"] == "grade":
        frames, grading = grade_driven_d1(ctx, None if student_only else frames, stages)
    else:
        grading = {"selection": "uniform", "candidates": len(frames), "selected": len(frames),
                   "teacher_labels_in_sample": 0}
    write_extxyz(ctx.folder / "d1.xyz", frames)
    return {"n_snapshots": len(frames), "n_atoms": int(sum(len(a) for a in frames)), "runs": runs,
            "teacher_md_steps": teacher_md_steps, "grading": grading}


def sample_protocol(s: dict) -> list:
    """The D1 protocol (``sampling.StageConfig`` list) of a ``[sample]`` table."""
    return sampling.sampling_stages(
        s["nvt_steps"],
        s["ramp_steps"],
        s["temperature_K"],
        s["pressure_start_GPa"],
        s["pressure_end_GPa"],
        s["tau_t_fs"],
        s["tau_p_fs"],
    )


def _d1_run_text(s: dict, stages) -> str:
    return f"{s['n_atoms']} atoms, {sum(st.steps for st in stages)} steps of {s['timestep_fs']} fs"


def d1_run_key(ctx, r: int) -> str:
    """Key of D1 run r: the ``[sample]`` table's protocol (not ``workers`` nor the selection
    settings ``selection``, ``grade_*``, ``gamma_break``, which do not change the run), seed,
    species, teacher."""
    from distill.stages.cache import stage_key

    s = {k: v for k, v in ctx.cfg["sample"].items()
         if k not in ("workers", "selection", "gamma_break") and not k.startswith("grade_")}
    return stage_key(sample=s, seed=ctx.cfg["run"]["seed"], species=ctx.species,
                     teacher=teacher_id(ctx.run_dir), run=r)


def _d1_run_done(folder: Path, r: int, key: str) -> dict | None:
    """The summary of D1 run r when its stamp holds `key` (and its snapshots are there)."""
    stamp = folder / f"run_{r}.json"
    if not (stamp.is_file() and (folder / f"run_{r}.xyz").is_file()):
        return None
    try:
        doc = read_json(stamp)
    except (OSError, json.JSONDecodeError):
        return None
    return doc["summary"] if doc.get("key") == key else None


def d1_run(run_dir: Path, folder: Path, cfg: dict, r: int, key: str) -> dict:
    """Teacher MD run r of D1 (here or in a worker process): writes ``run_<r>.xyz`` (its
    snapshots, ``info['run'] = r``) and ``thermo_<r>.csv`` as it runs, resumable from
    ``restart_<r>.npz`` after a crash (`distill.teacher_run`), and, last, the stamp
    ``run_<r>.json``; returns its summary (final pressure in GPa, volume in Å³/atom)."""
    from md.structures import random_structure

    s = cfg["sample"]
    seed = cfg["run"]["seed"] + 1000 * r
    atoms = random_structure(s["n_atoms"], s["density_g_cm3"], cfg["run"]["species"][0],
                             s["min_distance_A"], seed)
    calc = build_calculator(load_teacher(run_dir))
    protocol = sample_protocol(s)
    run = run_to_files(
        atoms, calc, protocol, trajectory=folder / f"run_{r}.xyz",
        thermo=folder / f"thermo_{r}.csv", restart=folder / f"restart_{r}.npz", key=key,
        timestep_fs=s["timestep_fs"], seed=seed, snapshot_every=s["snapshot_every"],
        thermo_every=10, snapshot_info={"run": r}, progress=f"sample: D1 run {r + 1}")
    thermo = run.thermo
    summary = {"final_pressure_GPa": thermo[-1].P,
               "final_volume_A3_per_atom": thermo[-1].V / len(atoms)}
    write_json(folder / f"run_{r}.json", {"key": key, "summary": summary})
    return summary


# ------------------------------------------------------------------ grade-driven D1
def _student(ctx, train: list[Atoms], name: str) -> Path:
    """Fit the grading student (``sample.grade_level``, ``grade_max_iter`` iterations, the
    ``[fit]`` weights) on ``train`` (frames with REF_* labels) → its ``pot.mtp``."""
    from distill.stages.fits import fit_one

    s, f = ctx.cfg["sample"], ctx.cfg["fit"]
    level = s["grade_level"] or min(f["levels"])
    folder = ctx.folder / "grade" / name
    folder.mkdir(parents=True, exist_ok=True)
    write_extxyz(folder / "train.xyz", train)
    fit_one(folder / "train.xyz", folder, level, {**f, "max_iter": s["grade_max_iter"]},
            ctx.species, ctx.progress)
    return folder / "pot.mtp"


def _reread(frames: list[Atoms], path: Path) -> list[Atoms]:
    """``frames`` as written to (and read back from) extxyz, so that their structure keys are
    the ones the labels stage sees in d1.xyz."""
    write_extxyz(path, frames)
    return ase.io.read(path, index=":") if frames else []


def grade_driven_d1(ctx, candidates: list[Atoms] | None,
                    stages) -> tuple[list[Atoms], dict]:
    """``sample.selection = "grade"``: `distill.active.grade_rounds` with the grading student
    of :func:`_student` and teacher labels into the labels stage's store (so they are not
    labelled twice). A student fitted on D0 grades the teacher's snapshots and only those
    MaxVol selects (``mlp select-add``) go into D1 (with ``grade_budget`` = b, b per round,
    filled by γ when MaxVol picks fewer: ``sampling.grade_budget_select``). With
    ``grade_iterations`` = k, k rounds follow: the teacher labels D1 so far, the student is
    refitted on D0 + those labels, runs the sampling protocol itself with γ every
    ``grade_every`` steps, and the configurations it selects join D1. Returns (D1 frames,
    summary with the teacher calls made here). ``candidates`` None (``grade_proposer =
    "student"``): no round 0, the D0 student's MD proposes in the first round."""
    from distill.active import grade_rounds

    s = ctx.cfg["sample"]
    d0 = read_d0(ctx.cfg["d0"]["train"], ctx.cfg["d0"]["max_structures"])
    store = ctx.run_dir / "labels" / "store.db"  # the labels stage then skips these
    store.parent.mkdir(parents=True, exist_ok=True)
    labelled, given = [0], []

    def label(frames):
        labelled[0] += _label(ctx, frames, store, "d1")["labelled"]
        given.extend(frames)
        return labelled_frames(store, teacher_id(ctx.run_dir), "d1", given)

    def keep(frames, r):
        return _reread(frames, ctx.folder / "grade" / f"d1_{r}.xyz")

    cells = None
    if s["grade_cells"] and candidates is not None:
        from dataclasses import replace

        from distill.active import student_cells

        settings = replace(rss_settings(ctx.cfg["rss"]), n_structures=s["grade_cells"])
        seed = ctx.cfg["run"]["seed"] + 1000  # the RSS test set's cells use run.seed

        def cells(pot):
            return student_cells(pot, settings, ctx.species, seed)

    d1, rounds = grade_rounds(d0, candidates, stages, ctx.species, s, ctx.cfg["run"]["seed"],
                              lambda train, name: _student(ctx, train, name), label, keep,
                              ctx.log, cells=cells)
    return d1, {"selection": "grade", "proposer": s["grade_proposer"],
                "candidates": 0 if candidates is None else len(candidates),
                "selected": len(d1),
                "teacher_labels_in_sample": labelled[0], "rounds": rounds}


# ------------------------------------------------------------------ labels
def _label(ctx, frames: list[Atoms], store: Path, source: str) -> dict:
    """Teacher labels of `frames` (tagged `source`) into `store`; a summary dict."""
    return _label_sets(ctx, {source: frames}, store)[source]


def _label_sets(ctx, sets: dict[str, list[Atoms]], store: Path) -> dict[str, dict]:
    """Teacher labels of several named frame lists into `store`, one executor (one Dask
    cluster or worker pool start) for all of them; {name: summary dict}."""
    from distill.engine import label
    from distill.executors import labels_executor

    lab = ctx.cfg["labels"]
    out = {}
    with labels_executor(lab) as executor:  # "serial", None (local pool) or a Dask Client
        for source, frames in sets.items():
            summary = label(
                frames,
                load_teacher(ctx.run_dir),
                store,
                executor,
                workers=lab["workers"] or None,
                chunk_size=lab["chunk_size"],
                source=source,
                parent=source,
                progress=ctx.progress,
            )
            out[source] = {
                "n": summary.n_input,
                "labelled": summary.n_labelled,
                "skipped": summary.n_skipped,
                "failed": summary.n_failed,
                "seconds": round(summary.seconds, 2),
            }
    return out


def labelled_frames(store: Path, tid: str, source: str,
                    inputs: Sequence[Atoms]) -> list[Atoms]:
    """Teacher-labelled rows of `source` as Atoms with REF_energy / REF_forces (/ REF_stress),
    in the order of ``inputs`` (the frames given to the teacher; rows of other structures
    last, by structure key). The store holds rows in the order the workers finished them,
    which varies from run to run; a training set in that order would make the fits, and all
    that follows them, differ between two runs of the same config."""
    from distill.hashing import structure_key
    from distill.store import open_store, select_labelled

    first: dict[str, int] = {}  # structure key -> its first place in inputs
    for i, atoms in enumerate(inputs):
        first.setdefault(structure_key(atoms), i)
    frames = []
    for row in select_labelled(open_store(store), tid):
        if row.get("source") != source:
            continue
        a = Atoms(numbers=row.numbers, positions=row.positions, cell=row.cell, pbc=row.pbc)
        a.info["REF_energy"] = float(row.energy)
        a.arrays["REF_forces"] = np.array(row.forces, dtype=float)
        if row.get("stress") is not None:
            a.info["REF_stress"] = np.array(row.stress, dtype=float)
        a.info.update({"uid": row.uid, "source": source})
        frames.append(((first.get(row.skey, len(first)), row.skey), a))
    return [a for _, a in sorted(frames, key=lambda pair: pair[0])]


def read_d0(path: str, max_structures: int) -> list[Atoms]:
    """D0 cells (DFT labels in REF_*), the first `max_structures` (0: all)."""
    frames = ase.io.read(path, index=":")
    return frames[:max_structures] if max_structures else frames


def labels_stage(ctx) -> dict:
    """Relabel D0 and label D1 with the teacher; write train_direct.xyz (D0, DFT labels) and
    train_indirect.xyz (D0 relabelled + D1, teacher labels) over the same D0 structures."""
    store = ctx.folder / "store.db"
    d0 = read_d0(ctx.cfg["d0"]["train"], ctx.cfg["d0"]["max_structures"])
    d1 = ase.io.read(ctx.run_dir / "sample" / "d1.xyz", index=":")
    out = _label_sets(ctx, {"d0": d0, "d1": d1}, store)
    tid = teacher_id(ctx.run_dir)
    d0_teacher = labelled_frames(store, tid, "d0", d0)
    d1_teacher = labelled_frames(store, tid, "d1", d1)
    from distill.hashing import structure_key

    kept = {structure_key(a) for a in d0_teacher}
    direct = [a for a in d0 if structure_key(a) in kept]  # same structures in both sets
    write_extxyz(ctx.folder / "train_direct.xyz", direct)
    write_extxyz(ctx.folder / "train_indirect.xyz", d0_teacher + d1_teacher)
    out.update(
        {
            "direct": {"structures": len(direct), "atoms": sum(map(len, direct))},
            "indirect": {
                "structures": len(d0_teacher) + len(d1_teacher),
                "atoms": sum(map(len, d0_teacher + d1_teacher)),
            },
        }
    )
    return out


# ------------------------------------------------------------------ test sets
TEST_SETS = ("rss", "compression", "dft_test")


def rss_settings(r: dict) -> testsets.RSSSettings:
    """The ``[rss]`` table as `testsets.RSSSettings` (Å³/atom, Å, GPa)."""
    return testsets.RSSSettings(
        r["n_structures"], r["min_atoms"], r["max_atoms"], r["volume_per_atom_A3"],
        r["volume_spread_A3"], r["min_distance_A"], r["max_ops"], r["pressure_scale_GPa"],
        r["relax_steps"], r["fmax"])


def tests_stage(ctx) -> dict:
    """RSS cells and compression snapshots made and labelled by the teacher; the DFT test cells
    labelled by the teacher too (their DFT labels are kept in dft_test_m0.xyz). The teacher's
    RSS relaxations are journalled cell by cell (``rss_journal.jsonl``) and its compression
    runs written as they run (``compression_run_<k>.xyz``, thermo and restart files beside
    it): a killed stage resumes both (`distill.teacher_run`)."""
    from distill.stages.cache import stage_key
    from md.structures import random_structure

    cfg, seed = ctx.cfg, ctx.cfg["run"]["seed"]
    calc = build_calculator(load_teacher(ctx.run_dir))
    r = cfg["rss"]
    settings = rss_settings(r)
    ctx.log(f"RSS: {r['n_structures']} random cells of {r['min_atoms']}-{r['max_atoms']} atoms")
    rss_key = stage_key(rss=r, seed=seed, teacher=teacher_id(ctx.run_dir))
    rss, rss_stats = rss_to_file(  # journalled: a killed stage relaxes only the missing cells
        calc, settings, journal=ctx.folder / "rss_journal.jsonl", key=rss_key, seed=seed + 7,
        progress="tests: RSS")
    c = cfg["compression"]
    stages = sampling.sampling_stages(
        c["nvt_steps"], c["ramp_steps"], c["temperature_K"], 0.0, c["pressure_end_GPa"],
        tau_p_fs=c["tau_p_fs"],
    )
    comp = []
    for k in range(c["runs"]):
        atoms = random_structure(
            c["n_atoms"], c["density_g_cm3"], ctx.species[0], 2.0, seed + 17 + k
        )
        ctx.log(f"compression run {k + 1}/{c['runs']}: {len(atoms)} atoms")
        key = stage_key(compression=c, seed=seed, species=ctx.species,
                        teacher=teacher_id(ctx.run_dir), run=k)
        run = run_to_files(  # written as it runs; a killed stage resumes it
            atoms, calc, stages, trajectory=ctx.folder / f"compression_run_{k}.xyz",
            thermo=ctx.folder / f"compression_thermo_{k}.csv",
            restart=ctx.folder / f"compression_restart_{k}.npz", key=key,
            timestep_fs=c["timestep_fs"], seed=seed + 17 + k, snapshot_every=c["snapshot_every"],
            progress=f"tests: compression run {k + 1}")
        comp += testsets.in_pressure_window(run.snapshots, *c["window_GPa"])
    dft = ase.io.read(cfg["d0"]["test"], index=":")
    store = ctx.folder / "store.db"
    inputs = {"rss": rss, "compression": comp, "dft_test": dft}
    labels = _label_sets(ctx, inputs, store)
    tid = teacher_id(ctx.run_dir)
    counts = {}
    for name in TEST_SETS:
        frames = labelled_frames(store, tid, name, inputs[name])
        write_extxyz(ctx.folder / f"{name}.xyz", frames)
        counts[name] = {"structures": len(frames), "atoms": sum(map(len, frames))}
    shutil.copyfile(cfg["d0"]["test"], ctx.folder / "dft_test_m0.xyz")
    write_text(ctx.folder / "rss_stats.json", json.dumps(rss_stats) + "\n")
    return {"sets": counts, "labels": labels, "rss": rss_stats}
