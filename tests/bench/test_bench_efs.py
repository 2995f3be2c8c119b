"""benchmarks/bench_efs.py --calculator end to end on a small case: the calculator path compiles
nothing after its first call, agrees with the core path, and the result files carry versions
and load averages."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.bench.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_efs.py"


def test_calculator_path_end_to_end(tmp_path):
    out = tmp_path / "efs"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLP_BIN", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--levels", "8", "--atoms", "216", "--dtypes", "float64",
         "--steps", "2", "--calculator", "--calc-steps", "4", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.with_suffix(".json").read_text())
    assert all(doc["versions"][k] for k in ("python", "jax", "jaxlib", "numpy", "ase"))
    assert len(doc["load_before"]) == len(doc["load_after"]) == 3
    (case,) = doc["cases"]
    assert "error" not in case, case.get("error")
    assert len(case["load_after_case"]) == 3
    calc = case["calculator"]
    assert calc["first_call_compiles"] > 0  # the counter sees compiles at all
    assert calc["compiles_after_first_call"] == calc["traces_after_first_call"] == 0
    assert calc["steps"] == 4 and calc["rebuild_happened"]
    assert calc["vs_explicit_dE_eV"] < 1e-9 * case["atoms"]
    assert calc["atom_steps_per_cpu_s"] > 0 and calc["atom_steps_per_cpu_s_amortised"] > 0
    md = out.with_suffix(".md").read_text()
    assert "ASE calculator path" in md and "Versions: python" in md


def test_versions_record_the_mlp_binary(tmp_path):
    module = load_script("bench_efs")
    fake = tmp_path / "mlp"
    fake.write_bytes(b"not really mlp")
    got = module.versions(str(fake))
    assert got["mlp_sha256"] == hashlib.sha256(b"not really mlp").hexdigest()
    assert "mlp_sha256" not in module.versions(None)
