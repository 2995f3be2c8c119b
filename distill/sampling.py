"""Teacher MD with ASE: the protocols that make D1 and the teacher's validation runs.

A teacher (GAP, any ASE calculator) does not run in JAX, so its MD is ASE's Langevin dynamics
plus an isotropic Berendsen barostat (cell rescaled every 10 steps towards the target pressure).
A protocol is a list of `md.config.StageConfig` (the same stage tables `mtpjax md` reads:
``nvt``/``npt``, temperature and pressure ramps, steps), so the teacher and the students can run
the same protocol. Snapshots are taken every `snapshot_every` steps.

Units: time fs, temperature K, pressure GPa, lengths Å, energies eV.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta

from md.config import StageConfig

GPA = units.GPa  # eV/Å³ per GPa
BAROSTAT_EVERY = 10  # steps between Berendsen cell rescalings


@dataclasses.dataclass(frozen=True)
class MDRecord:
    """One thermo line: step, time (ps), T (K), P (GPa), V (Å³), E (eV, potential)."""

    step: int
    time_ps: float
    T: float
    P: float
    V: float
    E: float


@dataclasses.dataclass(frozen=True)
class ProtocolState:
    """Where a :func:`run_protocol` run stands after `step` steps: positions (N, 3) Å, momenta
    (N, 3) in ASE units (amu·Å/(ASE time)), cell (3, 3) Å, and the random generator's state
    (NumPy ``bit_generator.state``, a JSON-able dict)."""

    step: int
    positions: np.ndarray
    momenta: np.ndarray
    cell: np.ndarray
    rng_state: dict

    @classmethod
    def of(cls, atoms: Atoms, step: int, rng: np.random.Generator) -> ProtocolState:
        return cls(int(step), atoms.get_positions(), atoms.get_momenta(),
                   np.array(atoms.cell.array), rng.bit_generator.state)

    def apply(self, atoms: Atoms, rng: np.random.Generator) -> None:
        """Put `atoms` and `rng` where the run stood (the cell first: positions are absolute)."""
        if len(atoms) != len(self.positions):
            raise ValueError(f"the saved state has {len(self.positions)} atoms, the structure "
                             f"{len(atoms)}")
        atoms.set_cell(self.cell, scale_atoms=False)
        atoms.set_positions(self.positions)
        atoms.set_momenta(self.momenta)
        rng.bit_generator.state = self.rng_state


def sampling_stages(
    nvt_steps: int,
    ramp_steps: int,
    temperature_K: float = 500.0,
    pressure_start_GPa: float = 0.0,
    pressure_end_GPa: float = 20.0,
    tau_t_fs: float = 100.0,
    tau_p_fs: float = 500.0,
) -> list[StageConfig]:
    """The paper's D1 protocol: NVT thermalisation, then an NPT pressure ramp (paper: 50 ps at
    500 K, then 0 → 20 GPa over 200 ps). A zero step count drops that stage."""
    stages = []
    if nvt_steps > 0:
        stages.append(
            StageConfig(
                "nvt", "nvt", int(nvt_steps), temperature_K, temperature_K, tau_t_fs=tau_t_fs
            )
        )
    if ramp_steps > 0:
        stages.append(
            StageConfig(
                "ramp",
                "npt",
                int(ramp_steps),
                temperature_K,
                temperature_K,
                pressure_start_GPa,
                pressure_end_GPa,
                tau_t_fs=tau_t_fs,
                tau_p_fs=tau_p_fs,
            )
        )
    return stages


def pressure_GPa(atoms: Atoms) -> float:
    """Instantaneous pressure (GPa) including the kinetic (ideal-gas) term."""
    stress = atoms.get_stress(include_ideal_gas=True)
    return float(-np.mean(stress[:3]) / GPA)


def berendsen_scale(
    p_now: float,
    p_target: float,
    dt_fs: float,
    tau_p_fs: float,
    compressibility_per_GPa: float,
    max_strain: float = 0.01,
) -> float:
    """Isotropic Berendsen length factor μ = [1 − β Δt/τ_P (P₀ − P)]^(1/3), clipped to ±1 %."""
    mu3 = 1.0 - compressibility_per_GPa * dt_fs / tau_p_fs * (p_target - p_now)
    return float(np.clip(np.cbrt(max(mu3, 1e-6)), 1 - max_strain, 1 + max_strain))


def run_protocol(
    atoms: Atoms,
    calc,
    stages: Sequence[StageConfig],
    timestep_fs: float = 1.0,
    seed: int = 0,
    snapshot_every: int = 0,
    thermo_every: int = 10,
    on_snapshot: Callable[[Atoms], None] | None = None,
    on_thermo: Callable[[MDRecord], None] | None = None,
    start: ProtocolState | None = None,
    state_every: int = 0,
    on_state: Callable[[ProtocolState], None] | None = None,
) -> tuple[list[Atoms], list[MDRecord]]:
    """Run `stages` on `atoms` (modified in place) with `calc`; return (snapshots, thermo).

    Velocities start from Maxwell–Boltzmann at the first stage's temperature. NVT: Langevin
    (friction 1/τ_T); NPT: Langevin plus isotropic Berendsen rescaling every step. Temperature
    and pressure targets move linearly over each stage. A snapshot (positions, cell, step and
    pressure in ``info``) is taken every `snapshot_every` steps (0: only the final structure);
    `on_snapshot` / `on_thermo` see each snapshot / thermo record as it is made.
    Raises `FloatingPointError` when the energy or the cell becomes non-finite (an unstable run).

    Resuming: every `state_every` steps (and after the last) `on_state` receives the run's
    :class:`ProtocolState`; a run given that state as `start` continues after its step with the
    same random stream and returns only what it makes from there — the trajectory is the one an
    uninterrupted run makes (tested bit for bit with a deterministic calculator).
    """
    if hasattr(calc, "set_default_properties"):  # quippy: virial in the same call as forces
        calc.set_default_properties(["energy", "forces", "stress"])
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    if start is None:
        thermalize_momenta(atoms, stages[0].temperature_K, rng=rng)
        Stationary(atoms)
        step = 0
    else:
        start.apply(atoms, rng)
        step = start.step
    total = sum(s.steps for s in stages)
    snapshots: list[Atoms] = []
    thermo: list[MDRecord] = []
    offset = 0  # steps before the current stage
    for stage in stages:
        first, offset = step - offset, offset + stage.steps
        if first >= stage.steps:
            continue  # done before `start`
        dyn = Langevin(
            atoms,
            timestep_fs * units.fs,
            temperature_K=stage.temperature_K,
            friction=1.0 / (stage.tau_t_fs * units.fs),
            fixcm=False,
            rng=rng,
        )
        for i in range(first, stage.steps):
            frac = (i + 1) / stage.steps
            dyn.set_temperature(
                temperature_K=stage.temperature_K
                + frac * (stage.temperature_end_K - stage.temperature_K)
            )
            dyn.run(1)
            step += 1
            if stage.ensemble == "npt" and step % BAROSTAT_EVERY == 0:
                # rescaling moves the atoms, so the teacher is called twice on such steps:
                # rescale every BAROSTAT_EVERY steps by the Berendsen factor of that interval
                target = stage.pressure_GPa + frac * (stage.pressure_end_GPa - stage.pressure_GPa)
                mu = berendsen_scale(
                    pressure_GPa(atoms),
                    target,
                    timestep_fs * BAROSTAT_EVERY,
                    stage.tau_p_fs,
                    stage.compressibility_per_GPa,
                )
                atoms.set_cell(atoms.cell.array * mu, scale_atoms=True)
            last = step == total
            if step % thermo_every == 0 or last:
                thermo.append(_record(atoms, step, timestep_fs))
                if on_thermo is not None:
                    on_thermo(thermo[-1])
            if (snapshot_every and step % snapshot_every == 0) or (last and not snapshot_every):
                now = thermo[-1].P if thermo and thermo[-1].step == step else None
                snap = _snapshot(atoms, step, pressure_GPa(atoms) if now is None else now)
                snapshots.append(snap)
                if on_snapshot is not None:
                    on_snapshot(snap)
            if on_state is not None and ((state_every and step % state_every == 0) or last):
                on_state(ProtocolState.of(atoms, step, rng))
    return snapshots, thermo


def _record(atoms: Atoms, step: int, dt_fs: float) -> MDRecord:
    energy = float(atoms.get_potential_energy())
    volume = float(atoms.get_volume())
    if not (np.isfinite(energy) and np.isfinite(volume) and np.all(np.isfinite(atoms.positions))):
        raise FloatingPointError(f"unstable teacher MD at step {step}: E={energy}, V={volume}")
    return MDRecord(
        step,
        step * dt_fs / 1000.0,
        float(atoms.get_temperature()),
        pressure_GPa(atoms),
        volume,
        energy,
    )


def _snapshot(atoms: Atoms, step: int, p_gpa: float) -> Atoms:
    snap = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    snap.info.update({"step": int(step), "pressure_GPa": float(p_gpa)})
    return snap


THERMO_HEADER = "step,time_ps,T,P_GPa,V,E,N"  # the thermo CSV's columns (N: atoms)


def thermo_line(record: MDRecord, n_atoms: int) -> str:
    """One row of the thermo CSV (:data:`THERMO_HEADER`)."""
    r = record
    return f"{r.step},{r.time_ps:.6g},{r.T:.6g},{r.P:.8g},{r.V:.10g},{r.E:.12g},{n_atoms}"


def write_thermo(path: Path, thermo: Sequence[MDRecord], n_atoms: int) -> None:
    """CSV thermo log in the columns `mtpjax analyze --thermo` reads (step,time_ps,T,P_GPa,…)."""
    lines = [THERMO_HEADER] + [thermo_line(r, n_atoms) for r in thermo]
    Path(path).write_text("\n".join(lines) + "\n")


def read_thermo(path: Path) -> list[MDRecord]:
    """The records of a thermo CSV (:func:`write_thermo`'s, or one written row by row)."""
    rows = Path(path).read_text().splitlines()[1:] if Path(path).is_file() else []
    out = []
    for row in rows:
        step, t, temp, p, v, e, _ = row.split(",")
        out.append(MDRecord(int(step), float(t), float(temp), float(p), float(v), float(e)))
    return out


# ------------------------------------------------------------------ grade-driven selection
def atoms_views(frames: Sequence[Atoms], species: Sequence[str]) -> list:
    """Geometry views (positions Å, MLIP types, cell, pbc) of ASE frames for
    :mod:`mtpjax.grade` (``species[t]`` is the element of type t)."""
    from mtpjax.calculator import types_from_numbers
    from mtpjax.grade import _AtomsView

    return [_AtomsView(np.asarray(a.positions, np.float64),
                       types_from_numbers(a.numbers, list(species)),
                       np.asarray(a.cell.array, np.float64), np.asarray(a.pbc, bool))
            for a in frames]


@dataclasses.dataclass
class GradeSelection:
    """Result of :func:`grade_select`: ``chosen`` (candidate indices to label, in the order
    ``mlp select-add`` writes them), ``grades`` (γ of every candidate against the active set of
    the training set, before any candidate was added) and the active set (``grader``, the
    candidates' rows included)."""

    chosen: list[int]
    grades: np.ndarray
    grader: object


def grade_select(potential, train: Sequence[Atoms], candidates: Sequence[Atoms],
                 species: Sequence[str], select_threshold: float = 1.1,
                 swap_threshold: float = 1.0000001, limit: int = 0) -> GradeSelection:
    """Candidates worth labelling, as ``mlp select-add POT TRAIN NEW``: the active set of
    ``train`` (thresholds (swap, swap)), then one MaxVol run over ``candidates`` with
    ``select_threshold``/``swap_threshold`` and at most ``limit`` swaps (0: no limit). A
    candidate is chosen only when its γ exceeds ``select_threshold`` (or a swap it starts
    does) and it is still in the active set at the end: near-duplicates are not both chosen.
    ``potential``: MTPotential or ``.mtp`` path (the current student)."""
    from mtpjax.grade import Grader

    grader = Grader(potential)
    grader.select(atoms_views(train, species), swap_threshold, swap_threshold, tag="train")
    views = atoms_views(candidates, species)
    grades = grader.grade(views) if views else np.zeros(0)
    grader.select(views, select_threshold, swap_threshold, swap_limit=limit or None,
                  tag="new")
    return GradeSelection(grader.selected("new"), np.asarray(grades), grader)


def grade_budget_select(potential, train: Sequence[Atoms], candidates: Sequence[Atoms],
                        species: Sequence[str], budget: int, select_threshold: float = 1.1,
                        swap_threshold: float = 1.0000001) -> GradeSelection:
    """At most ``budget`` candidates to label, filled even when MaxVol saturates: first those
    :func:`grade_select` picks (``limit = budget``), then the remaining candidates in
    decreasing γ against the active set *after* those picks (the least well represented;
    near-duplicates of a pick rank low). ``grades`` are the candidates' γ before any pick."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    sel = grade_select(potential, train, candidates, species, select_threshold,
                       swap_threshold, limit=budget)
    chosen = list(sel.chosen)[:budget]
    rest = [k for k in range(len(candidates)) if k not in set(chosen)]
    if rest and len(chosen) < budget:
        after = sel.grader.grade(atoms_views([candidates[k] for k in rest], species))
        order = np.argsort(-np.asarray(after), kind="stable")
        chosen += [rest[i] for i in order[:budget - len(chosen)]]
    return GradeSelection(chosen, sel.grades, sel.grader)


def grade_strata_select(potential, train: Sequence[Atoms], candidates: Sequence[Atoms],
                        species: Sequence[str], budget: int) -> GradeSelection:
    """``budget`` candidates spread along the sampling protocol: the candidates, in the order
    of their MD step (``info["step"]``; along the ramp the target pressure; runs of several
    seeds interleave), cut into ``budget`` consecutive strata of equal count (±1), and in each
    stratum the candidate of largest γ against the active set of ``train``. Where
    :func:`grade_budget_select` gathers its picks where γ is largest (the least typical
    frames), these cover the protocol as uniform sampling of a run does, each the least well
    represented of its stretch. ``grades``: every candidate's γ; picks in stratum order."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    missing = [k for k, a in enumerate(candidates) if "step" not in a.info]
    if missing:
        raise ValueError(f"candidate {missing[0]} has no info['step'] (its MD step): strata "
                         "need the step of every candidate")
    grader = grade_select(potential, train, [], species).grader  # the active set of train
    views = atoms_views(candidates, species)
    grades = np.asarray(grader.grade(views)) if views else np.zeros(0)
    order = np.argsort([int(a.info["step"]) for a in candidates], kind="stable")
    strata = np.array_split(order, min(budget, len(order))) if budget and len(order) else []
    chosen = [int(s[np.argmax(grades[s])]) for s in strata]
    return GradeSelection(chosen, grades, grader)


def random_select(potential, train: Sequence[Atoms], candidates: Sequence[Atoms],
                  species: Sequence[str], budget: int,
                  rng: np.random.Generator) -> GradeSelection:
    """``budget`` candidates drawn uniformly at random (without replacement, by ``rng``): the
    control for the γ-driven picks (same candidates, same budget, no grades in the choice).
    ``grades`` (every candidate's γ against the active set of ``train``) are computed only to
    be reported beside the grade-picked rounds; picks in the order drawn."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    grader = grade_select(potential, train, [], species).grader
    views = atoms_views(candidates, species)
    grades = np.asarray(grader.grade(views)) if views else np.zeros(0)
    n = min(budget, len(candidates))
    chosen = [int(k) for k in rng.choice(len(candidates), size=n, replace=False)] if n else []
    return GradeSelection(chosen, grades, grader)
