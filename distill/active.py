"""Grade-driven D1 (issue #16): the student's MD proposes, its grades pick, the teacher labels.

The rounds of ``[sample] selection = "grade"`` without the pipeline around them, so that the
sample stage (`distill.stages.data.grade_driven_d1`) and `benchmarks/bench_grade_selection.py`
run the same code: the caller supplies how a student is fitted and how the teacher labels
(``fit``, ``label``), everything else follows the ``[sample]`` table ``s`` (a dict with its keys:
``n_atoms``, ``density_g_cm3``, ``min_distance_A``, ``timestep_fs``, ``temperature_K``,
``grade_every``, ``grade_threshold``, ``grade_limit``, ``grade_budget``, ``grade_pool_rounds``,
``grade_iterations``, ``grade_runs``, ``grade_skip_steps``, ``grade_pick``, ``grade_md``,
``gamma_break``, ``grade_cells_per_round``).

Units: Å, fs, K, GPa.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ase.data
import numpy as np
from ase import Atoms

from distill import sampling


def student_md(pot: Path, grader, stages, species: Sequence[str], s: dict,
               seed: int) -> tuple[list[Atoms], dict]:
    """The student's MD of the sampling protocol ``stages`` (`md.runner.Simulation`, a random
    ``s["n_atoms"]`` cell) with γ every ``grade_every`` steps against ``grader`` (the active
    set of its training set) → (configurations with γ > grade_threshold — every graded one
    when ``grade_budget`` is set —, summary); those of its first ``grade_skip_steps`` steps
    (thermalisation from a random cell) are left out. The run stops at γ > ``gamma_break``
    (0: never) or when the student blows up; what it found until then is kept."""
    from md.runner import ExtrapolationBreak, Simulation
    from md.structures import random_structure

    atoms = random_structure(s["n_atoms"], s["density_g_cm3"], species[0],
                             s["min_distance_A"], seed)
    sim = Simulation(pot, atoms, species, timestep_fs=s["timestep_fs"],
                     temperature_K=s["temperature_K"], seed=seed,
                     chunk_steps=s["grade_every"], active_set=grader,
                     grade_every=s["grade_every"],
                     # with a label budget every graded configuration is a candidate
                     gamma_select=1e-9 if s["grade_budget"] else s["grade_threshold"],
                     gamma_break=s["gamma_break"] or None)
    stop = "end"
    try:
        for stage in stages:
            sim.run_stage(stage)
    except ExtrapolationBreak:
        stop = "gamma_break"
    except (FloatingPointError, RuntimeError) as exc:  # an unstable student: keep what it made
        stop = f"failed: {exc}"
    numbers = np.array([ase.data.atomic_numbers[e] for e in species])
    found = [Atoms(numbers=numbers[c.types], positions=c.positions, cell=c.cell, pbc=True,
                   info={"step": int(c.features["MD_step"])})
             for c in sim.selected
             if int(c.features["MD_step"]) > s.get("grade_skip_steps", 0)]
    volumes = [h["V_A3"] / len(atoms) for h in sim.history]
    return found, {"steps": int(sim.step), "stop": stop, "found": len(found),
                   "max_gamma": max((g for _, g in sim.grades), default=0.0),
                   "volume_A3_per_atom": [min(volumes, default=0.0),
                                          max(volumes, default=0.0)]}


def student_protocol_md(pot: Path, grader, stages, species: Sequence[str], s: dict,
                        seed: int) -> tuple[list[Atoms], dict]:
    """As :func:`student_md`, but the student runs the teacher's own protocol
    (`sampling.run_protocol`: Langevin, Berendsen every few steps — not `mtpjax md`'s
    Nosé–Hoover/MTK) through its ASE calculator; a snapshot every ``grade_every`` steps after
    the first ``grade_skip_steps`` is a candidate (γ is applied by :func:`pick`, so
    ``gamma_break`` does not stop these runs). A run that blows up keeps what it made."""
    from md.structures import random_structure
    from mtpjax.calculator import MTPCalculator

    atoms = random_structure(s["n_atoms"], s["density_g_cm3"], species[0],
                             s["min_distance_A"], seed)
    n = len(atoms)
    snaps: list[Atoms] = []
    thermo: list = []
    stop = "end"
    try:
        sampling.run_protocol(atoms, MTPCalculator(pot, species=list(species)), stages,
                              timestep_fs=s["timestep_fs"], seed=seed,
                              snapshot_every=s["grade_every"], on_snapshot=snaps.append,
                              on_thermo=thermo.append)
    except (FloatingPointError, RuntimeError) as exc:  # an unstable student
        stop = f"failed: {exc}"
    found = [a for a in snaps if a.info["step"] > s.get("grade_skip_steps", 0)]
    grades = grader.grade(sampling.atoms_views(found, species)) if found else [0.0]
    volumes = [t.V / n for t in thermo]
    return found, {"steps": int(thermo[-1].step) if thermo else 0, "stop": stop,
                   "found": len(found), "max_gamma": float(max(grades)),
                   "volume_A3_per_atom": [min(volumes, default=0.0),
                                          max(volumes, default=0.0)]}


def student_cells(pot: Path, settings, species: Sequence[str], seed: int) -> list[Atoms]:
    """Random cells (`testsets.RSSSettings` ``settings``, seeded by ``seed``) relaxed by the
    student ``pot`` exactly as the RSS test set's cells are by the teacher
    (`testsets.rss_set`: FIRE on positions and cell at a drawn pressure); a cell whose
    relaxation fails is dropped. No teacher call. Single-species (the generator's)."""
    from distill import testsets
    from mtpjax.calculator import MTPCalculator

    cells, _ = testsets.rss_set(MTPCalculator(pot, species=list(species)), settings, seed=seed)
    return cells


def pick(pot, train: Sequence[Atoms], candidates: Sequence[Atoms], species: Sequence[str],
         s: dict, rng: np.random.Generator | None = None) -> sampling.GradeSelection:
    """The candidates to label: ``grade_budget`` of them (`sampling.grade_budget_select`, or
    with ``grade_pick = "strata"`` one per stretch of the protocol,
    `sampling.grade_strata_select`, or with ``grade_pick = "random"`` drawn at random by
    ``rng``, `sampling.random_select`: the control without grades), or MaxVol's picks above
    ``grade_threshold`` (at most ``grade_limit``) without a budget."""
    from mtpjax.grade import SWAP_THRESHOLD

    if s.get("grade_pick", "gamma") == "random":
        if rng is None:
            raise ValueError("grade_pick = 'random' needs a random generator (rng)")
        return sampling.random_select(pot, train, candidates, species, s["grade_budget"], rng)
    if s.get("grade_pick", "gamma") == "strata":
        return sampling.grade_strata_select(pot, train, candidates, species, s["grade_budget"])
    if s["grade_budget"]:
        return sampling.grade_budget_select(pot, train, candidates, species, s["grade_budget"],
                                            s["grade_threshold"], SWAP_THRESHOLD)
    return sampling.grade_select(pot, train, candidates, species, s["grade_threshold"],
                                 SWAP_THRESHOLD, s["grade_limit"])


def _pool_pick(pot, train, candidates, left, extra, extra_left, share: int,
               species: Sequence[str], s: dict, rng: np.random.Generator):
    """One round's picks over the teacher's snapshots ``left`` (indices into ``candidates``)
    and, with ``share`` > 0, ``share`` of the cells ``extra_left`` (indices into ``extra``),
    graded with the round's snapshot picks in the active set.

    Returns (the snapshots' GradeSelection, chosen snapshot indices, chosen cell indices, the
    round summary's cell entries)."""
    sel = pick(pot, train, [candidates[k] for k in left], species,
               {**s, "grade_budget": s["grade_budget"] - share} if share else s, rng)
    chosen = [left[k] for k in sel.chosen]
    if not share:
        return sel, chosen, [], {}
    csel = pick(pot, train + [candidates[k] for k in chosen],
                [extra[k] for k in extra_left], species, {**s, "grade_budget": share}, rng)
    cell_chosen = [extra_left[k] for k in csel.chosen]
    summary = {"cells": len(extra), "cells_selected": len(cell_chosen),
               "picked_cell_atoms": [len(extra[k]) for k in cell_chosen],
               "max_gamma_cells": float(csel.grades.max(initial=0))}
    return sel, chosen, cell_chosen, summary


def grade_rounds(d0: list[Atoms], candidates: list[Atoms] | None, stages,
                 species: Sequence[str], s: dict, seed: int,
                 fit: Callable[[list[Atoms], str], Path],
                 label: Callable[[list[Atoms]], list[Atoms]],
                 keep: Callable[[list[Atoms], int], list[Atoms]] | None = None,
                 log: Callable[[str], None] = lambda _: None,
                 on_round: Callable[[dict], None] | None = None,
                 cells: Callable[[Path], list[Atoms]] | None = None,
                 ) -> tuple[list[Atoms], list[dict]]:
    """D1 by grades → (D1 frames, one summary per round).

    Round 0 (``candidates`` given: the teacher's MD snapshots): a student fitted on ``d0``
    picks among them. With ``grade_pool_rounds`` = p > 1, p − 1 more rounds over the same
    snapshots follow: the teacher labels the last picks, the student is refitted on ``d0`` +
    every label so far and picks again among the snapshots not yet picked. Then
    ``grade_iterations`` rounds: the teacher labels what is picked so
    far, a student is refitted on ``d0`` + those labels (not before the first round when
    nothing is picked yet), runs the protocol ``grade_runs`` times itself (seeds ``seed`` +
    500·i + run for its i-th student round) and picks among the configurations of its runs
    (:func:`pick`). Rounds are numbered in order: 0 … p − 1 over the teacher's snapshots, then
    p, p + 1, … for the student's MD (1, 2, … with no candidates).

    ``cells(pot)`` (with ``candidates``): more candidates for the rounds over the teacher's
    snapshots, made once with the D0 student's ``pot`` (:func:`student_cells`: random cells it
    relaxed); each of those rounds then picks ``grade_budget`` − ``grade_cells_per_round``
    snapshots and ``grade_cells_per_round`` cells, the cells graded against the active set
    with the round's snapshot picks in it (their γ is typically several times the
    snapshots', so one pool would pick only cells).

    ``fit(train, name)``: a student's ``.mtp`` fitted on ``train`` (frames with REF_*
    labels). ``label(frames)``: teacher-labels ``frames`` (the new picks) and returns every
    labelled D1 frame so far. ``keep(frames, round)``: what joins D1 of a round's picks
    (default: the frames). ``on_round(summary)``: called with each round's summary as soon as
    the round is over (before its picks are labelled). The last round's picks are returned
    unlabelled."""
    state = _Rounds(d0, fit, label, keep or (lambda frames, _r: frames),
                    on_round or (lambda _summary: None), log,
                    np.random.default_rng([seed, 16]))  # the rng: grade_pick = "random" only
    state.pot = fit(d0, "round_0")
    first = 1  # the number of the first student-MD round
    if candidates is not None:
        first = _snapshot_rounds(state, candidates, cells, species, s)
    _student_md_rounds(state, first, stages, species, s, seed)
    return state.d1, state.rounds


@dataclass
class _Rounds:
    """What the rounds of :func:`grade_rounds` share: its callbacks, the current student
    (``pot``, fitted on ``train``), the last round's picks (``new``, not labelled yet), D1 so
    far and the round summaries."""

    d0: list[Atoms]
    fit: Callable[[list[Atoms], str], Path]
    label: Callable[[list[Atoms]], list[Atoms]]
    keep: Callable[[list[Atoms], int], list[Atoms]]
    on_round: Callable[[dict], None]
    log: Callable[[str], None]
    rng: np.random.Generator
    pot: Path | None = None
    train: list[Atoms] = field(default_factory=list)
    new: list[Atoms] = field(default_factory=list)
    d1: list[Atoms] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.train = list(self.d0)

    def refit(self, name: str) -> None:
        """The last picks labelled, the student refitted on D0 + every label so far."""
        self.train = list(self.d0) + self.label(self.new)
        self.pot = self.fit(self.train, name)

    def close(self, summary: dict, new: list[Atoms]) -> None:
        """A round over: its summary out, its picks (``new``) joined to D1."""
        self.rounds.append(summary)
        self.on_round(summary)
        self.new = new
        self.d1 += new


def _snapshot_rounds(state: _Rounds, candidates: list[Atoms], cells, species, s: dict) -> int:
    """The ``grade_pool_rounds`` rounds over the teacher's snapshots ``candidates`` (and the
    random cells ``cells(pot)`` made with the D0 student) → the number of the next round."""
    left = list(range(len(candidates)))  # snapshots not picked yet
    extra = [] if cells is None else cells(state.pot)
    extra_left = list(range(len(extra)))  # cells not picked yet
    share = s.get("grade_cells_per_round", 0) if extra else 0
    if cells is not None:
        state.log(f"grade: {len(extra)} random cells relaxed by the D0 student")
    r = 0
    for r in range(s.get("grade_pool_rounds", 1)):
        if r:  # the last picks labelled, the student refitted, then a new pick
            if not state.new or not (left or extra_left):
                return r
            state.refit(f"round_{r}")
        sel, chosen, cell_chosen, summary = _pool_pick(
            state.pot, state.train, candidates, left, extra, extra_left, share, species, s,
            state.rng)
        extra_left = [k for k in extra_left if k not in set(cell_chosen)]
        new = state.keep([candidates[k] for k in chosen] + [extra[k] for k in cell_chosen], r)
        max_gamma = float(sel.grades.max(initial=0))
        state.log(f"grade round {r}: {len(chosen)} of {len(left)} teacher snapshots selected "
                  f"(max γ {max_gamma:.3g})"
                  + (f", {summary['cells_selected']} random cells" if summary else ""))
        state.close({"round": r, "source": "teacher_md", "candidates": len(left),
                     "selected": len(new), "max_gamma": max_gamma,
                     "picked_steps": [candidates[k].info.get("step") for k in chosen],
                     **summary}, new)
        left = [k for k in left if k not in set(chosen)]
    return r + 1


def _student_md_rounds(state: _Rounds, first: int, stages, species, s: dict, seed: int) -> None:
    """The ``grade_iterations`` rounds over the student's own MD, numbered from ``first``;
    they stop early when a round picks nothing."""
    run_md = student_protocol_md if s.get("grade_md", "mtpjax") == "protocol" else student_md
    for it in range(1, s["grade_iterations"] + 1):
        number = first + it - 1
        if state.new:
            state.refit(f"round_{number}")
        grader = sampling.grade_select(state.pot, state.train, [], species).grader
        found, runs = [], []
        for k in range(s["grade_runs"]):
            f, md = run_md(state.pot, grader, stages, species, s, seed + 500 * it + k)
            found += f
            runs.append(md)
        sel = pick(state.pot, state.train, found, species, s, state.rng)
        new = state.keep([found[k] for k in sel.chosen], number)
        md = {"steps": sum(m["steps"] for m in runs), "stop": [m["stop"] for m in runs],
              "found": len(found), "max_gamma": max(m["max_gamma"] for m in runs),
              "volume_A3_per_atom": [m["volume_A3_per_atom"] for m in runs]}
        state.log(f"grade round {number}: student MD {md['steps']} steps "
                  f"({', '.join(md['stop'])}), {md['found']} candidates, {len(new)} selected")
        state.close({"round": number, "source": "student_md", **md, "selected": len(new),
                     "train": len(state.train)}, new)
        if not new:
            return
