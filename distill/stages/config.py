"""The pipeline's TOML config: schema with defaults, validated before any computation.

Every section is a table of known keys; an unknown section or key, a wrong type, a value out of
its range (:data:`RANGES`: time steps, densities, temperatures, step counts, workers, ...), a
broken relation (``fit.min_dist_A < fit.max_dist_A``, ``rss.min_atoms ≤ rss.max_atoms``, a
snapshot interval longer than the run, ...), a level that is not even (2..28), an unknown stage,
optimiser or species, or a missing file raises `PipelineConfigError` (an
:class:`~mtpjax.errors.InputError`) with the file, the line of the key and the key itself
(``fit.levels[1]``). The result is a plain dict (defaults filled in, paths resolved) whose
sections are hashed into the stage stamps. See docs/pipeline.md for every key.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

from mtpjax.config_check import (
    MAX_DENSITY_G_CM3,
    MAX_TIMESTEP_FS,
    Checker,
    check_packing,
    toml_error,
)
from mtpjax.errors import InputError

STAGES = ("teacher", "sample", "labels", "fits", "tests", "evaluate", "md", "analysis", "report")


class PipelineConfigError(InputError):
    """Invalid pipeline config: ``path``, ``line`` (of the key, where found), and a message
    naming the key."""


# section -> key -> default (type is checked against the default's type; None = any / optional)
SCHEMA: dict[str, dict] = {
    "run": {
        "dir": "runs/distill",
        "seed": 0,
        "species": ["Si"],
        "stages": list(STAGES),
    },
    "teacher": {"spec": "", "fit_gap": False, "gap_sparse": 200, "gap_threads": 1},
    "d0": {
        "train": "data/si_mlearn/train.xyz",
        "test": "data/si_mlearn/test.xyz",
        "max_structures": 0,
    },
    "sample": {
        "runs": 1,
        "n_atoms": 64,
        "density_g_cm3": 2.3,
        "min_distance_A": 2.0,
        "timestep_fs": 1.0,
        "temperature_K": 500.0,
        "nvt_steps": 500,
        "ramp_steps": 1500,
        "pressure_start_GPa": 0.0,
        "pressure_end_GPa": 20.0,
        "snapshot_every": 50,
        "tau_t_fs": 100.0,
        "tau_p_fs": 500.0,
        # > 1: the D1 runs go to this many spawned worker processes at once (not in the key)
        "workers": 1,
        # "uniform": every snapshot is labelled; "grade": a student fitted on D0 grades the
        # snapshots (MaxVol, as mlp select-add) and only those it selects are labelled
        "selection": "uniform",
        "grade_level": 0,           # the grading student's level (0: the lowest fit.levels)
        "grade_max_iter": 30,       # its fit iterations
        "grade_threshold": 1.1,     # select threshold (γ above it is extrapolation)
        "grade_limit": 0,           # most configurations selected per round (0: no limit)
        # labels per round filled even when MaxVol saturates: its picks, then the highest γ
        # against the updated active set (0: only MaxVol's picks above grade_threshold)
        "grade_budget": 0,
        # how a budget is spent: "gamma" (MaxVol's picks, then the highest γ) or "strata" (the
        # candidates cut by MD step into grade_budget stretches, the highest γ in each)
        "grade_pick": "gamma",
        # the student's MD in the grade rounds: "mtpjax" (md.runner, Nosé–Hoover/MTK, γ in
        # the run, gamma_break) or "protocol" (the teacher's Langevin/Berendsen protocol run
        # with the student's ASE calculator)
        "grade_md": "mtpjax",
        # rounds over the teacher MD's snapshots (grade_proposer = "teacher"): after the first
        # pick, each labels the picks, refits the student and picks again among the rest
        "grade_pool_rounds": 1,
        # random cells ([rss] settings) relaxed by the D0 grading student, offered beside the
        # teacher's snapshots in those rounds; grade_cells_per_round of each grade_budget go to
        # them (no teacher call until labelled)
        "grade_cells": 0,
        "grade_cells_per_round": 0,
        "grade_iterations": 0,      # rounds of refit → student MD → grade → teacher labels
        "grade_every": 10,          # student MD: steps between grades
        "grade_runs": 1,            # student MD runs per round (other seeds)
        # student MD: the first N steps of each run (its thermalisation from a random cell)
        # propose nothing (their far-from-equilibrium configurations are not labelled)
        "grade_skip_steps": 0,
        # "teacher": round 0 grades the teacher MD's snapshots; "student": no teacher MD, the
        # D0 student's own MD proposes in the first of the grade_iterations rounds
        "grade_proposer": "teacher",
        "gamma_break": 10.0,        # student MD: stop when γ exceeds this
    },
    "labels": {"executor": "local", "workers": 0, "chunk_size": 4, "scheduler": ""},
    "fit": {
        "levels": [8, 12, 16],
        "min_dist_A": 1.5,
        "max_dist_A": 5.0,
        "radial_basis_size": 8,
        "max_iter": 100,
        "energy_weight": 1.0,
        "force_weight": 0.1,
        "stress_weight": 0.0,
        "optimizer": "lbfgs",
        "seed": 0,
        # stopping rule on a validation split of each fit's training configurations (never
        # the test sets): stop when its loss has not fallen by valid_rtol (relative) for
        # `patience` iterations and keep the best-on-validation coefficients (0: no rule)
        "valid_fraction": 0.0,
        "valid_seed": 0,
        "patience": 0,
        "valid_rtol": 0.0,
        # > 1: the fits run in this many spawned worker processes at once (not in the key)
        "workers": 1,
    },
    "rss": {
        "n_structures": 100,
        "min_atoms": 1,
        "max_atoms": 64,
        "volume_per_atom_A3": 20.0,
        "volume_spread_A3": 5.0,
        "min_distance_A": 2.0,
        "max_ops": 4,
        "pressure_scale_GPa": 5.0,
        "relax_steps": 200,
        "fmax": 0.05,
    },
    "compression": {
        "runs": 1,
        "n_atoms": 64,
        "density_g_cm3": 2.3,
        "timestep_fs": 1.0,
        "temperature_K": 500.0,
        "nvt_steps": 200,
        "ramp_steps": 2000,
        "pressure_end_GPa": 20.0,
        "window_GPa": [5.0, 20.0],
        "snapshot_every": 100,
        "tau_p_fs": 100.0,
    },
    "evaluate": {"md_repeat": 5, "md_steps": 50, "md_warmup_steps": 10, "teacher_steps": 3,
                 "md_temperature_K": 500.0},
    "md": {
        "level": 0,
        "models": ["indirect", "direct"],
        "protocols": ["compress"],
        "teacher": True,
        # > 1: the teacher runs in this many spawned worker processes, alongside the students
        "workers": 1,
    },
    "analysis": {"soap": False, "relax_references": False, "crystals": ["sh"],
                 "p_step_GPa": 1.0, "similarity_edges_GPa": [0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
                 "quench_protocols": [], "relax_final_steps": 200},
}
# numeric ranges: (section, key) -> dict(low/high/positive/nonneg/integer, unit) for Checker.value
_T = dict(nonneg=True, high=1e5, unit="K")
_DT = dict(positive=True, high=MAX_TIMESTEP_FS, unit="fs")
_RHO = dict(positive=True, high=MAX_DENSITY_G_CM3, unit="g/cm³")
_P = dict(low=-100.0, high=1000.0, unit="GPa")
_COUNT = dict(integer=True, low=1)
_STEPS = dict(integer=True, nonneg=True)
RANGES: dict[tuple[str, str], dict] = {
    ("run", "seed"): _STEPS,
    ("teacher", "gap_sparse"): _COUNT, ("teacher", "gap_threads"): _COUNT,
    ("d0", "max_structures"): _STEPS,
    ("sample", "runs"): _COUNT, ("sample", "n_atoms"): _COUNT, ("sample", "density_g_cm3"): _RHO,
    ("sample", "min_distance_A"): dict(positive=True, high=10.0, unit="Å"),
    ("sample", "timestep_fs"): _DT, ("sample", "temperature_K"): _T,
    ("sample", "nvt_steps"): _STEPS, ("sample", "ramp_steps"): _STEPS,
    ("sample", "pressure_start_GPa"): _P, ("sample", "pressure_end_GPa"): _P,
    ("sample", "snapshot_every"): _COUNT,
    ("sample", "workers"): dict(integer=True, low=1, high=64),
    ("sample", "tau_t_fs"): dict(positive=True, unit="fs"),
    ("sample", "tau_p_fs"): dict(positive=True, unit="fs"),
    ("sample", "grade_level"): dict(integer=True, nonneg=True, high=28),
    ("sample", "grade_max_iter"): _STEPS, ("sample", "grade_limit"): _STEPS,
    ("sample", "grade_budget"): _STEPS, ("sample", "grade_skip_steps"): _STEPS,
    ("sample", "grade_threshold"): dict(low=1.0000001, high=1e6),
    ("sample", "grade_iterations"): dict(integer=True, nonneg=True, high=100),
    ("sample", "grade_every"): _COUNT, ("sample", "grade_runs"): _COUNT,
    ("sample", "grade_pool_rounds"): dict(integer=True, low=1, high=100),
    ("sample", "grade_cells"): _STEPS, ("sample", "grade_cells_per_round"): _STEPS,
    ("sample", "gamma_break"): dict(low=1.0000001),
    ("labels", "workers"): _STEPS, ("labels", "chunk_size"): _COUNT,
    ("fit", "min_dist_A"): dict(nonneg=True, high=20.0, unit="Å"),
    ("fit", "max_dist_A"): dict(positive=True, high=20.0, unit="Å"),
    ("fit", "radial_basis_size"): dict(integer=True, low=2, high=64),
    ("fit", "max_iter"): _STEPS, ("fit", "seed"): _STEPS,
    ("fit", "energy_weight"): dict(nonneg=True), ("fit", "force_weight"): dict(nonneg=True),
    ("fit", "stress_weight"): dict(nonneg=True),
    ("fit", "valid_fraction"): dict(nonneg=True, high=0.9), ("fit", "valid_seed"): _STEPS,
    ("fit", "patience"): _STEPS, ("fit", "workers"): dict(integer=True, low=1, high=64),
    ("fit", "valid_rtol"): dict(nonneg=True, high=0.5),
    ("rss", "n_structures"): _COUNT, ("rss", "min_atoms"): _COUNT, ("rss", "max_atoms"): _COUNT,
    ("rss", "volume_per_atom_A3"): dict(positive=True, high=1000.0, unit="Å³"),
    ("rss", "volume_spread_A3"): dict(nonneg=True, unit="Å³"),
    ("rss", "min_distance_A"): dict(positive=True, high=10.0, unit="Å"),
    ("rss", "max_ops"): _STEPS, ("rss", "pressure_scale_GPa"): dict(nonneg=True, unit="GPa"),
    ("rss", "relax_steps"): _STEPS, ("rss", "fmax"): dict(positive=True, unit="eV/Å"),
    ("compression", "runs"): _COUNT, ("compression", "n_atoms"): _COUNT,
    ("compression", "density_g_cm3"): _RHO, ("compression", "timestep_fs"): _DT,
    ("compression", "temperature_K"): _T, ("compression", "nvt_steps"): _STEPS,
    ("compression", "ramp_steps"): _STEPS, ("compression", "pressure_end_GPa"): _P,
    ("compression", "snapshot_every"): _COUNT,
    ("compression", "tau_p_fs"): dict(positive=True, unit="fs"),
    ("evaluate", "md_repeat"): dict(integer=True, low=1, high=100),
    ("evaluate", "md_steps"): _COUNT, ("evaluate", "md_warmup_steps"): _COUNT,
    ("evaluate", "teacher_steps"): _COUNT, ("evaluate", "md_temperature_K"): _T,
    ("md", "level"): _STEPS, ("md", "workers"): dict(integer=True, low=1, high=64),
    ("analysis", "p_step_GPa"): dict(positive=True, high=100.0, unit="GPa"),
    ("analysis", "relax_final_steps"): _STEPS,
}
#: the optimisers of mtpjax.fit.trainer.OPTIMIZERS (not imported: checking needs no JAX;
#: tests/pipeline/test_config.py keeps the two equal)
OPTIMIZERS = ("varpro", "lbfgs", "bfgs", "adam", "lm")
# md protocol tables ([md.protocol.NAME]) follow md/config.py's format: structure, run, stage
#: ... plus the pipeline's own: ``teacher_structure`` (the teacher's cell, default the same
#: structure) and ``replicas`` (independent runs per model, run seeds seed … seed + n − 1)
PIPELINE_PROTOCOL_KEYS = ("teacher_structure", "replicas")
PROTOCOL_KEYS = {"structure", "run", "neighbors", "stage", *PIPELINE_PROTOCOL_KEYS}
MAX_REPLICAS = 32
MODELS = ("indirect", "direct")
#: [labels] executors: the spawned local pool, in-process, Dask (a scheduler or a LocalCluster)
EXECUTORS = ("local", "serial", "dask")
#: [labels] keys that say how labels are computed, not what they are (every executor gives the
#: same labels bit for bit): left out of the stage keys, so switching executor or cluster
#: (a new scheduler address every SLURM job) redoes nothing
LABELS_EXECUTION_KEYS = ("executor", "workers", "chunk_size", "scheduler")


def load(path: str | Path, run_dir: str | Path | None = None) -> dict:
    """Read and validate the TOML config at `path`; `run_dir` overrides ``run.dir``."""
    path = Path(path)
    if not path.is_file():
        raise PipelineConfigError("no such config file", path)
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message, line = toml_error(exc)
        raise PipelineConfigError(message, path, line) from None
    if run_dir is not None:
        raw.setdefault("run", {})["dir"] = str(run_dir)
    return validate(raw, source=str(path), base=path.resolve().parent, text=text)


def validate(raw: dict, source: str = "<config>", base: Path | None = None,
             text: str | None = None) -> dict:
    """Defaults filled in and every value checked; see the module docstring. ``text`` (the
    TOML source) lets errors carry the line of the key."""
    checker = Checker(source, text, PipelineConfigError)
    fail = checker.fail

    cfg = copy.deepcopy(SCHEMA)
    for section, table in raw.items():
        if section not in SCHEMA:
            fail(section, f"unknown section (allowed: {', '.join(SCHEMA)})")
        if not isinstance(table, dict):
            fail(section, "expected a table")
        for key, value in table.items():
            if section == "md" and key == "protocol":
                continue
            if key not in SCHEMA[section]:
                fail(f"{section}.{key}", f"unknown key (allowed: {', '.join(SCHEMA[section])})")
            default = SCHEMA[section][key]
            if not _same_type(value, default):
                fail(f"{section}.{key}", f"expected {type(default).__name__}, got {value!r}")
            cfg[section][key] = value
    cfg["md"]["protocol"] = raw.get("md", {}).get("protocol", {})
    for (section, key), rule in RANGES.items():
        checker.value(cfg[section][key], f"{section}.{key}", **rule)
    _check(cfg, checker, base)
    return cfg


def _same_type(value, default) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, type(default))


def resolve(value: str, base: Path | None) -> Path:
    """A path as given if it exists (or is absolute), else relative to the config's folder."""
    p = Path(value).expanduser()
    if p.exists() or p.is_absolute() or base is None:
        return p
    return base / p if (base / p).exists() else p


def _check(cfg: dict, checker: Checker, base: Path | None) -> None:
    fail = checker.fail
    species = checker.species(cfg["run"]["species"], "run.species")
    for i, stage in enumerate(cfg["run"]["stages"]):
        if stage not in STAGES:
            fail(f"run.stages[{i}]", f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    t = cfg["teacher"]
    if bool(t["spec"]) == bool(t["fit_gap"]):
        fail(
            "teacher",
            "give exactly one of spec = 'gap:PATH.xml' | 'ase:mod:fn' | "
            "'mtp:PATH:Si' and fit_gap = true",
        )
    if t["spec"]:
        _check_teacher(t, fail, base)
        if list(t["resolved"]["species"]) and list(t["resolved"]["species"]) != species:
            fail("teacher.spec", f"the teacher's species {t['resolved']['species']} differ from "
                 f"run.species {species}")
    for key in ("train", "test"):
        p = resolve(cfg["d0"][key], base)
        if not p.is_file():
            fail(f"d0.{key}", f"file not found: {p}")
        cfg["d0"][key] = str(p)
        _check_d0(p, f"d0.{key}", fail, species)
    levels = cfg["fit"]["levels"]
    if not levels:
        fail("fit.levels", "give at least one level")
    for i, lev in enumerate(levels):
        if not isinstance(lev, int) or isinstance(lev, bool) or lev % 2 or not 2 <= lev <= 28:
            fail(f"fit.levels[{i}]", f"levels are even integers 2..28, got {lev!r}")
    if cfg["md"]["level"] and cfg["md"]["level"] not in levels:
        fail("md.level", f"{cfg['md']['level']} is not in fit.levels {levels}")
    for i, m in enumerate(cfg["md"]["models"]):
        if m not in MODELS:
            fail(f"md.models[{i}]", f"expected one of {MODELS}, got {m!r}")
    for i, name in enumerate(cfg["md"]["protocols"]):
        table = cfg["md"]["protocol"].get(name)
        if table is None:
            fail(f"md.protocols[{i}]", f"no [md.protocol.{name}] table")
        for key in table:
            if key not in PROTOCOL_KEYS:
                fail(f"md.protocol.{name}.{key}", f"unknown key (allowed: {sorted(PROTOCOL_KEYS)})")
        _check_md_protocol(name, table, checker, base, species)
    _check_relations(cfg, fail, species)
    _check_crystals(cfg, fail)


def _check_crystals(cfg: dict, fail) -> None:
    """``analysis.crystals`` must name reference crystals of md.analysis.crystals, the
    similarity windows must increase, and ``analysis.quench_protocols`` must be protocols of
    ``md.protocols``."""
    from md.analysis.crystals import canonical_name

    a = cfg["analysis"]
    for i, name in enumerate(a["crystals"]):
        try:
            canonical_name(str(name))
        except ValueError as exc:
            fail(f"analysis.crystals[{i}]", str(exc))
    edges = a["similarity_edges_GPa"]
    numbers = all(isinstance(e, int | float) and not isinstance(e, bool) for e in edges)
    if len(edges) < 2 or not numbers or any(
            b <= e for e, b in zip(edges[:-1], edges[1:], strict=True)):
        fail("analysis.similarity_edges_GPa", f"expected ≥ 2 increasing pressures, got {edges}")
    for i, name in enumerate(a["quench_protocols"]):
        if name not in cfg["md"]["protocols"]:
            fail(f"analysis.quench_protocols[{i}]", f"{name!r} is not in md.protocols "
                 f"{cfg['md']['protocols']}")


def _check_d0(path: Path, key: str, fail, species: list[str]) -> None:
    """D0 files must be readable and hold, for every frame, DFT energies and forces (finite,
    stresses plausible if present) and only ``run.species`` elements (errors name the frame
    and its line)."""
    from mtpjax.fit.data import TrainingDataError, check_samples, read_samples

    try:
        samples = read_samples(path, species=species, species_count=len(species))
        check_samples(samples, energy_weight=1.0, force_weight=1.0)
    except TrainingDataError as exc:
        fail(key, str(exc))


def _check_relations(cfg: dict, fail, species: list[str]) -> None:
    """Relations between keys and choices (ranges are in :data:`RANGES`)."""
    fit = cfg["fit"]
    if fit["min_dist_A"] >= fit["max_dist_A"]:
        fail("fit.max_dist_A", f"need min_dist_A < max_dist_A, got {fit['min_dist_A']} ≥ "
             f"{fit['max_dist_A']} Å")
    if fit["optimizer"] not in OPTIMIZERS:
        fail("fit.optimizer", f"unknown optimiser {fit['optimizer']!r}; expected one of "
             f"{', '.join(OPTIMIZERS)}")
    if fit["patience"] and not fit["valid_fraction"] > 0:
        fail("fit.patience", "the stopping rule needs a validation split: set "
             "fit.valid_fraction > 0")
    if fit["energy_weight"] + fit["force_weight"] + fit["stress_weight"] <= 0:
        fail("fit.energy_weight", "all loss weights are 0: nothing to fit")
    for section in ("sample", "compression"):
        sec = cfg[section]
        total = sec["nvt_steps"] + sec["ramp_steps"]
        if total < 1:
            fail(f"{section}.ramp_steps", "nvt_steps + ramp_steps must be ≥ 1")
        if sec["snapshot_every"] > total:
            fail(f"{section}.snapshot_every", f"{sec['snapshot_every']} > nvt_steps + ramp_steps "
                 f"= {total}: no snapshot would be taken")
        for key in ("tau_t_fs", "tau_p_fs"):
            if key in sec and sec[key] < 2 * sec["timestep_fs"]:
                fail(f"{section}.{key}", f"{sec[key]} fs is shorter than two time steps "
                     f"(timestep_fs = {sec['timestep_fs']})")
    s = cfg["sample"]
    if s["selection"] not in ("uniform", "grade"):
        fail("sample.selection", f"expected 'uniform' or 'grade', got {s['selection']!r}")
    if s["grade_proposer"] not in ("teacher", "student"):
        fail("sample.grade_proposer",
             f"expected 'teacher' or 'student', got {s['grade_proposer']!r}")
    if s["grade_pick"] not in ("gamma", "strata", "random"):
        fail("sample.grade_pick",
             f"expected 'gamma', 'strata' or 'random', got {s['grade_pick']!r}")
    if s["grade_md"] not in ("mtpjax", "protocol"):
        fail("sample.grade_md", f"expected 'mtpjax' or 'protocol', got {s['grade_md']!r}")
    if s["grade_pick"] in ("strata", "random") and s["grade_budget"] < 1:
        fail("sample.grade_budget", f"grade_pick = '{s['grade_pick']}' needs a budget (≥ 1 "
             "label per round), got 0")
    if s["selection"] == "grade" and s["grade_proposer"] == "student" \
            and s["grade_iterations"] < 1:
        fail("sample.grade_iterations", "grade_proposer = 'student' needs at least 1 round, "
             "got 0")
    if s["grade_proposer"] == "student" and s["grade_pool_rounds"] != 1:
        fail("sample.grade_pool_rounds", "rounds over the teacher's snapshots need "
             f"grade_proposer = 'teacher' (there is no teacher MD), got {s['grade_pool_rounds']}")
    if s["grade_cells"] or s["grade_cells_per_round"]:
        if not 1 <= s["grade_cells_per_round"] < s["grade_budget"]:
            # reported at the key the file sets (grade_cells alone: its line)
            fail("sample.grade_cells_per_round" if s["grade_cells_per_round"]
                 else "sample.grade_cells", "random cells need 1 ≤ grade_cells_per_round < "
                 f"grade_budget = {s['grade_budget']} (the rest go to the teacher's snapshots), "
                 f"got {s['grade_cells_per_round']}")
        if s["grade_cells"] < 1:
            fail("sample.grade_cells", "grade_cells_per_round needs grade_cells ≥ 1 random cells")
        if s["grade_proposer"] != "teacher" or s["grade_pick"] == "strata":
            fail("sample.grade_cells", "random cells join the rounds over the teacher's "
                 "snapshots: they need grade_proposer = 'teacher' and grade_pick = 'gamma' "
                 "(or the control 'random')")
    if s["grade_level"] % 2:
        fail("sample.grade_level", f"levels are even, got {s['grade_level']}")
    if s["gamma_break"] < s["grade_threshold"]:
        fail("sample.gamma_break", f"must be ≥ grade_threshold = {s['grade_threshold']}, got "
             f"{s['gamma_break']}")
    check_packing(_Fail(fail), "sample.min_distance_A", s["n_atoms"], s["density_g_cm3"],
                  s["min_distance_A"], species[0])
    w = cfg["compression"]["window_GPa"]
    if len(w) != 2 or w[0] > w[1]:
        fail("compression.window_GPa", f"expected [p_min, p_max], got {w}")
    rss = cfg["rss"]
    if rss["min_atoms"] > rss["max_atoms"]:
        fail("rss.min_atoms", f"need 1 ≤ min_atoms ≤ max_atoms, got {rss['min_atoms']} > "
             f"{rss['max_atoms']}")
    if rss["volume_spread_A3"] >= rss["volume_per_atom_A3"]:
        fail("rss.volume_spread_A3", "must be smaller than volume_per_atom_A3 (volumes must "
             "stay positive)")
    _check_labels(cfg["labels"], fail)
    if cfg["md"]["level"] and cfg["md"]["level"] % 2:
        fail("md.level", f"levels are even, got {cfg['md']['level']}")


def _check_labels(lab: dict, fail) -> None:
    """executor one of EXECUTORS; scheduler (a Dask address, syntax only: nothing is contacted
    before the labels stage) only with executor = "dask", and then no workers; Dask installed."""
    import importlib.util

    if lab["executor"] not in EXECUTORS:
        fail("labels.executor", f"expected one of {', '.join(map(repr, EXECUTORS))}, got "
             f"{lab['executor']!r}")
    if lab["scheduler"] and lab["executor"] != "dask":
        fail("labels.scheduler", f"a Dask scheduler address needs executor = 'dask' (executor "
             f"is {lab['executor']!r})")
    if lab["executor"] != "dask":
        return
    if importlib.util.find_spec("distributed") is None:
        fail("labels.executor", "'dask' needs Dask's distributed package: pip install "
             "'mtpjax[dask]'")
    if lab["scheduler"]:
        from distill.executors import scheduler_address_problem

        problem = scheduler_address_problem(lab["scheduler"])
        if problem:
            fail("labels.scheduler", problem)
        if lab["workers"]:
            fail("labels.workers", "the cluster at labels.scheduler has its own workers; "
                 "workers sizes a LocalCluster (no scheduler): leave it 0")


class _Fail:
    """Adapter giving a ``fail(key, msg)`` function the Checker interface of check_packing."""

    def __init__(self, fail):
        self.fail = fail


def _check_teacher(t: dict, fail, base: Path | None) -> None:
    from distill.teachers import TeacherSpec, check_teacher, parse_teacher

    try:
        spec = parse_teacher(t["spec"])
        if spec.kind in ("gap", "mtp"):
            spec = TeacherSpec(spec.kind, str(resolve(spec.model, base)), spec.species, spec.kwargs)
        check_teacher(spec)
    except (ValueError, FileNotFoundError) as exc:
        fail("teacher.spec", str(exc))
    t["resolved"] = {
        "kind": spec.kind,
        "model": spec.model,
        "species": list(spec.species),
        "kwargs": spec.kwargs,
    }


def _check_md_protocol(name: str, table: dict, checker: Checker, base: Path | None,
                       species: list[str]) -> None:
    """Validate a protocol with md.config (a placeholder potential file: the config itself;
    the species of ``run.species``). Errors name ``md.protocol.NAME.key`` and its line."""
    from md.config import ConfigError, parse_config

    doc = {k: v for k, v in table.items() if k not in PIPELINE_PROTOCOL_KEYS}
    doc["potential"] = {"file": __file__, "species": list(species)}
    prefix = f"md.protocol.{name}"
    if "replicas" in table:
        checker.value(table["replicas"], f"{prefix}.replicas", integer=True, low=1,
                      high=MAX_REPLICAS)
    try:
        parse_config(doc, source=checker.source, base=base, text=checker.text, prefix=prefix)
        if "teacher_structure" in table:
            parse_config({**doc, "structure": table["teacher_structure"]},
                         source=checker.source, base=base, text=checker.text,
                         prefix=f"{prefix}.teacher_structure")
    except ConfigError as exc:
        message = exc.message.replace(".teacher_structure.structure", ".teacher_structure")
        raise PipelineConfigError(message, exc.path, exc.line) from None
