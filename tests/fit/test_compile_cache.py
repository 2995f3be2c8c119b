"""Start-up: shapes rounded to buckets, so a similar data set reuses the compiled programs
from the persistent compilation cache (no XLA compile in the second run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtpjax.fit.data import Sample, bucket_size, pack_buckets, precompute_neighbors
from tests.fit.conftest import si_cells

ROOT = Path(__file__).resolve().parents[2]


def test_bucket_size_ladder():
    assert [bucket_size(x) for x in (1, 7, 8, 9, 10, 11, 17, 33, 100)] == [
        1, 7, 8, 10, 10, 12, 20, 40, 112]
    for x in range(1, 3000):
        assert x <= bucket_size(x) <= 1.25 * x


def _samples(n, seed):
    out = [Sample(positions=a.positions, types=np.zeros(len(a), np.int32), cell=a.cell.array,
                  pbc=np.ones(3, bool), energy=0.0, forces=np.zeros((len(a), 3)))
           for a in si_cells(n, seed=seed)]
    precompute_neighbors(out, 5.0)
    return out


def test_similar_data_sets_get_the_same_shapes():
    a, b = _samples(42, seed=1), _samples(44, seed=2)
    for atoms in (None, 32):
        sa = [x.batch.shape for x in pack_buckets(a, atoms, round_shapes=True)]
        sb = [x.batch.shape for x in pack_buckets(b, atoms, round_shapes=True)]
        assert sa == sb, (atoms, sa, sb)
        assert sa != [x.batch.shape for x in pack_buckets(b, atoms)]  # without rounding


WORKER = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
from jax import monitoring
events, compile_secs = [], []
def on_duration(name, secs, **kw):
    events.append(name)
    if name == "/jax/core/compile/backend_compile_duration":
        compile_secs.append(secs)
monitoring.register_event_duration_secs_listener(on_duration)
monitoring.register_event_listener(lambda name, **kw: events.append(name))
from tests.fit.conftest import label_with, si_cells
from mtpjax.io.mtp_file import read_mtp
from mtpjax.fit.trainer import FitConfig, Trainer
from mtpjax.params import perturb

pot = read_mtp("tests/data/parity/si_L08/pot.mtp")
start = pot.with_params(perturb(pot.params(), 2, 0.02, "radial"))
cfg = FitConfig(optimizer="varpro", init_params="same", max_iter=2, force_weight=0.1,
                eval_every=1, checkpoint_every=0, jac_atoms=32, compile_cache=sys.argv[1])
samples = label_with(pot, si_cells(12, seed=int(sys.argv[2])))
Trainer(start, samples, samples[:4], cfg, mesh=None).run()
# the backend-compile event also wraps a persistent-cache hit: XLA compiles = the difference
hits = events.count("/jax/compilation_cache/cache_hits")
out = {"compiles": events.count("/jax/core/compile/backend_compile_duration") - hits,
       "cache_hits": hits, "compile_s": sum(compile_secs),
       "longest_compile_s": max(compile_secs, default=0.0)}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_second_run_on_other_data_does_not_compile(tmp_path):
    """Two processes fit one after the other, on two different data sets of the same size,
    sharing a cache folder: the second loads the fit's programs from the persistent cache
    (hits; no compilation as long as a second — the worker's labelling, op-by-op eager code,
    still compiles ~500 tiny programs, which the persistent cache does not keep). Separate
    processes: inside one process a second fit of the same model reuses the compiled
    functions from memory (tests/fit/test_compile_once.py)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    out = {}
    for name, seed in (("first", 1), ("second", 7)):
        proc = subprocess.run([sys.executable, "-c", WORKER, str(tmp_path / "cache"), str(seed)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = json.loads([x for x in proc.stdout.splitlines()
                                if x.startswith("RESULT ")][-1][7:])
    assert out["first"]["compiles"] > 0 and out["first"]["longest_compile_s"] > 1.0, out
    assert out["second"]["cache_hits"] > 0, out
    assert out["second"]["longest_compile_s"] < 1.0, out


def test_cpu_cache_only_when_asked(monkeypatch, tmp_path):
    """On the CPU backend the default is no persistent cache (jax-ml/jax#38445: its loader logs
    ERROR lines per program); a folder in the environment or an explicit path turns it on."""
    import jax

    from mtpjax.fit import compile_cache

    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    saved = {k: getattr(jax.config, k) for k in keys}
    try:
        monkeypatch.delenv("MTPJAX_COMPILE_CACHE", raising=False)
        monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
        assert jax.default_backend() == "cpu"
        assert compile_cache.enable(None) is None
        assert compile_cache.enable("off") is None
        assert compile_cache.enable(tmp_path / "a") == str(tmp_path / "a")
        monkeypatch.setenv("MTPJAX_COMPILE_CACHE", str(tmp_path / "b"))
        assert compile_cache.enable(None) == str(tmp_path / "b")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "b")
    finally:
        for k, v in saved.items():
            jax.config.update(k, v)
