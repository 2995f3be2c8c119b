"""Physical validation: the md and analysis stages.

md: each protocol of ``[md.protocol.NAME]`` (the `mtpjax md` TOML format: structure, run,
neighbors, stage) is run with M''_L and/or M'_L through `md.runner` at the demo size, and with the
teacher on the same stages through ASE (`distill.sampling`) at ``teacher_structure`` (default:
the same structure). With ``replicas`` = n > 1 in a protocol table each model runs n times,
with run seeds seed … seed + n − 1 (independent initial velocities and thermostat noise), in
sub-folders r0 … r(n−1). Every run is a sub-task with its own stamp; a killed teacher run
resumes from its last thermo row (`distill.teacher_run`). A run that fails physically —
a non-finite energy (the MD runner's ``FloatingPointError``, or a non-finite value in the thermo
log) or a volume outside 8–60 Å³/atom — is stamped ``failed`` and the pipeline goes on (the paper
marks failed runs the same way). A run that raises any other exception (a bug, a missing file, an
interrupted worker) is recorded as ``error`` *without* a stamp and the md stage's stamp lists it
under ``incomplete``: the next ``distill run`` retries it (and redoes the analysis and report).

analysis: :func:`md.analysis.runs.analyse_run` on the finished runs of each protocol (labels =
model names), giving a Table-I-style comparison (N3, N5, H⁻¹, θ̄, Δθ, ΔE) against the teacher
run, and the SOAP similarity to reference crystals along the run (Fig. 4's measure). With
replicas, a model's Table-I row is the mean over its successful replicas and the sample
standard deviation is kept beside it (``spread``); figures and the similarity series are those
of each model's first replica.
"""

from __future__ import annotations

import itertools
import math
import time
import traceback
from pathlib import Path

from distill.stages.cache import is_done, read_json, read_stamp, stage_key, write_stamp
from distill.stages.config import PIPELINE_PROTOCOL_KEYS
from distill.stages.data import load_teacher
from distill.stages.fits import NAMES, potential_path


def md_level(cfg: dict) -> int:
    """The level used for MD: ``md.level``, default the highest fitted level."""
    return cfg["md"]["level"] or max(cfg["fit"]["levels"])


def _md_doc(table: dict, pot: Path, species, out: Path, teacher: bool, replica: int = 0) -> dict:
    """The `mtpjax md` document of one run; replica r runs with ``run.seed`` + r (initial
    velocities and thermostat noise; replica 0 is the protocol as written)."""
    doc = {k: v for k, v in table.items() if k not in PIPELINE_PROTOCOL_KEYS}
    if teacher and "teacher_structure" in table:
        doc["structure"] = table["teacher_structure"]
    doc["potential"] = {"file": str(pot), "species": list(species)}
    doc["run"] = {**doc.get("run", {}), "output_dir": str(out), "progress": False}
    if replica:
        doc["run"]["seed"] = doc["run"].get("seed", 0) + replica
    return doc


def replica_runs(table: dict) -> list[tuple[int, str]]:
    """[(replica, sub-folder)] of a protocol: one run in the model's folder, or with
    ``replicas`` = n > 1 the runs r0 … r(n−1) in sub-folders."""
    n = int(table.get("replicas", 1))
    return [(0, "")] if n == 1 else [(r, f"r{r}") for r in range(n)]


VOLUME_PER_ATOM_A3 = (8.0, 60.0)  # outside: the cell collapsed or exploded
PHYSICAL_FAILURES = (FloatingPointError,)  # the MD runner's "non-finite energy at step …"


def read_thermo(path: Path) -> list[dict]:
    """Rows of a thermo log, CSV (with header) or JSON lines (`mtpjax md`'s or
    `distill.sampling`'s columns)."""
    import csv
    import json

    path = Path(path)
    if not path.is_file():
        return []
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    with open(path) as fh:
        return list(csv.DictReader(fh))


def check_rows(rows: list[dict], n_atoms: int) -> tuple[bool, str]:
    """(ok, reason): every energy and volume finite, and 8–60 Å³/atom at the end.

    Rows carry the energy as ``E_pot`` (`mtpjax md`) or ``E`` (`distill.sampling`) and the
    volume as ``V_A3`` or ``V`` (Å³); `n_atoms` comes from the run, not from the log.
    """
    if not rows:
        return False, "empty thermo log"
    for row in rows:
        e = float(row.get("E_pot", row.get("E", "nan")))
        v = float(row.get("V_A3", row.get("V", "nan")))
        if not (math.isfinite(e) and math.isfinite(v)):
            return False, f"non-finite energy/volume at step {row.get('step', '?')} (E={e}, V={v})"
    lo, hi = VOLUME_PER_ATOM_A3
    per_atom = float(rows[-1].get("V_A3", rows[-1].get("V"))) / n_atoms
    if not lo <= per_atom <= hi:
        return False, (f"volume {per_atom:.1f} Å³/atom at the end, outside {lo:g}–{hi:g} "
                       "(collapsed or exploded)")
    return True, ""


def check_run(thermo: Path, n_atoms: int) -> tuple[bool, str]:
    """(ok, reason) of a finished run from its thermo log (:func:`check_rows`)."""
    return check_rows(read_thermo(thermo), n_atoms)


def run_student(doc: dict, source: str, out: Path) -> dict:
    """One `mtpjax md` run in this process; returns its status and speed."""
    from md.config import parse_config
    from md.runner import run_config

    cfg = parse_config(doc, source=source, base=Path.cwd())
    start = time.perf_counter()
    sim = run_config(cfg, progress=False)
    wall = time.perf_counter() - start
    import numpy as np

    final = {"step": sim.step, "E_pot": float(sim.state.energy),
             "V_A3": abs(float(np.linalg.det(sim.cell())))}
    ok, reason = check_rows([*sim.history, final], sim.n_atoms)
    return {
        "status": "ok" if ok else "failed",
        "reason": reason,
        "n_atoms": sim.n_atoms,
        "steps": sim.step,
        "wall_s": round(wall, 2),
        "atom_steps_per_s": sim.step * sim.n_atoms / max(wall, 1e-9),
    }


def run_teacher(doc: dict, source: str, out: Path, run_dir: Path, key: str = "") -> dict:
    """The same stages with the teacher through ASE (Langevin + Berendsen, `distill.sampling`),
    written as it runs and resumed after a crash (`distill.teacher_run`: ``thermo.csv``,
    ``trajectory.extxyz``, ``teacher_restart.npz`` stamped with the run's `key`)."""
    from distill.teacher_run import run_to_files
    from distill.teachers import build_calculator
    from md.config import parse_config
    from md.structures import build_structure

    cfg = parse_config(doc, source=source, base=Path.cwd())
    atoms = build_structure(cfg)
    run = run_to_files(
        atoms,
        build_calculator(load_teacher(run_dir)),
        cfg.stages,
        trajectory=out / "trajectory.extxyz",
        thermo=out / "thermo.csv",
        restart=out / "teacher_restart.npz",
        key=key,
        timestep_fs=cfg.timestep_fs,
        seed=cfg.seed,
        snapshot_every=cfg.trajectory_every,
        thermo_every=cfg.thermo_every,
        progress=f"md: {source}",
    )
    ok, reason = check_run(out / "thermo.csv", len(atoms))
    return {
        "status": "ok" if ok else "failed",
        "reason": reason,
        "n_atoms": len(atoms),
        "steps": run.thermo[-1].step if run.thermo else 0,
        "resumed_from_step": run.resumed_from,
        "wall_s": round(run.wall_s, 2),
        # over the steps of this call (a resumed run's earlier part ran in another process)
        "atom_steps_per_s": run.steps_run * len(atoms) / max(run.wall_s, 1e-9),
    }


def run_job(doc: dict, name: str, out: Path, run_dir: Path, is_teacher: bool,
            key: str = "") -> dict:
    """One MD run (teacher or student) → its summary; a physical failure is ``failed``, any
    other exception ``error`` (its traceback in ``out/error.txt``). Runs in this process or in
    a spawned worker (:func:`md_stage` with ``md.workers`` > 1). A student run starts over; a
    teacher run resumes from its restart file when that carries `key` (the run's stamp key)."""
    out.mkdir(parents=True, exist_ok=True)
    student_files = ("thermo.csv", "thermo.jsonl", "trajectory.extxyz", "restart.npz",
                     "trajectory.traj")
    for old in ("error.txt",) + (() if is_teacher else student_files):
        (out / old).unlink(missing_ok=True)
    try:
        if is_teacher:
            return run_teacher(doc, name, out, run_dir, key)
        return run_student(doc, name, out)
    except PHYSICAL_FAILURES as exc:  # an unstable run is a result, not a crash
        (out / "error.txt").write_text(traceback.format_exc())
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # noqa: BLE001 - not a result: retried by the next run
        (out / "error.txt").write_text(traceback.format_exc())
        return {"status": "error", "reason": f"{type(exc).__name__}: {exc} (see error.txt; "
                f"retried by the next distill run)"}


def md_stage(ctx) -> dict:
    """Every (protocol, model) run; physical failures are stamped and recorded, runs that
    raised are recorded as ``error``, not stamped, and listed under ``incomplete`` (retried by
    the next ``distill run``).

    With ``md.workers`` = n > 1 the teacher runs (the slow ones: ASE, one process each) go to
    n spawned worker processes while the students run here, at the same time."""
    m, level = ctx.cfg["md"], md_level(ctx.cfg)
    runs, incomplete = {}, []
    todo = []  # (name, label, proto, out, doc, key, is_teacher, replica sub-folder)
    order = []  # every run's name, in the config's order
    for proto in m["protocols"]:
        table = m["protocol"][proto]
        jobs = [
            (f"{NAMES[mod]}_{level}", potential_path(ctx.run_dir, level, mod), False)
            for mod in m["models"]
        ]
        if m["teacher"]:
            jobs.append(("teacher", potential_path(ctx.run_dir, level, m["models"][0]), True))
        for (label, pot, is_teacher), (replica, sub) in itertools.product(
                jobs, replica_runs(table)):
            out = ctx.folder / proto / label.replace("'", "p") / sub
            doc = _md_doc(table, pot, ctx.species, out, is_teacher, replica)
            key = stage_key(
                doc=doc,
                pot=None if is_teacher else _sha(pot),
                teacher=read_json(ctx.run_dir / "teacher" / "teacher.json")["identity"]
                if is_teacher
                else None,
            )
            name = f"{proto}/{label}" + (f"/{sub}" if sub else "")
            order.append(name)
            if is_done(out, key):
                runs[name] = read_stamp(out)["summary"]
                ctx.log(f"md {name}: up to date")
                continue
            todo.append((name, label, proto, out, doc, key, is_teacher, sub))

    def finish(job, res, seconds):
        name, label, proto, out, doc, key, _, sub = job
        res.update({"model": label, "protocol": proto, "dir": str(out),
                    "seed": doc["run"].get("seed", 0), "replica": sub})
        if res["status"] == "error":
            incomplete.append(name)
        else:
            write_stamp(out, key, seconds, res)
        ctx.log(f"md {name}: {res['status']} {res.get('reason', '')}")
        runs[name] = res

    remote = [j for j in todo if j[6]] if m.get("workers", 1) > 1 else []
    pool, futures = None, {}
    if remote:
        from distill.executors import process_pool

        pool = process_pool(min(m["workers"], len(remote)))
        for job in remote:
            ctx.log(f"md {job[0]} (worker process)")
            futures[pool.submit(run_job, job[4], job[0], job[3], ctx.run_dir, True, job[5])] = (
                job, time.perf_counter())
    try:
        for job in todo:
            if job in remote:
                continue
            ctx.log(f"md {job[0]}")
            start = time.perf_counter()
            finish(job, run_job(job[4], job[0], job[3], ctx.run_dir, job[6], job[5]),
                   time.perf_counter() - start)
        if futures:
            from concurrent.futures import as_completed

            for fut in as_completed(futures):
                job, start = futures[fut]
                try:
                    res = fut.result()
                except Exception as exc:  # noqa: BLE001 - the worker died: retried next run
                    res = {"status": "error", "reason": f"worker process: {type(exc).__name__}: "
                           f"{exc} (retried by the next distill run)"}
                finish(job, res, time.perf_counter() - start)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    runs = {name: runs[name] for name in order if name in runs}
    return {"level": level, "runs": runs, "incomplete": incomplete}


def _sha(path: Path) -> str:
    from distill.hashing import file_sha256

    return file_sha256(path)


def run_calculator(ctx, label: str):
    """The ASE calculator of a run's model: the teacher, or the MTP of ``M'_L`` / ``M''_L``."""
    if label == "teacher":
        from distill.teachers import build_calculator

        return build_calculator(load_teacher(ctx.run_dir))
    from mtpjax.calculator import MTPCalculator

    return MTPCalculator(str(_pot_of(ctx, label)), species=list(ctx.species))


def max_pressure(thermo_paths) -> float:
    """Highest pressure (GPa) in the thermo logs (0 when none has a pressure column)."""
    from md.analysis.thermo import read_thermo as read_log

    top = 0.0
    for path in thermo_paths:
        log = read_log(path)
        if "P" in log and len(log["P"]):
            top = max(top, float(max(log["P"])))
    return top


def analysis_stage(ctx) -> dict:
    """Per protocol, the structural analysis of every successful run (:mod:`md.analysis.runs`;
    ΔE with the run's own model) and a Table-I comparison (``table.json``). With
    ``analysis.soap`` the SOAP similarity of every frame to ``analysis.crystals`` is added;
    with ``analysis.relax_references`` the reference crystals are relaxed by the teacher on a
    ``analysis.p_step_GPa`` grid up to the protocol's highest pressure and shared by all runs
    (the paper's DFT-relaxed, pressure-adjusted references), else the fixed literature cells.
    In the melt-quench protocols (``analysis.quench_protocols``) the last frame is relaxed
    (``analysis.relax_final_steps``) by the run's own model before its Table-I metrics."""
    from md.analysis.references import pressure_adjusted_references, pressure_grid
    from md.analysis.runs import analyse_run, write_comparison
    from md.analysis.summary import replica_statistics

    runs = read_json(ctx.run_dir / "md" / "stamp.json")["summary"]["runs"]
    a = ctx.cfg["analysis"]
    calcs: dict[str, object] = {}
    out = {}
    for proto in ctx.cfg["md"]["protocols"]:
        ok = [r for name, r in runs.items() if r["protocol"] == proto and r["status"] == "ok"]
        if not ok:
            out[proto] = {"status": "no successful runs"}
            continue
        ctx.log(f"analysis {proto}: {', '.join(r['model'] for r in ok)}")
        for r in ok:
            calcs.setdefault(r["model"], run_calculator(ctx, r["model"]))
        quench = proto in a["quench_protocols"]
        crystals = list(a["crystals"]) if a["soap"] and not quench else []  # Fig. 4: compression
        refs, names = None, {}
        if crystals and a["relax_references"]:
            top = max_pressure(Path(r["dir"]) / "thermo.csv" for r in ok)
            grid = pressure_grid(max(top, 0.0), step=a["p_step_GPa"])
            calcs.setdefault("teacher", run_calculator(ctx, "teacher"))
            refs = pressure_adjusted_references(crystals, calcs["teacher"], grid,
                                                cell_filter="unit")
            names["reference_mode"] = (f"pressure-adjusted, relaxed by the teacher every "
                                       f"{a['p_step_GPa']:g} GPa up to {grid[-1]:g} GPa")
        results: dict[str, list[dict]] = {}  # model → its replicas' analyses, in run order
        for r in ok:
            label = r["model"]
            folder = ctx.folder / proto / label.replace("'", "p") / r.get("replica", "")
            results.setdefault(label, []).append(analyse_run(
                Path(r["dir"]) / "trajectory.extxyz", label, folder,
                thermo=Path(r["dir"]) / "thermo.csv", reference_calc=calcs[label],
                references=refs, crystals=crystals, soap=bool(crystals), cell_filter="unit",
                symbol=ctx.species[0], relax_final_steps=a["relax_final_steps"] if quench else 0,
                names={**names, "reference_calc": label,
                       "relax_with": "teacher" if refs is not None else None}))
        stats = {label: replica_statistics([x["metrics"] for x in res])
                 for label, res in results.items()}
        # figures and similarity: each model's first replica; Table I: the mean over replicas
        first = {label: res[0] for label, res in results.items()}
        write_comparison(first, ctx.folder / proto,
                         rows={label: mean for label, (mean, _) in stats.items()})
        out[proto] = {"table": read_json(ctx.folder / proto / "table.json"), "quench": quench,
                      "cooling_rate_K_per_s": cooling_rate(ctx.cfg["md"]["protocol"][proto],
                                                           ctx.species),
                      "similarity": similarity_summary(first, a["similarity_edges_GPa"])}
        if any(len(res) > 1 for res in results.values()):
            from distill.paper_values import TABLE_I_TOLERANCE
            from md.analysis.plots import plot_replicas
            from md.analysis.summary import TABLE_COLUMNS

            plot_replicas({label: [x["metrics"] for x in res] for label, res in results.items()},
                          TABLE_COLUMNS, ctx.folder / proto / "replicas.png",
                          tolerance=TABLE_I_TOLERANCE if quench else None)
            out[proto]["spread"] = {label: spread for label, (_, spread) in stats.items()}
            out[proto]["seeds"] = {label: [r.get("seed") for r in ok if r["model"] == label]
                                   for label in results}
    return out


def cooling_rate(table: dict, species) -> float | None:
    """Fastest cooling rate (K/s) of a protocol's stages (students' structure and timing);
    None when no stage cools."""
    from md.config import parse_config

    doc = {k: v for k, v in table.items() if k not in PIPELINE_PROTOCOL_KEYS}
    doc["potential"] = {"file": __file__, "species": list(species)}
    cfg = parse_config(doc, source="protocol")
    rates = [(st.temperature_K - st.temperature_end_K) / (st.steps * cfg.timestep_fs * 1e-15)
             for st in cfg.stages if st.steps and st.temperature_end_K < st.temperature_K]
    return max(rates) if rates else None


def similarity_summary(results: dict, edges) -> dict:
    """{crystal: {label: [{p_lo, p_hi, mean, n}]}}: each run's mean SOAP similarity to each
    reference crystal in pressure windows (Fig. 4's measure), from its analysis result."""
    from md.analysis.summary import similarity_by_pressure

    out: dict[str, dict] = {}
    for label, res in results.items():
        series = res["series"]
        for crystal, values in series.get("similarity", {}).items():
            out.setdefault(crystal, {})[label] = similarity_by_pressure(
                series["pressure_GPa"], values, edges)
    return out


def _pot_of(ctx, label: str) -> Path:
    kind, level = label.rsplit("_", 1)
    model = "indirect" if kind == NAMES["indirect"] else "direct"
    return potential_path(ctx.run_dir, int(level), model)
