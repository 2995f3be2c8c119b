"""The pipeline's run-time record: total and per-stage wall times in report.md and timing.json,
stages skipped as up to date marked cached with the time of the run that made them."""

from __future__ import annotations

import json
import time

from distill import pipeline, report
from distill.stages import config as config_mod


def _fake_pipeline(monkeypatch, tmp_path, sleeps: dict):
    cfg = {"run": {"dir": str(tmp_path / "run"), "stages": ["alpha", "beta", "report"],
                   "seed": 0, "species": ["Si"]}, "beta": {"x": 1}}
    monkeypatch.setattr(config_mod, "load", lambda path, run_dir=None: cfg)

    def work(name):
        def stage(ctx):
            time.sleep(sleeps[name])
            return {"did": name}
        return stage

    monkeypatch.setattr(pipeline, "_stages", lambda: [
        pipeline.Stage("alpha", (), (), work("alpha")),
        pipeline.Stage("beta", ("beta",), ("alpha",), work("beta")),
        pipeline.Stage("report", (), ("alpha", "beta"), report.report_stage),
    ])
    return tmp_path / "run", cfg


def test_run_time_recorded_in_report(monkeypatch, tmp_path):
    run_dir, cfg = _fake_pipeline(monkeypatch, tmp_path, {"alpha": 1.5, "beta": 0.2})
    t0 = time.perf_counter()
    pipeline.run("unused.toml", progress=False)
    elapsed = time.perf_counter() - t0
    timing = json.loads((run_dir / "report" / "timing.json").read_text())
    assert list(timing["stages"]) == ["alpha", "beta", "report"]
    assert {v["status"] for v in timing["stages"].values()} == {"ran"}
    assert timing["stages"]["alpha"]["wall_s"] >= 1.5
    assert timing["stages"]["beta"]["wall_s"] >= 0.2
    stage_sum = sum(v["wall_s"] for v in timing["stages"].values())
    assert stage_sum - 0.05 <= timing["total_wall_s"] <= elapsed + 0.05
    assert timing["started_at"] and timing["finished_at"] and timing["cpus"]
    text = (run_dir / "report" / "report.md").read_text()
    section = text.split(report.TIMING_BEGIN)[1].split(report.TIMING_END)[0]
    assert "provisional" not in section  # the final record replaced the one rendered in-stage
    assert f"total wall time {report.fmt_duration(timing['total_wall_s'])}" in section
    for name, v in timing["stages"].items():
        assert f"| {name} | ran | {v['wall_s']:.1f} |" in section
    assert "## Config" in text  # the rest of the report is kept

    # rerun after beta's config changed: alpha is cached with its first run's time
    first_alpha = timing["stages"]["alpha"]
    cfg["beta"]["x"] = 2
    pipeline.run("unused.toml", progress=False)
    timing2 = json.loads((run_dir / "report" / "timing.json").read_text())
    alpha = timing2["stages"]["alpha"]
    assert alpha["status"] == "cached"
    assert alpha["wall_s"] == first_alpha["wall_s"]
    assert alpha["finished_at"] == first_alpha["finished_at"]
    assert timing2["stages"]["beta"]["status"] == "ran"
    # alpha's 1.5 s were not spent again (the rest is config checks and the report)
    assert timing2["total_wall_s"] < timing2["stages"]["beta"]["wall_s"] + 1.2
    section = (run_dir / "report" / "report.md").read_text().split(report.TIMING_BEGIN)[1]
    assert f"| alpha | cached | {alpha['wall_s']:.1f} |" in section
    assert "Stages alpha were up to date (cached)" in section

    # a third run has nothing to do and leaves the record of the run that wrote the report
    pipeline.run("unused.toml", progress=False)
    assert json.loads((run_dir / "report" / "timing.json").read_text()) == timing2


def _beta_in_worker(ctx):
    """A background stage (module level: the spawned worker imports it): marks that it has
    started, works 1 s, and reports its process id."""
    import os

    (ctx.run_dir / "beta_started").write_text("")
    time.sleep(1.0)
    if ctx.cfg["beta"]["x"] < 0:
        raise ValueError("beta failed on purpose")
    return {"pid": os.getpid()}


def _background_pipeline(monkeypatch, tmp_path, x=1):
    cfg = {"run": {"dir": str(tmp_path / "run"), "stages": ["alpha", "beta", "report"],
                   "seed": 0, "species": ["Si"]}, "beta": {"x": x}}
    monkeypatch.setattr(config_mod, "load", lambda path, run_dir=None: cfg)

    def alpha(ctx):  # works until the background stage has started, then 1 s more
        deadline = time.time() + 120
        while not (ctx.run_dir / "beta_started").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        return {"did": "alpha"}

    monkeypatch.setattr(pipeline, "_stages", lambda: [
        pipeline.Stage("alpha", (), (), alpha),
        pipeline.Stage("beta", ("beta",), (), _beta_in_worker, background=True),
        pipeline.Stage("report", (), ("alpha", "beta"), report.report_stage),
    ])
    return tmp_path / "run"


def test_background_stage_runs_beside_the_stages_before_it(monkeypatch, tmp_path):
    import os

    run_dir = _background_pipeline(monkeypatch, tmp_path)
    pipeline.run("unused.toml", progress=False)
    timing = json.loads((run_dir / "report" / "timing.json").read_text())
    beta = timing["stages"]["beta"]
    assert beta["status"] == "ran" and beta["background"] and beta["alongside"] == ["alpha"]
    assert beta["wall_s"] >= 1.0 and timing["stages"]["alpha"]["wall_s"] >= 1.0
    # the two overlapped: the total is less than the sum of their walls
    assert timing["total_wall_s"] < beta["wall_s"] + timing["stages"]["alpha"]["wall_s"]
    stamp = json.loads((run_dir / "beta" / "stamp.json").read_text())
    assert stamp["summary"]["pid"] != os.getpid()  # it ran in another process
    section = (run_dir / "report" / "report.md").read_text().split(report.TIMING_BEGIN)[1]
    assert "Stage beta ran in a worker process beside alpha" in section
    # a rerun finds it up to date like any other stage
    pipeline.run("unused.toml", progress=False)
    events = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    beta_events = [e for e in events if e["stage"] == "beta"]
    assert [e["status"] for e in beta_events] == ["started", "done", "skipped"]
    assert beta_events[1]["background"]  # logged (and stamped) by the worker when it ended


def test_background_stage_failure_stops_the_run(monkeypatch, tmp_path):
    import pytest

    run_dir = _background_pipeline(monkeypatch, tmp_path, x=-1)
    with pytest.raises(ValueError, match="beta failed on purpose"):
        pipeline.run("unused.toml", progress=False)
    assert not (run_dir / "beta" / "stamp.json").exists()
    events = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    assert [e["status"] for e in events if e["stage"] == "beta"] == ["started", "failed"]
