"""MD run configuration (TOML), validated before any computation.

Sections (units in the key names: fs, K, GPa, Å, g/cm³)::

    [potential]  file = "pot.mtp"; species = ["Si"]
    [structure]  file = "start.extxyz"                                  # any ASE-readable file
                 # or  random = {n_atoms = 216, density_g_cm3 = 2.3, min_distance_A = 2.0}
                 # or  crystal = {name = "diamond", a_A = 5.431, repeat = [3, 3, 3]}
    [run]        timestep_fs, temperature_K (initial velocities), seed, output_dir,
                 thermo_every, thermo_format ("csv"|"jsonl"), trajectory_every,
                 trajectory_formats (["extxyz", "traj"]), restart_every, chunk_steps,
                 devices (int or "all"), decomposition ("auto"|"domain"|"replicated":
                 spatial domains or replicated atoms on several devices),
                 dtype ("float64"|"float32"), progress, per_process_output (true: each
                 process writes its atoms, trajectory.p{rank}.* and restart.parts/; false:
                 process 0 writes the gathered system; "auto" (default): true on several
                 processes)
    [neighbors]  skin_A, capacity_multiplier
    [grade]      active_set = "state.als" (saved by ``mtpjax calc-grade --als-filename``),
                 every (steps between MaxVol grades γ, written to grades.csv; default 10),
                 gamma_select (save configurations with γ above it to selected_file, default
                 output_dir/preselected.cfg, with ``Feature MV_grade``), gamma_break (stop the
                 run when γ exceeds it) — MLIP's ``select:threshold`` / ``threshold-break``
    [[stage]]    name, ensemble ("nve"|"nvt"|"npt"), thermostat ("nhc"|"langevin"),
                 barostat ("iso"|"aniso"), steps | duration_ps | rate_K_per_s,
                 temperature_K, temperature_end_K, pressure_GPa, pressure_end_GPa,
                 tau_t_fs, tau_p_fs, compressibility_per_GPa, chain_length

Errors are :class:`ConfigError` naming the file and the key (``stage[2].steps``).
Relative paths are resolved against the working directory, then the config file's directory.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from md.ensembles import BAROSTATS, ENSEMBLES, THERMOSTATS
from mtpjax.config_check import (
    MAX_DENSITY_G_CM3,
    MAX_TIMESTEP_FS,
    Checker,
    check_packing,
    toml_error,
)
from mtpjax.errors import InputError


class ConfigError(InputError):
    """Invalid MD configuration: ``path`` (the file), ``line`` (of the key, where found) and a
    message naming the key (``stage[2].steps``)."""


@dataclass(frozen=True)
class StageConfig:
    name: str
    ensemble: str
    steps: int
    temperature_K: float
    temperature_end_K: float
    pressure_GPa: float = 0.0
    pressure_end_GPa: float = 0.0
    thermostat: str = "nhc"
    barostat: str = "iso"
    tau_t_fs: float = 100.0
    tau_p_fs: float = 1000.0
    compressibility_per_GPa: float = 0.01
    chain_length: int = 3


@dataclass(frozen=True)
class MDConfig:
    path: Path | None
    potential_file: Path
    species: tuple[str, ...]
    structure: dict
    stages: tuple[StageConfig, ...]
    timestep_fs: float = 1.0
    temperature_K: float = 300.0
    seed: int = 0
    output_dir: Path = Path("runs/md")
    thermo_every: int = 10
    thermo_format: str = "csv"
    trajectory_every: int = 100
    trajectory_formats: tuple[str, ...] = ("extxyz",)
    restart_every: int = 1000
    chunk_steps: int = 100
    devices: int | str = 1
    decomposition: str = "auto"
    dtype: str = "float64"
    progress: bool = True
    per_process_output: bool | None = None
    skin_A: float = 1.0
    capacity_multiplier: float = 1.25
    active_set: Path | None = None
    grade_every: int = 0
    gamma_select: float | None = None
    gamma_break: float | None = None
    selected_file: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


_SECTIONS = {"potential", "structure", "run", "neighbors", "stage", "grade"}
_GRADE = {"active_set", "every", "gamma_select", "gamma_break", "selected_file"}
_POTENTIAL = {"file", "species"}
_STRUCTURE = {"file", "random", "crystal", "index"}
_RANDOM = {"n_atoms", "density_g_cm3", "min_distance_A", "seed", "element"}
_CRYSTAL = {"name", "a_A", "repeat", "element"}
_RUN = {"timestep_fs", "temperature_K", "seed", "output_dir", "thermo_every", "thermo_format",
        "trajectory_every", "trajectory_formats", "restart_every", "chunk_steps", "devices",
        "decomposition", "dtype", "progress", "per_process_output"}
_NEIGHBORS = {"skin_A", "capacity_multiplier"}
_STAGE = {"name", "ensemble", "thermostat", "barostat", "steps", "duration_ps", "rate_K_per_s",
          "temperature_K", "temperature_end_K", "pressure_GPa", "pressure_end_GPa", "tau_t_fs",
          "tau_p_fs", "compressibility_per_GPa", "chain_length"}


class _Checker(Checker):
    """:class:`mtpjax.config_check.Checker` raising :class:`ConfigError`."""

    def __init__(self, source: str, text: str | None = None, prefix: str = ""):
        super().__init__(source, text, ConfigError, prefix)


def load_config(path: str | Path) -> MDConfig:
    """Read and validate a TOML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("no such config file", path)
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message, line = toml_error(exc)
        raise ConfigError(message, path, line) from exc
    return parse_config(data, source=str(path), base=path.resolve().parent, text=text)


def parse_config(data: dict, source: str = "<config>", base: Path | None = None,
                 text: str | None = None, prefix: str = "") -> MDConfig:
    """Validate a config dictionary (as read from TOML): keys, types, ranges and relations.

    ``text`` (the TOML source) lets errors carry the line of the key; ``prefix`` is the dotted
    key of this config inside a larger file (``md.protocol.compress``)."""
    c = _Checker(source, text, prefix)
    c.keys(data, _SECTIONS, "")
    for section in ("potential", "structure", "stage"):
        if section not in data:
            c.fail(section, "required section missing")
    pot = data["potential"]
    c.keys(pot, _POTENTIAL, "potential")
    if "file" not in pot:
        c.fail("potential.file", "required")
    pot_file = c.path(pot["file"], "potential.file", base)
    species = c.species(pot.get("species", ["Si"]), "potential.species")
    if pot_file.suffix == ".mtp":  # (the pipeline validates protocols with a placeholder)
        from mtpjax.io.mtp_file import read_mtp

        count = read_mtp(pot_file).species_count  # a broken .mtp: FileFormatError, its line
        if count != len(species):
            c.fail("potential.species", f"{len(species)} element(s) {species} but "
                   f"{pot_file} has species_count = {count}")

    structure = dict(data["structure"])
    c.keys(structure, _STRUCTURE, "structure")
    kinds = [k for k in ("file", "random", "crystal") if k in structure]
    if len(kinds) != 1:
        c.fail("structure", f"give exactly one of file, random, crystal (got {kinds or 'none'})")
    if "file" in structure:
        structure["file"] = c.path(structure["file"], "structure.file", base)
    elif "random" in structure:
        r = structure["random"]
        c.keys(r, _RANDOM, "structure.random")
        n = c.number(r, "n_atoms", "structure.random", positive=True, integer=True)
        rho = c.number(r, "density_g_cm3", "structure.random", positive=True,
                       high=MAX_DENSITY_G_CM3, unit="g/cm³")
        dmin = c.number(r, "min_distance_A", "structure.random", default=2.0, positive=True,
                        high=10.0, unit="Å")
        c.number(r, "seed", "structure.random", default=0, nonneg=True, integer=True)
        if r.get("element", species[0]) not in species:
            c.fail("structure.random.element", f"not in potential.species {species}")
        check_packing(c, "structure.random.min_distance_A", n, rho, dmin,
                      r.get("element", species[0]))
    else:
        r = structure["crystal"]
        c.keys(r, _CRYSTAL, "structure.crystal")
        if r.get("name") not in ("diamond", "fcc", "bcc", "sc"):
            c.fail("structure.crystal.name", f"one of diamond, fcc, bcc, sc; got {r.get('name')!r}")
        c.number(r, "a_A", "structure.crystal", positive=True, high=100.0, unit="Å")
        rep = r.get("repeat", [1, 1, 1])
        if not (isinstance(rep, list) and len(rep) == 3 and all(
                isinstance(x, int) and x > 0 for x in rep)):
            c.fail("structure.crystal.repeat", f"expected 3 positive integers, got {rep!r}")
        if r.get("element", species[0]) not in species:
            c.fail("structure.crystal.element", f"not in potential.species {species}")

    run = data.get("run", {})
    c.keys(run, _RUN, "run")
    dt = c.number(run, "timestep_fs", "run", default=1.0, positive=True,
                  high=MAX_TIMESTEP_FS, unit="fs")
    t0 = c.number(run, "temperature_K", "run", default=300.0, nonneg=True, high=1e5, unit="K")
    devices = run.get("devices", 1)
    if not (devices == "all" or (isinstance(devices, int) and not isinstance(devices, bool)
                                 and devices >= 1)):
        c.fail("run.devices", f"expected a positive integer or \"all\", got {devices!r}")
    formats = run.get("trajectory_formats", ["extxyz"])
    if isinstance(formats, str):
        formats = [formats]
    for f in formats:
        if f not in ("extxyz", "traj"):
            c.fail("run.trajectory_formats", f"formats are 'extxyz' and 'traj', got {f!r}")
    progress = run.get("progress", True)
    if not isinstance(progress, bool):
        c.fail("run.progress", f"expected true or false, got {progress!r}")
    per_process = run.get("per_process_output", "auto")
    if not (isinstance(per_process, bool) or per_process == "auto"):
        c.fail("run.per_process_output",
               f"expected true, false or \"auto\", got {per_process!r}")
    out = run.get("output_dir", "runs/md")
    if not isinstance(out, str):
        c.fail("run.output_dir", f"expected a path string, got {out!r}")

    nb = data.get("neighbors", {})
    c.keys(nb, _NEIGHBORS, "neighbors")
    skin = c.number(nb, "skin_A", "neighbors", default=1.0, positive=True, high=10.0, unit="Å")
    mult = c.number(nb, "capacity_multiplier", "neighbors", default=1.25, positive=True)
    if mult < 1:
        c.fail("neighbors.capacity_multiplier", f"must be ≥ 1, got {mult}")

    stages_raw = data["stage"]
    if isinstance(stages_raw, dict):
        stages_raw = [stages_raw]
    if not isinstance(stages_raw, list) or not stages_raw:
        c.fail("stage", "expected one or more [[stage]] tables")
    stages = tuple(_stage(c, s, i, dt, t0) for i, s in enumerate(stages_raw))
    grade = _grade(c, data.get("grade"), base)

    return MDConfig(
        path=Path(source) if base is not None else None,
        potential_file=pot_file,
        species=tuple(species),
        structure=structure,
        stages=stages,
        timestep_fs=float(dt),
        temperature_K=float(t0),
        seed=c.number(run, "seed", "run", default=0, nonneg=True, integer=True),
        output_dir=Path(out),
        thermo_every=c.number(run, "thermo_every", "run", default=10, positive=True,
                              integer=True),
        thermo_format=c.choice(run, "thermo_format", "run", ("csv", "jsonl"), "csv"),
        trajectory_every=c.number(run, "trajectory_every", "run", default=100, nonneg=True,
                                  integer=True),
        trajectory_formats=tuple(formats),
        restart_every=c.number(run, "restart_every", "run", default=1000, nonneg=True,
                               integer=True),
        chunk_steps=c.number(run, "chunk_steps", "run", default=100, positive=True,
                             integer=True),
        devices=devices,
        decomposition=c.choice(run, "decomposition", "run", ("auto", "domain", "replicated"),
                               "auto"),
        dtype=c.choice(run, "dtype", "run", ("float64", "float32"), "float64"),
        progress=progress,
        per_process_output=None if per_process == "auto" else per_process,
        skin_A=float(skin),
        capacity_multiplier=float(mult),
        **grade,
    )


def _grade(c: _Checker, g, base: Path | None) -> dict:
    """The ``[grade]`` section as MDConfig fields (empty: no grading)."""
    if g is None:
        return {}
    c.keys(g, _GRADE, "grade")
    if "active_set" not in g:
        c.fail("grade.active_set", "required (a state saved by mtpjax calc-grade "
               "--als-filename, or an mlp .als)")
    out = {"active_set": c.path(g["active_set"], "grade.active_set", base),
           "grade_every": c.number(g, "every", "grade", default=10, positive=True,
                                   integer=True)}
    for key in ("gamma_select", "gamma_break"):
        if key in g:
            out[key] = float(c.number(g, key, "grade", positive=True))
    if out.get("gamma_select", 0) > out.get("gamma_break", float("inf")):
        c.fail("grade.gamma_select", f"must not exceed grade.gamma_break = "
               f"{out['gamma_break']}, got {out['gamma_select']}")
    if "selected_file" in g:
        if not isinstance(g["selected_file"], str) or not g["selected_file"]:
            c.fail("grade.selected_file", f"expected a path string, got {g['selected_file']!r}")
        out["selected_file"] = Path(g["selected_file"])
    return out


def _stage(c: _Checker, s, i: int, dt: float, t0: float) -> StageConfig:
    where = f"stage[{i}]"
    c.keys(s, _STAGE, where)
    ens = c.choice(s, "ensemble", where, ENSEMBLES, None)
    temp = c.number(s, "temperature_K", where, default=t0, nonneg=True, high=1e5, unit="K")
    temp_end = c.number(s, "temperature_end_K", where, default=temp, nonneg=True, high=1e5,
                        unit="K")
    if ens != "nve" and temp <= 0:
        c.fail(f"{where}.temperature_K", f"a {ens} stage needs a temperature > 0 K")
    if ens == "nve" and "temperature_end_K" in s:
        c.fail(f"{where}.temperature_end_K", "a temperature ramp needs ensemble nvt or npt")
    p0 = c.number(s, "pressure_GPa", where, default=0.0, low=-100.0, high=1000.0, unit="GPa")
    p1 = c.number(s, "pressure_end_GPa", where, default=p0, low=-100.0, high=1000.0,
                  unit="GPa")
    if ens != "npt" and ("pressure_GPa" in s or "pressure_end_GPa" in s):
        c.fail(f"{where}.pressure_GPa", "pressure targets need ensemble npt")
    given = [k for k in ("steps", "duration_ps", "rate_K_per_s") if k in s]
    if len(given) != 1:
        c.fail(where, f"give exactly one of steps, duration_ps, rate_K_per_s (got {given})")
    if "steps" in s:
        steps = c.number(s, "steps", where, positive=True, integer=True)
    elif "duration_ps" in s:
        steps = round(c.number(s, "duration_ps", where, positive=True) * 1000.0 / dt)
    else:
        rate = c.number(s, "rate_K_per_s", where, positive=True)
        if temp_end == temp:
            c.fail(f"{where}.rate_K_per_s", "needs temperature_end_K different from temperature_K")
        steps = round(abs(temp_end - temp) / rate * 1e15 / dt)
    if steps < 1:
        c.fail(where, "the stage has no steps")
    return StageConfig(
        name=str(s.get("name", f"stage{i}")),
        ensemble=ens,
        steps=int(steps),
        temperature_K=float(temp),
        temperature_end_K=float(temp_end),
        pressure_GPa=float(p0),
        pressure_end_GPa=float(p1),
        thermostat=c.choice(s, "thermostat", where, THERMOSTATS, "nhc"),
        barostat=c.choice(s, "barostat", where, BAROSTATS, "iso"),
        tau_t_fs=float(c.number(s, "tau_t_fs", where, default=100.0, low=2 * dt, unit="fs "
                                "(≥ 2 time steps)")),
        tau_p_fs=float(c.number(s, "tau_p_fs", where, default=1000.0, low=2 * dt, unit="fs "
                                "(≥ 2 time steps)")),
        compressibility_per_GPa=float(c.number(s, "compressibility_per_GPa", where,
                                               default=0.01, positive=True)),
        chain_length=int(c.number(s, "chain_length", where, default=3, positive=True,
                                  integer=True)),
    )
