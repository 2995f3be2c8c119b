"""The indirect-learning pipeline: teacher → D1 → labels → fits → tests → evaluate → MD →
analysis → report, each stage cached in a run directory.

A stage's key is the sha256 of the config sections it reads and the keys of the stages it reads
from (`STAGES`); it is skipped when ``RUN/<stage>/stamp.json`` holds the same key, so an
interrupted run resumes, and an edited section redoes that stage and those after it. Long stages
(fits, MD runs) stamp each sub-task too. A stage whose stamp lists sub-tasks under
``incomplete`` (MD runs that raised) is run again by the next invocation, which redoes only those
sub-tasks, and the stages after it that read it are redone too. Every event goes to
``RUN/progress.jsonl`` (stage, status started/done/skipped/failed, seconds) and a line on stderr.

A stage marked ``background`` (the test sets: teacher MD and labels that only the evaluation
reads) starts in a spawned worker process as soon as the stages it needs are done, beside the
stages before it in the list (the single-core D1 sampling, then the labels and fits); its
worker stamps it when it ends (a pipeline killed later keeps it), and the pipeline waits for it
when its turn in the list comes.

Each invocation times itself: total wall time from the start of :func:`run` and, per stage,
its wall and CPU seconds — or, for a stage skipped as up to date ("cached"), the time of the run
that made it (from its stamp). When the report stage runs, this record goes into
``RUN/report/report.md`` ("Run time") and ``RUN/report/timing.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from distill.hashing import file_sha256
from distill.stages import config as config_mod
from distill.stages.cache import is_done, read_stamp, stage_key, write_json, write_stamp


@dataclasses.dataclass
class Context:
    """What a stage function sees: the validated config, the run folder, its own folder."""

    cfg: dict
    run_dir: Path
    folder: Path
    progress: bool = True
    timing: dict | None = None  # this invocation's run-time record so far (see `run`)

    @property
    def species(self) -> list[str]:
        return list(self.cfg["run"]["species"])

    def log(self, message: str) -> None:
        print(f"  {self.folder.name}: {message}", file=sys.stderr, flush=True)

    def event(self, stage: str, **fields) -> None:
        log_event(self.run_dir, stage=stage, **fields)


@dataclasses.dataclass(frozen=True)
class Stage:
    """name; sections: config sections hashed into its key; needs: stages it reads from;
    files: config (section, key) pairs naming external input files whose bytes are hashed."""

    name: str
    sections: tuple[str, ...]
    needs: tuple[str, ...]
    run: Callable[[Context], dict]
    files: tuple[tuple[str, str], ...] = ()
    background: bool = False  # may run in a worker process beside the stages before it


def _stages() -> list[Stage]:
    from distill import report
    from distill.stages import data, evaluate, fits, physical

    return [
        Stage("teacher", ("teacher",), (), data.teacher_stage, (("d0", "train"), ("d0", "test"))),
        Stage("sample", ("sample", "run"), ("teacher",), data.sample_stage),
        Stage(
            "labels",
            ("d0", "labels", "run"),
            ("teacher", "sample"),
            data.labels_stage,
            (("d0", "train"),),
        ),
        Stage("fits", ("fit", "run"), ("labels",), fits.fits_stage),
        Stage(
            "tests",
            ("rss", "compression", "d0", "labels", "run"),
            ("teacher",),
            data.tests_stage,
            (("d0", "test"),),
            background=True,  # teacher-only work: beside the single-core sample stage
        ),
        Stage("evaluate", ("evaluate", "run"), ("fits", "tests"), evaluate.evaluate_stage),
        Stage("md", ("md", "run"), ("fits", "teacher"), physical.md_stage),
        Stage("analysis", ("analysis", "md", "run"), ("md",), physical.analysis_stage),
        Stage(
            "report",
            (),
            ("teacher", "sample", "labels", "fits", "tests", "evaluate", "md", "analysis"),
            report.report_stage,
        ),
    ]


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (gap_fit, workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def log_event(run_dir: Path, **fields) -> None:
    """Append one JSON line to RUN/progress.jsonl (time in UTC)."""
    fields = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
    with open(Path(run_dir) / "progress.jsonl", "a") as fh:
        fh.write(json.dumps(fields) + "\n")


def _key(stage: Stage, cfg: dict, keys: dict) -> str:
    sections = {s: cfg[s] for s in stage.sections if s != "run"}
    if "labels" in sections:  # the executor does not change the labels (see config module)
        sections["labels"] = {k: v for k, v in cfg["labels"].items()
                              if k not in config_mod.LABELS_EXECUTION_KEYS}
    for name in ("sample", "fit", "md"):  # how many processes run sub-tasks changes no result
        if name in sections:
            sections[name] = {k: v for k, v in sections[name].items() if k != "workers"}
    if "run" in stage.sections:  # run.dir and run.stages do not change results
        sections["run"] = {k: cfg["run"][k] for k in ("seed", "species")}
    if stage.name == "teacher" and not cfg["teacher"]["fit_gap"]:  # the D0 files do not matter
        files = {}
    else:
        files = {f"{s}.{k}": file_sha256(cfg[s][k]) for s, k in stage.files}
    return stage_key(
        stage=stage.name, sections=sections, needs={n: keys[n] for n in stage.needs}, files=files
    )


def run(
    config_path: str | Path,
    run_dir: str | Path | None = None,
    progress: bool = True,
    only: list[str] | None = None,
) -> dict:
    """Validate the config (before any compute), then run every stage not up to date.

    Returns {stage: {"status": "done" | "skipped", "seconds", "key"}}. A stage that raises stops
    the run (its folder has no stamp; rerunning resumes there).
    """
    wall0 = time.perf_counter()
    timing = {
        "started_at": _utc(),
        "command": " ".join(sys.argv),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "stages": {},
    }
    cfg = config_mod.load(config_path, run_dir)
    import jax  # the pipeline is an application: fits and MD run in float64, as `mtpjax train`

    jax.config.update("jax_enable_x64", True)
    stages = [s for s in _stages() if s.name in cfg["run"]["stages"]]
    missing = {n for s in stages for n in s.needs} - {s.name for s in stages}
    root = Path(cfg["run"]["dir"]).resolve()  # absolute: gap_fit runs in its own folder
    for name in sorted(missing):  # a needed stage left out must have been run before
        if not (root / name / "stamp.json").is_file():
            raise config_mod.PipelineConfigError(
                f"run.stages: stage {name!r} is needed but neither listed nor done in {root}",
                config_path,
            )
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "config.json", cfg)
    keys = {n: read_stamp(root / n)["key"] for n in missing}
    results = {}
    refreshed: set[str] = set()  # stages redone now because a stamp was incomplete
    background: dict[str, dict] = {}  # stages running in a worker process now
    print(f"distill: run directory {root}", file=sys.stderr)
    try:
        for i, stage in enumerate(stages):
            folder = root / stage.name
            key = _key(stage, cfg, keys)
            keys[stage.name] = key
            head = f"[{i + 1}/{len(stages)}] {stage.name}"
            if stage.name in background:  # started earlier in a worker process: wait for it
                job = background.pop(stage.name)
                summary, seconds, cpu = _join(job, root, stage.name, head)
                extra = {"background": True, "alongside": job["alongside"],
                         "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                      time.gmtime(job["t0"] + seconds))}
            else:
                done = is_done(folder, key)
                retry = done and bool(read_stamp(folder)["summary"].get("incomplete"))
                retry = retry or (done and bool(refreshed & set(stage.needs)))
                if done and not retry and not (only and stage.name in only):
                    print(f"{head}: up to date, skipped", file=sys.stderr, flush=True)
                    log_event(root, stage=stage.name, status="skipped")
                    results[stage.name] = {"status": "skipped", "key": key}
                    timing["stages"][stage.name] = _cached_timing(folder)
                    continue
                if retry:
                    refreshed.add(stage.name)
                finished = set(results) | missing
                for j, later in enumerate(stages[i + 1:], start=i + 2):
                    if (later.background and later.name not in background
                            and set(later.needs) <= finished):
                        later_key = _key(later, cfg, keys)
                        if not is_done(root / later.name, later_key) or (
                                only and later.name in only):
                            background[later.name] = _launch(
                                later, cfg, root, later_key, f"[{j}/{len(stages)}] {later.name}")
                for job in background.values():
                    job["alongside"].append(stage.name)
                print(f"{head}: running" + (" (retrying what an earlier run left incomplete)"
                                             if retry else ""), file=sys.stderr, flush=True)
                log_event(root, stage=stage.name, status="started")
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "stamp.json").unlink(missing_ok=True)
                start, cpu0 = time.perf_counter(), _cpu_seconds()
                try:
                    summary = stage.run(Context(cfg, root, folder, progress, timing))
                except Exception as exc:
                    log_event(root, stage=stage.name, status="failed", error=repr(exc))
                    raise
                seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
                extra = {}
            if not extra:  # a background stage's worker stamped it when it ended
                write_stamp(folder, key, seconds, {**summary, "cpu_seconds": round(cpu, 2),
                                                   "load_average": os.getloadavg()[0]})
                log_event(root, stage=stage.name, status="done", seconds=round(seconds, 2),
                          cpu_seconds=round(cpu, 2), load=round(os.getloadavg()[0], 2))
            beside = (f", in a worker process beside {', '.join(extra['alongside'])}"
                      if extra else "")
            print(f"{head}: done in {seconds:.1f} s (CPU {cpu:.1f} s, load "
                  f"{os.getloadavg()[0]:.1f}{beside})", file=sys.stderr, flush=True)
            if summary.get("incomplete"):
                print(f"{head}: incomplete ({', '.join(summary['incomplete'])} raised; see "
                      f"error.txt): the next run retries them", file=sys.stderr, flush=True)
            results[stage.name] = {"status": "done", "key": key, "seconds": seconds}
            timing["stages"][stage.name] = {
                "status": "ran", "wall_s": round(seconds, 3), "cpu_s": round(cpu, 2),
                "load_average_at_end": round(os.getloadavg()[0], 2), "finished_at": _utc(),
                **extra}
    finally:  # a stage raised: end the background stages' workers (a rerun redoes them)
        for job in background.values():
            for proc in list(job["pool"]._processes.values()):  # noqa: SLF001 (no public API)
                proc.terminate()
            job["pool"].shutdown(wait=False, cancel_futures=True)
    if results.get("report", {}).get("status") == "done":
        from distill.report import write_timing

        timing.update(finished_at=_utc(), total_wall_s=round(time.perf_counter() - wall0, 2),
                      load_average_at_end=list(os.getloadavg()))
        write_timing(root / "report", timing)
    return results


def _launch(stage: Stage, cfg: dict, root: Path, key: str, head: str) -> dict:
    """Start `stage` in a spawned worker process (no progress bars: they would mix with the
    foreground stage's), which stamps it with `key` when it ends (so a pipeline killed later
    keeps it); the job record for :func:`_join`."""
    from distill.executors import process_pool

    folder = root / stage.name
    print(f"{head}: running in a worker process beside the next stage(s)", file=sys.stderr,
          flush=True)
    log_event(root, stage=stage.name, status="started", background=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stamp.json").unlink(missing_ok=True)
    pool = process_pool(1)
    t0 = time.time()  # wall clock: the worker reports its end on the same clock
    future = pool.submit(_run_detached, stage.run, cfg, str(root), str(folder), key, t0)
    return {"pool": pool, "future": future, "t0": t0, "alongside": []}


def _run_detached(fn: Callable[[Context], dict], cfg: dict, run_dir: str, folder: str,
                  key: str, t0: float):
    """In the worker process: run the stage and stamp it; (its summary, its CPU seconds, its
    end time)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    cpu0 = _cpu_seconds()
    summary = fn(Context(cfg, Path(run_dir), Path(folder), False, None))
    cpu, t_end = _cpu_seconds() - cpu0, time.time()
    write_stamp(Path(folder), key, t_end - t0, {**summary, "cpu_seconds": round(cpu, 2),
                                                "load_average": os.getloadavg()[0]})
    log_event(Path(run_dir), stage=Path(folder).name, status="done",
              seconds=round(t_end - t0, 2), cpu_seconds=round(cpu, 2),
              load=round(os.getloadavg()[0], 2), background=True)
    return summary, cpu, t_end


def _join(job: dict, root: Path, name: str, head: str) -> tuple[dict, float, float]:
    """Wait for a background stage: (summary, wall seconds from its start to its end, CPU
    seconds of its worker and the worker's finished children). Raises what the stage raised."""
    print(f"{head}: waiting for its worker process", file=sys.stderr, flush=True)
    try:
        summary, cpu, t_end = job["future"].result()
    except Exception as exc:
        log_event(root, stage=name, status="failed", error=repr(exc))
        raise
    finally:
        job["pool"].shutdown(wait=True)
    return summary, t_end - job["t0"], cpu


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _cached_timing(folder: Path) -> dict:
    """Run-time entry of a stage skipped as up to date: the time of the run that made it."""
    stamp = read_stamp(folder)
    summary = stamp.get("summary", {})
    return {"status": "cached", "wall_s": stamp.get("seconds"),
            "cpu_s": summary.get("cpu_seconds"),
            "load_average_at_end": summary.get("load_average"),
            "finished_at": stamp.get("finished_at")}
