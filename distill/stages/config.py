"""The pipeline's TOML config: schema with defaults, validated before any computation.

Every section is a table of known keys; an unknown section or key, a wrong type, a level that is
not even (2..28), an unknown stage name or a missing file raises `PipelineConfigError` naming the
key (``fit.levels[1]``). The result is a plain dict (defaults filled in, paths resolved) whose
sections are hashed into the stage stamps. See docs/pipeline.md for every key.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

STAGES = ("teacher", "sample", "labels", "fits", "tests", "evaluate", "md", "analysis", "report")


class PipelineConfigError(ValueError):
    """Invalid pipeline config; the message names the file and the key."""


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
    },
    "labels": {"executor": "local", "workers": 0, "chunk_size": 4},
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
    "evaluate": {"cost_cells": 3, "cost_repeats": 5},
    "md": {
        "level": 0,
        "models": ["indirect", "direct"],
        "protocols": ["compress"],
        "teacher": True,
    },
    "analysis": {"soap": False, "relax_references": False},
}
# md protocol tables ([md.protocol.NAME]) follow md/config.py's format: structure, run, stage
PROTOCOL_KEYS = {"structure", "run", "neighbors", "stage", "teacher_structure"}
MODELS = ("indirect", "direct")


def load(path: str | Path, run_dir: str | Path | None = None) -> dict:
    """Read and validate the TOML config at `path`; `run_dir` overrides ``run.dir``."""
    path = Path(path)
    if not path.is_file():
        raise PipelineConfigError(f"{path}: no such config file")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise PipelineConfigError(f"{path}: invalid TOML ({exc})") from None
    if run_dir is not None:
        raw.setdefault("run", {})["dir"] = str(run_dir)
    return validate(raw, source=str(path), base=path.resolve().parent)


def validate(raw: dict, source: str = "<config>", base: Path | None = None) -> dict:
    """Defaults filled in and every value checked; see the module docstring."""

    def fail(key, msg):
        raise PipelineConfigError(f"{source}: {key}: {msg}")

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
    _check(cfg, fail, base)
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


def _check(cfg: dict, fail, base: Path | None) -> None:
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
    for key in ("train", "test"):
        p = resolve(cfg["d0"][key], base)
        if not p.is_file():
            fail(f"d0.{key}", f"file not found: {p}")
        cfg["d0"][key] = str(p)
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
        _check_md_protocol(name, table, fail, base)
    for section, key in (
        ("sample", "snapshot_every"),
        ("compression", "snapshot_every"),
        ("sample", "n_atoms"),
        ("compression", "n_atoms"),
        ("fit", "max_iter"),
        ("evaluate", "cost_repeats"),
    ):
        if cfg[section][key] < (0 if key == "max_iter" else 1):
            fail(f"{section}.{key}", f"must be positive, got {cfg[section][key]}")
    w = cfg["compression"]["window_GPa"]
    if len(w) != 2 or w[0] > w[1]:
        fail("compression.window_GPa", f"expected [p_min, p_max], got {w}")
    if cfg["rss"]["min_atoms"] > cfg["rss"]["max_atoms"] or cfg["rss"]["min_atoms"] < 1:
        fail("rss.min_atoms", "need 1 ≤ min_atoms ≤ max_atoms")
    if cfg["labels"]["executor"] not in ("local", "serial"):
        fail("labels.executor", "expected 'local' or 'serial'")


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


def _check_md_protocol(name: str, table: dict, fail, base: Path | None) -> None:
    """Validate a protocol with md.config (a placeholder potential file: the config itself)."""
    from md.config import ConfigError, parse_config

    doc = {k: v for k, v in table.items() if k != "teacher_structure"}
    doc["potential"] = {"file": __file__, "species": ["Si"]}
    try:
        parse_config(doc, source=f"md.protocol.{name}", base=base)
        if "teacher_structure" in table:
            parse_config(
                {**doc, "structure": table["teacher_structure"]},
                source=f"md.protocol.{name}.teacher_structure",
                base=base,
            )
    except ConfigError as exc:
        fail(f"md.protocol.{name}", str(exc))
