"""Student-MD failure checks in the pipeline's md stage.

A physically failed run (non-finite energy, volume outside the bounds) is stamped ``failed`` and
kept; a run that raised anything else is recorded as ``error``, not stamped, and retried by the
next ``distill run`` — which also redoes the stages that read the md stage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from distill import pipeline
from distill.pipeline import Context
from distill.stages import config as config_mod
from distill.stages import physical
from distill.stages.fits import potential_path

ROOT = Path(__file__).resolve().parents[2]
POT = ROOT / "tests" / "data" / "parity" / "si_L08" / "pot.mtp"
PROTOCOL = {
    "structure": {"crystal": {"name": "diamond", "a_A": 5.43, "repeat": [1, 1, 1]}},
    "run": {"timestep_fs": 1.0, "temperature_K": 300.0, "thermo_every": 5, "chunk_steps": 5},
    "stage": [{"name": "nvt", "ensemble": "nvt", "temperature_K": 300.0, "steps": 10}],
}


def test_check_rows_md_log_columns_without_n():
    """`mtpjax md`'s thermo log (E_pot, V_A3, no N column): the atom count comes from the run."""
    ok_row = {"step": "10", "E_pot": "-43.1", "V_A3": str(8 * 20.0)}
    assert physical.check_rows([ok_row], 8) == (True, "")
    ok, reason = physical.check_rows([{**ok_row, "V_A3": str(8 * 70.0)}], 8)
    assert not ok and "70.0 Å³/atom" in reason
    ok, reason = physical.check_rows([{**ok_row, "V_A3": str(8 * 5.0)}], 8)
    assert not ok and "5.0 Å³/atom" in reason
    ok, reason = physical.check_rows([ok_row, {**ok_row, "step": "15", "E_pot": "nan"}], 8)
    assert not ok and "non-finite" in reason and "step 15" in reason
    assert physical.check_rows([], 8) == (False, "empty thermo log")


def test_check_run_reads_csv_and_jsonl(tmp_path):
    (tmp_path / "thermo.csv").write_text("step,E_pot,V_A3\n0,-1.0,160\n5,-1.0,800\n")
    assert not physical.check_run(tmp_path / "thermo.csv", 8)[0]
    (tmp_path / "thermo.jsonl").write_text('{"step": 0, "E": -1.0, "V": 160}\n')
    assert physical.check_run(tmp_path / "thermo.jsonl", 8) == (True, "")


def test_student_run_volume_check(tmp_path, monkeypatch):
    """A real student MD run goes through the volume check: 8-atom diamond Si (20 Å³/atom)
    passes the 8–60 bounds and fails when the bounds exclude it."""
    doc = physical._md_doc(PROTOCOL, POT, ["Si"], tmp_path / "a", teacher=False)
    res = physical.run_student(doc, "test/a", tmp_path / "a")
    assert res["status"] == "ok", res
    assert res["n_atoms"] == 8 and res["steps"] == 10
    monkeypatch.setattr(physical, "VOLUME_PER_ATOM_A3", (8.0, 15.0))
    doc = physical._md_doc(PROTOCOL, POT, ["Si"], tmp_path / "b", teacher=False)
    res = physical.run_student(doc, "test/b", tmp_path / "b")
    assert res["status"] == "failed" and "Å³/atom" in res["reason"], res


def _ctx(tmp_path: Path) -> Context:
    run_dir = tmp_path / "run"
    for model in ("indirect", "direct"):
        pot = potential_path(run_dir, 8, model)
        pot.parent.mkdir(parents=True)
        shutil.copy(POT, pot)
    cfg = {"run": {"species": ["Si"]}, "fit": {"levels": [8]},
           "md": {"level": 8, "models": ["indirect", "direct"], "teacher": False,
                  "protocols": ["p"], "protocol": {"p": PROTOCOL}}}
    folder = run_dir / "md"
    folder.mkdir()
    return Context(cfg, run_dir, folder, progress=False)


def test_md_stage_retries_errors_not_physical_failures(tmp_path, monkeypatch):
    calls = []
    outcomes = {"M''_8": [RuntimeError("worker lost"), None], "M'_8": [FloatingPointError(
        "non-finite energy at step 3 (stage nvt)")]}

    def fake_student(doc, name, out):
        calls.append(name)
        exc = outcomes[name.split("/")[1]].pop(0)
        if exc is not None:
            raise exc
        return {"status": "ok", "reason": "", "n_atoms": 8, "steps": 10}

    monkeypatch.setattr(physical, "run_student", fake_student)
    ctx = _ctx(tmp_path)
    first = physical.md_stage(ctx)
    assert first["runs"]["p/M''_8"]["status"] == "error"
    assert "worker lost" in first["runs"]["p/M''_8"]["reason"]
    assert first["runs"]["p/M'_8"]["status"] == "failed"
    assert "non-finite energy" in first["runs"]["p/M'_8"]["reason"]
    assert first["incomplete"] == ["p/M''_8"]
    assert not (ctx.folder / "p" / "Mpp_8" / "stamp.json").exists()  # not stamped: retried
    assert (ctx.folder / "p" / "Mpp_8" / "error.txt").read_text().strip()
    assert (ctx.folder / "p" / "Mp_8" / "stamp.json").exists()  # a result: kept

    second = physical.md_stage(ctx)
    assert calls == ["p/M''_8", "p/M'_8", "p/M''_8"]  # only the errored run again
    assert second["runs"]["p/M''_8"]["status"] == "ok"
    assert second["runs"]["p/M'_8"]["status"] == "failed"
    assert second["incomplete"] == []
    assert not (ctx.folder / "p" / "Mpp_8" / "error.txt").exists()


def test_incomplete_stage_rerun_with_dependents(tmp_path, monkeypatch):
    """A stage stamped with ``incomplete`` sub-tasks runs again on the next invocation, and so
    do the stages that read it; a complete one is skipped, as are its dependents."""
    cfg = {"run": {"dir": str(tmp_path / "run"), "stages": ["a", "md", "analysis"],
                   "seed": 0, "species": ["Si"]}}
    monkeypatch.setattr(config_mod, "load", lambda path, run_dir=None: cfg)
    left = [["x"], [], []]
    ran = []

    def stage(name):
        def run(ctx):
            ran.append(name)
            return {"incomplete": left.pop(0)} if name == "md" else {}
        return run

    monkeypatch.setattr(pipeline, "_stages", lambda: [
        pipeline.Stage("a", (), (), stage("a")),
        pipeline.Stage("md", (), ("a",), stage("md")),
        pipeline.Stage("analysis", (), ("md",), stage("analysis")),
    ])
    pipeline.run("unused.toml", progress=False)
    assert ran == ["a", "md", "analysis"]
    res = pipeline.run("unused.toml", progress=False)
    assert ran[3:] == ["md", "analysis"]
    assert [res[s]["status"] for s in ("a", "md", "analysis")] == ["skipped", "done", "done"]
    res = pipeline.run("unused.toml", progress=False)
    assert ran[5:] == [] and {v["status"] for v in res.values()} == {"skipped"}
    events = [json.loads(line) for line in
              (tmp_path / "run" / "progress.jsonl").read_text().splitlines()]
    assert [e["status"] for e in events if e["stage"] == "md"] == [
        "started", "done", "started", "done", "skipped"]

