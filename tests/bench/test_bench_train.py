"""benchmarks/bench_train.py end to end: ``--quick`` writes its result files, and `mlp` runs
(a stand-in binary here) are recorded in the cache and reused."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_train.py"


def test_quick_writes_result_end_to_end(tmp_path):
    out = tmp_path / "res" / "quick.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLP_BIN", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--work",
                           str(tmp_path / "work")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["script"] == "benchmarks/bench_train.py"
    assert doc["command"].startswith("benchmarks/bench_train.py --quick")
    assert len(doc["load_before"]) == 3 and len(doc["load_after"]) == 3
    assert {"python", "jax", "jaxlib", "optax", "numpy"} <= set(doc["versions"])
    assert all(doc["versions"][k] for k in ("python", "jax", "jaxlib", "optax", "numpy"))
    assert {"hostname", "platform", "cpus", "cpu_model"} <= set(doc["host"])
    assert doc["data"]["train"]["cells"] == 6 and doc["data"]["test"]["cells"] == 3
    assert doc["mlp"]["ran"] is False and doc["mlp"]["why_not"]
    runs = doc["runs"]
    assert [(r["program"], r["level"], r["seed"]) for r in runs] == [
        ("mtpjax", 2, 0), ("mtpjax", 2, 1)]
    for r in runs:
        assert 1 <= r["iterations"] <= 5  # varpro stops early once no step lowers the loss
        assert r["curve"] and all(pt["wall_s"] > 0 and pt["cpu_s"] > 0
                                  and pt["test_force_rmse"] > 0 for pt in r["curve"])
        assert r["curve"][-1]["wall_s"] <= r["wall_s"]
        for key in ("test_energy_mae_meV", "test_force_rmse", "wall_s", "cpu_s"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["core"] in doc["host"]["affinity"] or r["core"] < doc["host"]["cpus"]
        assert len(r["load_before"]) == 3 and len(r["load_after"]) == 3
        # the training loss of the written potential, scored by the script's own code (the one
        # used for mlp's potentials too), is the loss the fit itself reported at its end
        assert math.isclose(r["train_loss"], r["final_train_loss"], rel_tol=1e-9), r
        assert r["train_energy_loss"] > 0 and r["train_force_loss"] > 0
        assert math.isclose(r["train_energy_loss"] + 0.1 * r["train_force_loss"],
                            r["train_loss"], rel_tol=1e-12)
        assert r["train_energy_mae_meV"] > 0 and r["train_force_rmse"] > 0
    (summary,) = doc["summary"]
    assert summary["program"] == "mtpjax" and summary["wall_s"]["n"] == 2
    e = [r["test_energy_mae_meV"] for r in runs]
    assert summary["test_energy_mae_meV"]["min"] == min(e)
    assert summary["test_energy_mae_meV"]["max"] == max(e)
    md = out.with_suffix(".md").read_text()
    assert doc["command"] in md and "| 2 | mtpjax | 2 |" in md
    assert f"{runs[0]['train_loss']:.4f}" in md  # the training-loss column
    assert [w["level"] for w in doc["warmups"]] == [2]  # the compilation cache filled first
    assert Path(doc["plot"]).is_file() and Path(doc["plot"]).stat().st_size > 1000


FAKE_MLP = """#!{python}
# stand-in for `mlp`: `train` writes the template with random coefficients, logs the call
import sys
sys.path.insert(0, {root!r})
with open({log!r}, "a") as fh:
    fh.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1] == "train":
    from mtpjax.io.mtp_file import read_mtp, write_mtp
    from mtpjax.model import ModelSpec
    from mtpjax.params import init_params
    pot = read_mtp(sys.argv[2])
    out = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--trained-pot-name=")][0]
    write_mtp(out, pot.with_params(init_params(ModelSpec.from_potential(pot), 7)))
"""


def test_mlp_runs_cached_and_reused(tmp_path):
    log = tmp_path / "calls.txt"
    fake = tmp_path / "mlp"
    fake.write_text(FAKE_MLP.format(python=sys.executable, root=str(ROOT), log=str(log)))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    bench = load_script("bench_train")
    common = ["--quick", "--programs", "mlp", "--mlp-bin", str(fake),
              "--mlp-cache", str(tmp_path / "cache.json")]
    assert bench.main([*common, "--out", str(tmp_path / "a.json"),
                       "--work", str(tmp_path / "wa")]) == 0
    first = json.loads((tmp_path / "a.json").read_text())
    calls = log.read_text().splitlines()
    assert sum(c.startswith("train ") for c in calls) == 2
    assert all("--force-weight=0.1" in c and "--stress-weight=0.0" in c
               for c in calls if c.startswith("train "))
    assert [r["cached"] for r in first["runs"]] == [False, False]

    assert bench.main([*common, "--out", str(tmp_path / "b.json"),
                       "--work", str(tmp_path / "wb")]) == 0
    second = json.loads((tmp_path / "b.json").read_text())
    assert log.read_text().splitlines() == calls  # mlp not run again
    assert [r["cached"] for r in second["runs"]] == [True, True]
    for a, b in zip(first["runs"], second["runs"], strict=True):
        assert b["recorded_at"] == a["recorded_at"] and b["wall_s"] == a["wall_s"]
        assert b["test_energy_mae_meV"] == a["test_energy_mae_meV"]  # scored again, same pot
        assert b["cache_key"] == a["cache_key"]
    assert "reused from the cache" in (tmp_path / "b.md").read_text()
    assert second["summary"][0]["cached_runs"] == 2

    assert bench.main([*common, "--no-mlp-cache", "--out", str(tmp_path / "c.json"),
                       "--work", str(tmp_path / "wc")]) == 0
    assert sum(c.startswith("train ") for c in log.read_text().splitlines()) == 4
    # --mlp-cache-only: a cached run is reused, a missing one is an error, mlp never runs
    assert bench.main([*common, "--mlp-cache-only", "--out", str(tmp_path / "d.json"),
                       "--work", str(tmp_path / "wd")]) == 0
    with pytest.raises(SystemExit, match="--mlp-cache-only: mlp level 2 repetition 0"):
        bench.main([*common, "--mlp-cache", str(tmp_path / "empty.json"), "--mlp-cache-only",
                    "--out", str(tmp_path / "e.json"), "--work", str(tmp_path / "we")])
    assert sum(c.startswith("train ") for c in log.read_text().splitlines()) == 4
    # a machine without the binary (a lent GPU): the cache's runs of its one binary
    no_binary = ["--quick", "--programs", "mlp", "--mlp-cache-only",
                 "--mlp-cache", str(tmp_path / "cache.json")]
    assert bench.main([*no_binary, "--out", str(tmp_path / "f.json"),
                       "--work", str(tmp_path / "wf")]) == 0
    without = json.loads((tmp_path / "f.json").read_text())
    assert [r["cached"] for r in without["runs"]] == [True, True]
    assert without["mlp"]["binary_sha256"] == first["mlp"]["binary_sha256"]
    assert "not on this machine" in without["mlp"]["binary"]
    assert without["complete"] is True
    # the result so far is on disk after every run: a job stopped at its second run keeps one
    real_score, calls = bench.score, []

    def score_then_stop(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("stopped by a time limit")
        return real_score(*a, **k)

    bench.score = score_then_stop
    with pytest.raises(KeyboardInterrupt):
        bench.main([*no_binary, "--out", str(tmp_path / "h.json"), "--work", str(tmp_path / "wh")])
    bench.score = real_score
    partial = json.loads((tmp_path / "h.json").read_text())
    assert partial["complete"] is False and len(partial["runs"]) == 1
    assert bench.main(["--render-md", str(tmp_path / "h.json")]) == 0
    assert "**Partial result**" in (tmp_path / "h.md").read_text()
    mixed = json.loads((tmp_path / "cache.json").read_text())
    entry = next(iter(mixed["runs"].values()))
    mixed["runs"]["other"] = {**entry, "key": {**entry["key"], "mlp_sha256": "0" * 64}}
    (tmp_path / "mixed.json").write_text(json.dumps(mixed))
    with pytest.raises(SystemExit, match="2 mlp binaries"):
        bench.main([*no_binary[:-1], str(tmp_path / "mixed.json"), "--out",
                    str(tmp_path / "g.json"), "--work", str(tmp_path / "wg")])


@pytest.mark.slow
def test_continue_mlp(tmp_path):
    """--continue-mlp: every mlp potential continued by mtpjax from its own coefficients; the
    training loss can only fall (VarPro accepts decreasing steps only)."""
    log = tmp_path / "calls.txt"
    fake = tmp_path / "mlp"
    fake.write_text(FAKE_MLP.format(python=sys.executable, root=str(ROOT), log=str(log)))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    bench = load_script("bench_train")
    assert bench.main(["--quick", "--programs", "mlp", "--mlp-bin", str(fake), "--mlp-cache",
                       str(tmp_path / "cache.json"), "--continue-mlp", "--out",
                       str(tmp_path / "b.json"), "--work", str(tmp_path / "wb")]) == 0
    doc = json.loads((tmp_path / "b.json").read_text())
    assert [c["from_mlp_seed"] for c in doc["continued_mlp"]] == [0, 1]
    for c, r in zip(doc["continued_mlp"], doc["runs"], strict=True):
        assert "--init-params=same" in c["command"]
        assert c["from_mlp_train_loss"] == r["train_loss"]
        assert c["train_loss"] < r["train_loss"]
        assert math.isfinite(c["test_energy_mae_meV"]) and c["test_force_rmse"] > 0
    assert "continued by mtpjax" in (tmp_path / "b.md").read_text()


def test_quick_accelerator_mode_is_unpinned_and_records_the_device(tmp_path):
    bench = load_script("bench_train")
    out = tmp_path / "acc.json"
    assert bench.main(["--quick", "--accelerator", "--programs", "mtpjax", "--out", str(out),
                       "--work", str(tmp_path / "work")]) == 0
    doc = json.loads(out.read_text())
    assert doc["settings"]["accelerator"] is True
    assert doc["mtpjax_device"]["platform"] == "cpu" and doc["mtpjax_device"]["device_count"] >= 1
    assert all(r["core"] is None for r in doc["runs"]) and len(doc["runs"]) == 2
    md = out.with_suffix(".md").read_text()
    assert "**mtpjax on 1 × cpu (cpu)**" in md and "| all |" in md
