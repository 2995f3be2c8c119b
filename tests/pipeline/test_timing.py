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
