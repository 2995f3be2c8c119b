"""Stage caching: an edited section redoes its stage and those after it, not those before."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill import pipeline
from distill.stages.config import PipelineConfigError

TINY = Path(__file__).with_name("tiny.toml")
DATA = Path(__file__).resolve().parents[2] / "data"


def _config(tmp_path: Path, nvt_steps: int, stages: str) -> Path:
    text = TINY.read_text().replace('"../../data', f'"{DATA}')
    text = text.replace("nvt_steps = 20", f"nvt_steps = {nvt_steps}")
    text = text.replace('[run]\n', f"[run]\nstages = {stages}\n", 1)
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return path


def test_edited_section_redoes_only_downstream(tmp_path):
    run_dir = tmp_path / "run"
    first = _config(tmp_path, 20, '["teacher", "sample", "labels"]')
    res = pipeline.run(first, run_dir, progress=False)
    assert {k: v["status"] for k, v in res.items()} == dict.fromkeys(
        ("teacher", "sample", "labels"), "done")
    res = pipeline.run(first, run_dir, progress=False)
    assert {v["status"] for v in res.values()} == {"skipped"}
    edited = _config(tmp_path, 30, '["teacher", "sample", "labels"]')
    res = pipeline.run(edited, run_dir, progress=False)
    assert {k: v["status"] for k, v in res.items()} == {
        "teacher": "skipped", "sample": "done", "labels": "done"}
    # a subset that needs an earlier stage reuses its stamp; run.stages does not change keys
    res = pipeline.run(_config(tmp_path, 30, '["labels"]'), run_dir, progress=False)
    assert res == {"labels": {"status": "skipped", "key": res["labels"]["key"]}}


def test_subset_needing_a_stage_never_run_fails_before_compute(tmp_path):
    with pytest.raises(PipelineConfigError, match="'sample' is needed"):
        pipeline.run(_config(tmp_path, 20, '["labels"]'), tmp_path / "empty", progress=False)
    assert not (tmp_path / "empty").exists()


def test_d1_runs_resume_and_workers_give_the_same_d1(tmp_path):
    """Each D1 run is a sub-task: a killed sample stage keeps its finished runs (only the
    missing one is run again), and two worker processes write the same D1 as one process."""
    stages = '["teacher", "sample"]'
    path = _config(tmp_path, 20, stages)
    text = path.read_text().replace("[sample]\n", "[sample]\nruns = 2\n", 1)
    path.write_text(text)
    serial = tmp_path / "serial"
    pipeline.run(path, serial, progress=False)
    d1 = (serial / "sample" / "d1.xyz").read_bytes()
    assert len(d1) > 0
    run0 = (serial / "sample" / "run_0.xyz").stat().st_mtime_ns
    # as after a kill during run 1: its stamp and the stage's stamp are gone
    (serial / "sample" / "run_1.json").unlink()
    (serial / "sample" / "stamp.json").unlink()
    (serial / "sample" / "d1.xyz").unlink()
    pipeline.run(path, serial, progress=False)
    assert (serial / "sample" / "run_0.xyz").stat().st_mtime_ns == run0  # kept, not rerun
    assert (serial / "sample" / "d1.xyz").read_bytes() == d1
    # workers are left out of the key and change nothing in D1
    path.write_text(text.replace("[sample]\n", "[sample]\nworkers = 2\n", 1))
    pipeline.run(path, serial, progress=False)
    assert (serial / "sample" / "run_0.xyz").stat().st_mtime_ns == run0  # up to date
    parallel = tmp_path / "parallel"
    pipeline.run(path, parallel, progress=False)
    assert (parallel / "sample" / "d1.xyz").read_bytes() == d1
