"""Uniform vs grade-driven selection of D1: teacher calls at equal test error (issue #16).

    nice -n 10 .venv/bin/python benchmarks/bench_grade_selection.py [--seeds 0 1 2] [--tag T]
        # -> benchmarks/results/bench_grade_selection[_T].{json,md,png}

Teacher: Stillinger–Weber Si (ASE; the demo's GAP teacher is too slow for this 2-core
machine; the tiny pipeline's teacher). Everything else is the demo's scale or smaller. Per
seed (a different teacher/student MD run and a different student fit seed; the test sets and
D0 are the same for every seed):

* D0: the first ``--d0`` cells of data/si_mlearn/train.xyz, relabelled by the teacher (the same
  for every arm; counted separately).
* ``uniform``: one teacher MD run of the demo's D1 protocol (random 64-atom cell, NVT at
  500 K, then 0 → 20 GPa), every snapshot ``--uniform-every`` steps apart labelled. Teacher
  calls: the MD's force calls + the labels.
* ``grade_pool``: the same teacher MD run (or, with ``--pool-nvt``/``--pool-ramp``, a shorter
  run of its own), a snapshot every ``--pool-every`` steps; each round the current student
  (fitted on D0 + what is labelled so far) picks ``--per-round`` of them
  (:func:`distill.sampling.grade_budget_select`: MaxVol as ``mlp select-add``, the budget then
  filled by γ against the updated active set), the teacher labels those, the student is
  refitted — the sample stage's ``grade_pool_rounds`` (:func:`distill.active.grade_rounds`).
  Teacher calls: the MD's force calls + the labels.
* ``grade_pool_rss``: ``grade_pool`` plus ``--rss-candidates`` random cells of the RSS set's
  generator relaxed by the D0 student; ``--rss-per-round`` of each round's labels are picked
  among them (the sample stage's ``grade_cells``, ``grade_cells_per_round``).
* ``grade_student``: no teacher MD: the sample stage's rounds with ``grade_proposer =
  "student"`` (:func:`distill.active.grade_rounds`). Each round the current student runs the
  protocol itself ``--grade-runs`` times (``md.runner.Simulation``, γ every ``--pool-every``
  steps, optionally stopped at γ > ``--gamma-break``), its graded snapshots are the
  candidates, ``--per-round`` are picked as above and labelled by the teacher, the student is
  refitted. Teacher calls: the labels only.
* ``grade_hybrid``: the sample stage's default grade mode (``grade_proposer = "teacher"`` with
  ``grade_iterations``): round 0 grades a teacher MD run of its own (``--pool-nvt`` +
  ``--pool-ramp`` steps, else the full protocol) and the teacher labels ``--per-round`` of its
  snapshots; then ``--rounds`` − 1 rounds in which the refitted student's own MD proposes, as
  in ``grade_student``. Teacher calls: the MD's force calls + the labels.
* Every student: level ``--level``, the demo's ``[fit]`` weights, VarPro to its own
  convergence (at most ``--max-iter`` iterations; the iterations used are recorded). Test
  errors against the teacher on the demo's RSS and compression sets. With ``--grade-level L``
  the students that grade (and relax the random cells) are fitted at level L on the same data
  beside the scored ones (the sample stage's ``grade_level``).

Target (issue #16): grade-driven reaches the test error of uniform sampling (the densest
uniform arm, mean over seeds, energy and force MAE on both sets) with ≤ ½ the teacher calls.
Reported as measured; the result says whether it was met and with which count of calls.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import provenance  # noqa: E402

from distill import active, sampling, testsets  # noqa: E402
from distill.stages.config import SCHEMA  # noqa: E402
from distill.stages.evaluate import mae, predict  # noqa: E402
from distill.stages.fits import fit_one  # noqa: E402
from md.analysis.calculators import stillinger_weber_si  # noqa: E402
from md.structures import random_structure  # noqa: E402

SPECIES = ["Si"]
FIT = {"min_dist_A": 1.5, "max_dist_A": 5.0, "radial_basis_size": 8, "energy_weight": 1.0,
       "force_weight": 0.1, "stress_weight": 0.0, "optimizer": "varpro",
       # VarPro's own convergence stops the fit (no validation split)
       "valid_fraction": 0.0, "valid_seed": 0, "patience": 0, "valid_rtol": 0.0}
METRICS = ("energy_mae_meV_per_atom", "force_mae_eV_per_A")
GRADE_ARMS = ("grade_pool", "grade_pool_rss", "grade_student", "grade_hybrid")


class Teacher:
    """The teacher calculator with a count of its label calls."""

    def __init__(self):
        self.calc = stillinger_weber_si()
        self.labels = 0

    def label(self, frames):
        out = []
        for a in frames:
            b = a.copy()
            b.calc = self.calc
            e, f, stress = b.get_potential_energy(), b.get_forces(), b.get_stress()
            b.calc = None
            # stress (ASE Voigt, eV/Å³) is fitted only with --stress-weight > 0
            b.info = {"REF_energy": float(e), "REF_stress": np.array(stress)}
            b.arrays["REF_forces"] = np.array(f)
            out.append(b)
            self.labels += 1
        return out


def fit(train, folder: Path, level: int, max_iter: int, seed: int) -> tuple[Path, int]:
    """Fit a student on ``train`` → (its pot.mtp, iterations used).

    Every fit starts by dropping jax's in-process compilation caches: each fit, grading and
    relaxation compiles programs for new data shapes, and on CPU every compiled program holds
    memory mappings that the kernel caps per process (``vm.max_map_count``, 65,530 by
    default) — a 3-seed run with level-16 grading students died at ~90 min with "LLVM
    compilation error: Cannot allocate memory" once it had reached that cap."""
    import ase.io
    import jax

    jax.clear_caches()
    folder.mkdir(parents=True, exist_ok=True)
    ase.io.write(folder / "train.xyz", train, format="extxyz")
    out = fit_one(folder / "train.xyz", folder, level, {**FIT, "max_iter": max_iter,
                                                        "seed": seed}, SPECIES, False)
    return folder / "pot.mtp", out["iterations"]


def test_errors(pot: Path, tests: dict) -> dict:
    out = {}
    for name, frames in tests.items():
        e, f = predict(pot, frames, SPECIES)
        out[name] = mae(e, [a.info["REF_energy"] for a in frames], [len(a) for a in frames], f,
                        [a.arrays["REF_forces"] for a in frames])
    return out


def student_sample(args) -> dict:
    """The ``[sample]`` table of the grade_student arm: the defaults with the protocol and the
    grade settings of this run (the pipeline's ``selection = "grade"`` without teacher MD)."""
    return {**SCHEMA["sample"], "n_atoms": 64, "density_g_cm3": 2.3, "min_distance_A": 2.0,
            "timestep_fs": 1.0, "temperature_K": 500.0, "grade_every": args.pool_every,
            "grade_threshold": args.threshold, "grade_budget": args.per_round,
            "grade_iterations": args.rounds, "grade_runs": args.grade_runs,
            "grade_proposer": "student", "gamma_break": args.gamma_break,
            "grade_skip_steps": args.grade_skip, "grade_pick": args.grade_pick,
            "grade_md": args.grade_md}


def pool_stages(args):
    """The grade_pool arm's own teacher protocol (``--pool-nvt`` + ``--pool-ramp`` steps, 0 → 20
    GPa, Berendsen τ_P 100 fs so that the pressure follows a short ramp), or None: the arm
    grades the uniform arm's run."""
    if args.pool_nvt is None and args.pool_ramp is None:
        return None
    return sampling.sampling_stages(args.pool_nvt if args.pool_nvt is not None else args.nvt_steps,
                                    args.pool_ramp if args.pool_ramp is not None
                                    else args.ramp_steps, 500.0, 0.0, 20.0, tau_p_fs=100.0)


def rss_settings(relax_steps: int) -> testsets.RSSSettings:
    """The demo's ``[rss]`` random cells at this benchmark's scale: 1-16 atoms, 20 ± 5 Å³/atom,
    atoms ≥ 2 Å apart, groups of order ≤ 4, pressures drawn with scale 5 GPa."""
    return testsets.RSSSettings(16, 1, 16, 20.0, 5.0, 2.0, 4, 5.0, relax_steps, 0.1)


def positive_fs(text: str) -> float:
    """argparse type: a time step in fs, finite and > 0 (else argparse's one-line error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of fs, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a time step > 0 fs, got {text}")
    return value


def reaches(errs: dict, target: dict) -> bool:
    """Energy and force MAE on every test set at most the target's."""
    return all(errs[s][k] <= target[s][k] for s in target for k in METRICS)


def one_seed(seed: int, args, d0, tests, stages, tmp: Path, teacher: Teacher,
             rows: list[dict], on_row=lambda: None) -> None:
    """Every arm for one seed → rows (arm, round, labels, teacher calls, errors) appended to
    ``rows``; ``on_row()`` after each."""

    def row(**kw):
        rows.append({"seed": seed, **kw})
        print(json.dumps(rows[-1]), flush=True)
        on_row()

    md_steps = sum(s.steps for s in stages)
    pool_md_steps = md_steps if pool_stages(args) is None else sum(s.steps
                                                                  for s in pool_stages(args))
    atoms = random_structure(64, 2.3, "Si", 2.0, seed)
    # the uniform arm's run (and grade_pool's candidates unless it has a run of its own)
    every = args.pool_every if pool_stages(args) is None else math.gcd(*args.uniform_every)
    pool, _ = sampling.run_protocol(atoms, teacher.calc, stages, 1.0, seed, every)
    steps = [a.info["step"] for a in pool]
    for every in args.uniform_every:
        chosen = [a for a, s in zip(pool, steps, strict=True) if s % every == 0]
        t0 = time.perf_counter()
        pot, its = fit(d0 + teacher.label(chosen), tmp / f"s{seed}_uniform_{every}", args.level,
                       args.max_iter, seed)
        row(arm="uniform", round=None, every_steps=every, d1_labels=len(chosen),
            teacher_calls=md_steps + len(chosen), fit_iterations=its,
            errors=test_errors(pot, tests), seconds=round(time.perf_counter() - t0, 1))

    t0 = time.perf_counter()
    pot0, its = fit(d0, tmp / f"s{seed}_grade_0", args.level, args.max_iter, seed)
    err0 = test_errors(pot0, tests)
    if args.grade_level:  # the D0 grading student at its own level (sample.grade_level)
        pot0 = fit(d0, tmp / f"s{seed}_grade_0_L{args.grade_level}", args.grade_level,
                   args.max_iter, seed)[0]
    for arm in ("grade_pool", "grade_pool_rss", "grade_student"):
        if arm not in args.arms:
            continue
        row(arm=arm, round=0, d1_labels=0,
            teacher_calls=0 if arm == "grade_student" else pool_md_steps, fit_iterations=its,
            errors=err0, seconds=round(time.perf_counter() - t0, 1))

    # grade_pool: the teacher's MD proposes (the uniform arm's run, or a shorter run of its own
    # when --pool-nvt/--pool-ramp are given: its force calls are what the arm pays for); its
    # --rounds are the sample stage's rounds over the teacher's snapshots
    # (distill.active.grade_rounds with grade_pool_rounds, no student MD)
    if {"grade_pool", "grade_pool_rss"} & set(args.arms) and pool_stages(args) is not None:
        pool, _ = sampling.run_protocol(random_structure(64, 2.3, "Si", 2.0, seed), teacher.calc,
                                        pool_stages(args), args.pool_dt, seed, args.pool_every)
    if "grade_pool" in args.arms:
        student_rounds(args, "grade_pool", pool, pool_md_steps, seed, d0, tests, stages, tmp,
                       teacher, pot0, row)

    if "grade_pool_rss" in args.arms:  # the same rounds with student-relaxed random cells
        student_rounds(args, "grade_pool_rss", pool, pool_md_steps, seed, d0, tests, stages,
                       tmp, teacher, pot0, row)

    # grade_student: the student's MD proposes, the teacher only labels: the sample stage's
    # rounds (distill.active.grade_rounds) without a teacher MD; grade_hybrid: the same rounds
    # after a round 0 that grades a short teacher run of its own (the pipeline's default
    # grade_proposer = "teacher" with grade_iterations), paying for its force calls
    if "grade_student" in args.arms:
        student_rounds(args, "grade_student", None, 0, seed, d0, tests, stages, tmp, teacher,
                       pot0, row)
    if "grade_hybrid" in args.arms:
        hybrid = pool_stages(args) or stages
        pool, _ = sampling.run_protocol(random_structure(64, 2.3, "Si", 2.0, seed), teacher.calc,
                                        hybrid, args.pool_dt if pool_stages(args) else 1.0,
                                        seed, args.pool_every)
        row(arm="grade_hybrid", round=0, d1_labels=0, teacher_calls=sum(s.steps for s in hybrid),
            fit_iterations=its, errors=err0, seconds=0.0)
        student_rounds(args, "grade_hybrid", pool, sum(s.steps for s in hybrid), seed, d0,
                       tests, stages, tmp, teacher, pot0, row)


def student_rounds(args, arm: str, candidates, md_calls: int, seed: int, d0, tests, stages,
                   tmp: Path, teacher: Teacher, grader0: Path, row) -> None:
    """`distill.active.grade_rounds` for ``arm``: round 0 grades ``candidates`` (teacher MD
    snapshots; None: none), then student-MD rounds, ``--rounds`` labelled rounds in all. A row
    per labelled round (its number: rounds labelled so far), written as soon as the student
    refitted on its picks is scored (a run stopped early keeps them); teacher calls:
    ``md_calls`` + the labels. ``grader0``: the D0 student that grades round 0; with
    ``--grade-level`` every round's grading student is fitted at that level beside the scored
    student at ``--level`` (the sample stage's ``grade_level``)."""
    done, labelled = [], []

    def fit_round(train, name):
        if not labelled:
            return grader0
        r = done[-1]  # the round whose picks were just labelled
        pot, its = fit(train, tmp / f"s{seed}_{arm}_{len(labelled)}", args.level,
                       args.max_iter, seed)
        extra = ({"student_md": {k: r[k] for k in ("steps", "stop", "found", "max_gamma",
                                                    "volume_A3_per_atom")}}
                 if r["source"] == "student_md" else
                 {k: r[k] for k in ("candidates", "picked_steps", "max_gamma", "cells",
                                    "cells_selected", "picked_cell_atoms", "max_gamma_cells")
                  if k in r})
        row(arm=arm, round=len(done) if candidates is not None else r["round"],
            d1_labels=len(labelled), teacher_calls=md_calls + len(labelled),
            fit_iterations=its, **extra, errors=test_errors(pot, tests),
            seconds_since_arm_start=round(time.perf_counter() - t0, 1))
        if args.grade_level and name != "final":  # no round after the final one grades
            return fit(train, tmp / f"s{seed}_{arm}_{len(labelled)}_L{args.grade_level}",
                       args.grade_level, args.max_iter, seed)[0]
        return pot

    def label(new):
        labelled.extend(teacher.label(new))
        return list(labelled)

    sample = {**student_sample(args),
              "grade_iterations": args.rounds - (candidates is not None)}
    cells = None
    if arm in ("grade_pool", "grade_pool_rss"):  # every round over the teacher's snapshots
        sample.update(grade_pool_rounds=args.rounds, grade_iterations=0,
                      grade_proposer="teacher")
    if arm == "grade_pool_rss":  # [sample] grade_cells, grade_cells_per_round
        sample.update(grade_cells=args.rss_candidates, grade_cells_per_round=args.rss_per_round)
        settings = replace(rss_settings(args.rss_relax), n_structures=args.rss_candidates)

        def cells(pot):
            return active.student_cells(pot, settings, SPECIES, 1000 + seed)

    t0 = time.perf_counter()
    d1, _ = active.grade_rounds(d0, candidates, stages, SPECIES, sample, seed, fit_round, label,
                                on_round=done.append, cells=cells)
    if len(d1) > len(labelled):  # the last round's picks: labelled, then a student fitted
        fit_round(d0 + label(d1[len(labelled):]), "final")


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds per (arm, every/round)."""
    groups: dict = {}
    for r in rows:
        key = (r["arm"], r.get("every_steps"), r["round"])
        groups.setdefault(key, []).append(r)
    out = []
    for (arm, every, rnd), rs in groups.items():
        errs = {s: {k: float(np.mean([x["errors"][s][k] for x in rs])) for k in METRICS}
                for s in rs[0]["errors"]}
        std = {s: {k: float(np.std([x["errors"][s][k] for x in rs])) for k in METRICS}
               for s in rs[0]["errors"]}
        out.append({"arm": arm, "every_steps": every, "round": rnd, "seeds": len(rs),
                    "d1_labels": float(np.mean([x["d1_labels"] for x in rs])),
                    "teacher_calls": float(np.mean([x["teacher_calls"] for x in rs])),
                    "fit_iterations": [x["fit_iterations"] for x in rs],
                    "errors": errs, "errors_std": std})
    order = ("uniform", *GRADE_ARMS)
    return sorted(out, key=lambda s: (order.index(s["arm"]), -(s["every_steps"] or 0),
                                      s["round"] or 0))


def verdict(summary: list[dict]) -> dict:
    uni = [s for s in summary if s["arm"] == "uniform"]
    ref = max(uni, key=lambda s: s["d1_labels"])
    out = {"uniform_reference": {"every_steps": ref["every_steps"],
                                 "d1_labels": ref["d1_labels"],
                                 "teacher_calls": ref["teacher_calls"]}}
    for arm in GRADE_ARMS:
        if not any(s["arm"] == arm for s in summary):
            continue
        # a row counts only when measured on as many seeds as the reference
        hit = [s for s in summary if s["arm"] == arm and s["seeds"] >= ref["seeds"]
               and reaches(s["errors"], ref["errors"])]
        first = min(hit, key=lambda s: s["teacher_calls"], default=None)
        out[arm] = None if first is None else {
            "round": first["round"], "d1_labels": first["d1_labels"],
            "teacher_calls": first["teacher_calls"],
            "calls_ratio": first["teacher_calls"] / ref["teacher_calls"],
            "labels_ratio": first["d1_labels"] / ref["d1_labels"],
            "target_met": first["teacher_calls"] <= ref["teacher_calls"] / 2}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--level", type=int, default=8)
    p.add_argument("--max-iter", type=int, default=200, help="VarPro stops earlier when converged")
    p.add_argument("--d0", type=int, default=20, help="D0 cells (first N of train.xyz)")
    p.add_argument("--pool-every", type=int, default=10, help="candidate snapshot interval")
    p.add_argument("--uniform-every", type=int, nargs="+", default=[20, 40],
                   help="uniform D1: a snapshot every N steps")
    p.add_argument("--per-round", type=int, default=6, help="teacher labels per grade round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--grade-runs", type=int, default=1,
                   help="grade_student: student MD runs per round (sample.grade_runs)")
    p.add_argument("--grade-skip", type=int, default=0,
                   help="grade_student: the first N steps of each student run propose nothing "
                        "(sample.grade_skip_steps; e.g. the NVT thermalisation)")
    p.add_argument("--grade-pick", choices=["gamma", "strata", "random"], default="gamma",
                   help="student rounds: how the --per-round labels are picked "
                        "(sample.grade_pick: 'gamma' MaxVol then highest γ; 'strata' the "
                        "candidates cut by MD step into --per-round stretches, highest γ in each; "
                        "'random' drawn at random, the control without grades)")
    p.add_argument("--grade-md", choices=["mtpjax", "protocol"], default="mtpjax",
                   help="student rounds: the student's MD (sample.grade_md: 'mtpjax' md.runner "
                        "Nosé–Hoover/MTK; 'protocol' the teacher's Langevin/Berendsen protocol "
                        "with the student as ASE calculator)")
    p.add_argument("--grade-level", type=int, default=0,
                   help="level of the grading students (sample.grade_level; 0: --level); "
                        "the scored students stay at --level")
    p.add_argument("--threshold", type=float, default=1.1, help="MaxVol select threshold")
    p.add_argument("--gamma-break", type=float, default=0.0,
                   help="student MD: stop at γ above this (0: never; with D0 smaller than the "
                        "coefficient count every γ is ~1e5 at first)")
    p.add_argument("--nvt-steps", type=int, default=150, help="protocol (demo: 300)")
    p.add_argument("--ramp-steps", type=int, default=600, help="protocol (demo: 1200)")
    p.add_argument("--pool-nvt", type=int, default=None,
                   help="grade_pool: a teacher run of its own, N NVT steps (default: grade the "
                        "uniform arm's run)")
    p.add_argument("--pool-ramp", type=int, default=None,
                   help="grade_pool: its own teacher run's ramp steps (with --pool-nvt)")
    p.add_argument("--pool-dt", type=positive_fs, default=1.0,
                   help="grade_pool/grade_hybrid: their own teacher run's time step (fs; the "
                        "uniform arm's run is at 1 fs): a larger step covers more of the ramp "
                        "per force call")
    p.add_argument("--rss-candidates", type=int, default=0,
                   help="grade_pool_rss: N random cells (the RSS set's generator, other seeds) "
                        "relaxed by the D0 student (--rss-relax steps), offered as candidates")
    p.add_argument("--rss-per-round", type=int, default=0,
                   help="grade_pool_rss: of each round's --per-round labels, this many are "
                        "picked among the relaxed random cells, the rest among the snapshots")
    p.add_argument("--stress-weight", type=float, default=0.0,
                   help="stress weight of every fit (the teacher's stress is labelled with its "
                        "energy and forces; the paper's weights 1 : 0.1 : 0.001)")
    p.add_argument("--rss-relax", type=int, default=20, help="RSS relax steps (demo: 40)")
    p.add_argument("--comp-nvt", type=int, default=50, help="compression set (demo: 100)")
    p.add_argument("--comp-ramp", type=int, default=400, help="compression set (demo: 800)")
    p.add_argument("--comp-every", type=int, default=80,
                   help="compression set: a snapshot every N steps of its teacher run (those "
                        "at 5-20 GPa are the set; smaller N: more snapshots, same protocol)")
    p.add_argument("--arms", nargs="+", default=["grade_pool", "grade_student"],
                   choices=list(GRADE_ARMS),
                   help="grade arms to run (uniform always runs: the reference)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--tag", default="", help="result files bench_grade_selection[_TAG].*")
    p.add_argument("--plot-only", metavar="JSON",
                   help="only draw JSON's plot (JSON.png) from an existing result file")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="only merge result files of this script (the same settings, other "
                        "seeds: runs made side by side) into one, rows and means over all")
    args = p.parse_args(argv)
    if "grade_pool_rss" in args.arms and not (
            args.rss_candidates > 0 and 0 < args.rss_per_round < args.per_round):
        p.error("grade_pool_rss needs --rss-candidates > 0 and 0 < --rss-per-round < "
                "--per-round")
    if args.grade_level < 0 or args.grade_level % 2:
        p.error(f"--grade-level must be an even level >= 2 (0: --level), got {args.grade_level}")
    if args.rss_candidates < 0 or args.rss_per_round < 0:
        p.error("--rss-candidates and --rss-per-round must be >= 0")
    if args.plot_only:
        path = Path(args.plot_only)
        plot(json.loads(path.read_text()), path.with_suffix(".png"))
        print(f"wrote {path.with_suffix('.png')}")
        return 0
    if args.merge:
        try:
            return merge(args)
        except MergeError as exc:
            print(f"bench_grade_selection: error: {exc}", file=sys.stderr)
            return 2
    FIT["stress_weight"] = args.stress_weight  # every arm's fits

    import ase.io
    import jax

    jax.config.update("jax_enable_x64", True)
    head = provenance.header()
    t_start = time.perf_counter()
    teacher = Teacher()
    d0 = teacher.label(ase.io.read(ROOT / "data/si_mlearn/train.xyz", index=f":{args.d0}"))
    d0_labels = teacher.labels

    # test sets (the demo's [rss] and [compression]), labelled by the teacher (not counted)
    rss, _ = testsets.rss_set(teacher.calc, rss_settings(args.rss_relax), seed=7)
    comp_stages = sampling.sampling_stages(args.comp_nvt, args.comp_ramp, 500.0, 0.0, 20.0,
                                           tau_p_fs=100.0)
    snaps, _ = sampling.run_protocol(random_structure(64, 2.3, "Si", 2.0, 17), teacher.calc,
                                     comp_stages, 1.0, 17, args.comp_every)
    comp = testsets.in_pressure_window(snaps, 5.0, 20.0)
    tests = {"rss": teacher.label(rss), "compression": teacher.label(comp)}

    stages = sampling.sampling_stages(args.nvt_steps, args.ramp_steps, 500.0, 0.0, 20.0)
    rows, done = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            # the result is (re)written after every row: a run stopped early leaves the rows
            # it made (seeds_completed says which seeds are whole)
            one_seed(seed, args, d0, tests, stages, Path(tmp), teacher, rows,
                     lambda: write(args, head, rows, done, d0_labels, tests, stages, t_start))
            done.append(seed)
            write(args, head, rows, done, d0_labels, tests, stages, t_start)
    return 0


def write(args, head, rows, done, d0_labels, tests, stages, t_start) -> None:
    summary = summarize(rows)
    _write(args, {
        **head, "load_after": provenance.load(), "finished_utc": provenance.utc(),
        "teacher": "Stillinger-Weber Si (ASE), md.analysis.calculators.stillinger_weber_si",
        "settings": vars(args), "seeds_completed": done, "fit": FIT,
        "teacher_md_steps_per_run": sum(s.steps for s in stages),
        "d0_relabels": d0_labels, "test_sets": {k: len(v) for k, v in tests.items()},
        "rows": rows, "summary": summary, "verdict": verdict(summary),
        "wall_s": round(time.perf_counter() - t_start, 1),
    })


def _write(args, result: dict) -> None:
    """``result`` to OUT/bench_grade_selection[_TAG].json and its table to .md (printed)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_grade_selection" + (f"_{args.tag}" if args.tag else "")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(render(result))
    plot(result, out / f"{stem}.png")
    print(render(result), flush=True)


PANELS = (("rss", METRICS[0], "RSS energy MAE (meV/atom)"),
          ("rss", METRICS[1], "RSS force MAE (eV/Å)"),
          ("compression", METRICS[0], "compression energy MAE (meV/atom)"),
          ("compression", METRICS[1], "compression force MAE (eV/Å)"))


def plot(res: dict, path: Path) -> None:
    """Test errors against teacher calls: each grade arm's rounds (mean ± std over seeds,
    rows on fewer seeds than the reference hollow), the uniform reference as a line with its
    ± std band, and ½ the reference's calls (the target) as a dashed vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = res["summary"]
    ref = max((s for s in summary if s["arm"] == "uniform"), key=lambda s: s["d1_labels"])
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for ax, (test, metric, title) in zip(axes.flat, PANELS, strict=True):
        mean, std = ref["errors"][test][metric], ref["errors_std"][test][metric]
        ax.axhspan(mean - std, mean + std, color="0.85")
        ax.axhline(mean, color="k", lw=1.2,
                   label=f"uniform ({ref['teacher_calls']:.0f} calls, {ref['seeds']} seeds)")
        ax.axvline(ref["teacher_calls"] / 2, color="k", ls="--", lw=0.8, label="½ its calls")
        for arm in GRADE_ARMS:
            rows = [s for s in summary if s["arm"] == arm]
            if not rows:
                continue
            x = [s["teacher_calls"] for s in rows]
            y = [s["errors"][test][metric] for s in rows]
            dy = [s["errors_std"][test][metric] for s in rows]
            line = ax.errorbar(x, y, yerr=dy, marker="o", ms=4, capsize=2, label=arm)
            thin = [i for i, s in enumerate(rows) if s["seeds"] < ref["seeds"]]
            if thin:
                ax.plot([x[i] for i in thin], [y[i] for i in thin], "o", ms=7, mfc="white",
                        color=line[0].get_color())
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("teacher calls (MD force calls + labels)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Grade-driven vs uniform D1 selection, {len(res['seeds_completed'])} seeds "
                 "(mean ± std; hollow: fewer seeds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PART_KEYS = ("command", "started_utc", "finished_utc", "load_before", "load_after",
             "seeds_completed", "wall_s", "versions", "host")


class MergeError(ValueError):
    """Result files that cannot be merged (the message names the file)."""


def _rows_per_seed(files, parts) -> list[dict]:
    """Each seed's rows from one part: the part that completed it (a seed completed by two
    parts is refused), else the part holding most of its rows (a stopped run, rerun for that
    seed and stopped again) — never rows of the same seed from two runs side by side."""
    owner = {}
    for k, res in enumerate(parts):
        for seed in res["seeds_completed"]:
            if seed in owner:
                raise MergeError(f"{files[k]}: seed {seed} also completed in "
                                 f"{files[owner[seed]]}")
            owner[seed] = k
    for seed in {r["seed"] for res in parts for r in res["rows"]} - set(owner):
        counts = [sum(r["seed"] == seed for r in res["rows"]) for res in parts]
        owner[seed] = int(np.argmax(counts))
    return [r for k, res in enumerate(parts) for r in res["rows"] if owner[r["seed"]] == k]


def merge(args) -> int:
    """One result from several of this script's result files (side-by-side runs of other
    seeds with otherwise equal settings, or a rerun of a stopped seed); each part's provenance
    is kept under ``parts``, each seed's rows come from one part (``_rows_per_seed``)."""
    parts = []
    for f in args.merge:
        try:
            parts.append(json.loads(Path(f).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise MergeError(f"{f}: cannot read a result: {exc}") from None
    ignore = ("seeds", "tag", "out", "merge", "plot_only")  # output options, not settings
    first = {k: v for k, v in parts[0]["settings"].items() if k not in ignore}
    for f, res in zip(args.merge, parts, strict=True):
        other = {k: v for k, v in res["settings"].items() if k not in ignore}
        if other != first:
            raise MergeError(f"{f}: settings differ from {args.merge[0]}'s")
    rows = sorted(_rows_per_seed(args.merge, parts), key=lambda r: r["seed"])
    seeds = sorted({r["seed"] for r in rows})
    summary = summarize(rows)
    _write(args, {
        **provenance.header(), "finished_utc": provenance.utc(),
        "parts": [{k: res[k] for k in PART_KEYS} for res in parts],
        **{k: parts[0][k] for k in ("teacher", "fit", "teacher_md_steps_per_run",
                                    "d0_relabels", "test_sets")},
        "settings": {**parts[0]["settings"], "seeds": seeds},
        "seeds_completed": sorted(k for res in parts for k in res["seeds_completed"]),
        "rows": rows, "summary": summary, "verdict": verdict(summary),
    })
    return 0


def render(res: dict) -> str:
    def e(s, t):
        m, d = s["errors"][t], s["errors_std"][t]
        return (f"{m[METRICS[0]]:.1f} ± {d[METRICS[0]]:.1f} / "
                f"{m[METRICS[1]]:.3f} ± {d[METRICS[1]]:.3f}")

    st = res["settings"]
    v = res["versions"]
    def made(r):
        return (f"`{r['command']}`, {r['started_utc']} → {r['finished_utc']} "
                f"({r['wall_s']:.0f} s; seeds {r['seeds_completed']}) on "
                f"{r['host']['hostname']} ({r['host']['cpus']} CPUs, {r['host']['cpu_model']}); "
                f"load average (1/5/15 min) {r['load_before']} before, {r['load_after']} after")

    if "parts" in res:
        written = (f"Merged by `{res['command']}` ({res['finished_utc']}) from runs of other "
                   "seeds with the same settings (their times: side by side or one after "
                   "another): " + "; ".join(made(r) for r in res["parts"]) + ".")
    else:
        written = f"Written by {made(res)}."
    lines = [
        "# Uniform vs grade-driven D1 selection: teacher calls at equal test error", "",
        f"{written} Python {v['python']}, jax {v['jax']}, jaxlib "
        f"{v['jaxlib']}, numpy {v['numpy']}, ase {v['ase']}, mtpjax {v['mtpjax_git']}.", "",
        f"Teacher: {res['teacher']}. Students: level {st['level']}"
        + (f" (grading students: level {st['grade_level']}, fitted beside them on the same "
           "data)" if st.get("grade_level") else "")
        + ", weights E : F : S = "
        f"{res['fit']['energy_weight']} : {res['fit']['force_weight']} : "
        f"{res['fit']['stress_weight']}, VarPro to convergence "
        f"(at most {st['max_iter']} iterations; iterations used per fit in the JSON); D0 = the "
        f"first {st['d0']} mlearn cells relabelled by the teacher ({res['d0_relabels']} calls, "
        f"every arm, not in the counts below). Protocol (teacher MD for `uniform` and "
        f"`grade_pool`, student MD for `grade_student`, round 0 of `grade_hybrid` on a teacher "
        f"run and its later rounds on student MD): 64 atoms, 500 K, 0 → 20 GPa, "
        f"{st['nvt_steps']} + {st['ramp_steps']} steps = {res['teacher_md_steps_per_run']} "
        f"teacher force calls per teacher run"
        + ("" if st.get("pool_nvt") is None and st.get("pool_ramp") is None else
           f"; `grade_pool` and `grade_hybrid` grade a teacher run of their own, "
           f"{st['pool_nvt']} + "
           f"{st['pool_ramp']} steps of {st.get('pool_dt', 1.0):g} fs (τ_P 100 fs), a candidate "
           f"every {st['pool_every']} steps, "
           "and pay for its force calls")
        + ("" if not st.get("rss_candidates") else
           (f"; `grade_pool_rss` is also offered {st['rss_candidates']} random cells (the RSS "
            f"set's generator, other seeds) relaxed by the D0 student ({st['rss_relax']} steps, "
            "as the RSS set by the teacher)" if "grade_pool_rss" in st["arms"] else
            f"; `grade_pool` is also offered {st['rss_candidates']} unrelaxed random cells (the "
            "RSS set's generator, other seeds; the script at commit 819a9d8)")
           + f", a teacher call only when labelled, {st['rss_per_round']} of each round's "
           "labels picked among them")
        + f". Grade rounds: {st['per_round']} labels each "
        + (f"(MaxVol at threshold {st['threshold']}, then filled by γ)"
           if st.get("grade_pick", "gamma") == "gamma" else
           "(drawn at random among the same candidates, grades unused: the control; "
           "`--grade-pick random`)" if st["grade_pick"] == "random" else
           "(student rounds: the candidates in MD-step order cut into that many stretches, the "
           "highest γ of each; `--grade-pick strata`)")
        + ("" if st.get("grade_md", "mtpjax") == "mtpjax" else
           "; the student's MD runs the teacher's Langevin/Berendsen protocol "
           "(`--grade-md protocol`)") + ". Seeds "
        f"{res['seeds_completed']} of {st['seeds']} "
        "(MD run and fit seed; mean ± std over seeds). Errors vs the teacher: energy MAE "
        f"(meV/atom) / force MAE (eV/Å) on the RSS ({res['test_sets']['rss']} cells) and "
        f"compression ({res['test_sets']['compression']} snapshots at 5-20 GPa of a teacher run, "
        f"one every {st.get('comp_every', 80)} steps) sets.", "",
        "| arm | round | seeds | D1 labels | teacher calls (MD + labels) | RSS E / F | "
        "compression E / F |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in res["summary"]:
        name = (f"uniform, every {s['every_steps']} steps" if s["arm"] == "uniform"
                else s["arm"])
        rnd = "" if s["round"] is None else str(s["round"])
        lines.append(f"| {name} | {rnd} | {s['seeds']} | {s['d1_labels']:.0f} | "
                     f"{s['teacher_calls']:.0f} | "
                     f"{e(s, 'rss')} | {e(s, 'compression')} |")
    v = res["verdict"]
    ref = v["uniform_reference"]
    lines += ["", f"Reference: uniform every {ref['every_steps']} steps, "
              f"{ref['d1_labels']:.0f} D1 labels, {ref['teacher_calls']:.0f} teacher calls "
              "(mean errors over seeds; a grade arm reaches it when all four mean MAEs are at "
              "most the reference's; a row counts only when measured on as many seeds as the "
              "reference, see the seeds column).", ""]
    incomplete = sorted(res["seeds_completed"]) != sorted(st["seeds"])
    if incomplete:
        lines.append(f"- **Incomplete**: only seeds {res['seeds_completed']} ran every round; "
                     "the others stopped early (their rows as far as they got; see the seeds "
                     "column).")
    for arm in GRADE_ARMS:
        if arm not in v:
            continue
        h = v[arm]
        if h is None:
            lines.append(f"- `{arm}`: does **not** reach the reference error in the rounds "
                         f"measured on every seed ({st['rounds']} planned): **target "
                         + ("not shown (incomplete run)" if incomplete else "missed") + "**.")
        else:
            lines.append(f"- `{arm}`: reaches it at round {h['round']} with "
                         f"{h['d1_labels']:.0f} D1 labels ({h['labels_ratio']:.2f} of uniform) "
                         f"and {h['teacher_calls']:.0f} teacher calls "
                         f"({h['calls_ratio']:.2f} of uniform): target (≤ ½ the teacher calls) "
                         f"**{'met' if h['target_met'] else 'missed'}**.")
    if st.get("grade_pick") == "random":
        lines.append("- These picks were drawn at random (`--grade-pick random`): the control "
                     "for the grades, not grade-driven selection — what it reaches, the pool "
                     "reaches without the grades.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
