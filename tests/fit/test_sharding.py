"""Data parallelism: on 4 forced host devices, the sharded loss, gradient and L-BFGS step equal
the single-device ones to 1e-12 relative (run in a subprocess: XLA_FLAGS must be set before
JAX starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WORKER = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
assert len(jax.devices()) == 4, jax.devices()
from tests.fit.conftest import label_with, si_cells
from mtpjax.io.mtp_file import read_mtp
from mtpjax.fit.data import pack_buckets
from mtpjax.fit.loss import LossWeights, make_loss_fn
from mtpjax.fit.trainer import FitConfig, Trainer, default_mesh, _device_put
from mtpjax.model import ModelSpec
from mtpjax.params import perturb

pot = read_mtp("tests/data/parity/si_L08/pot.mtp")
samples = label_with(pot, si_cells(10, seed=4))
spec = ModelSpec.from_potential(pot)
params = {k: jnp.asarray(v) for k, v in perturb(pot.params(), 0, 0.1).items()}
w = LossWeights(1.0, 0.1, 0.001)
mesh = default_mesh()
buckets = pack_buckets(samples, atoms_per_group=24, group_multiple=4)
single = tuple(jax.tree.map(jnp.asarray, b.batch) for b in buckets)
sharded = tuple(_device_put(b.batch, mesh) for b in buckets)
out = {"groups": [b.batch.shape[0] for b in buckets],
       "shards": [len(b.positions.sharding.device_set) for b in sharded]}
f1 = jax.jit(jax.value_and_grad(make_loss_fn(spec, w)[0]))
f4 = jax.jit(jax.value_and_grad(make_loss_fn(spec, w, mesh)[0]))
v1, g1 = f1(params, single)
v4, g4 = f4(params, sharded)
out["loss_rel"] = abs(float(v4) - float(v1)) / abs(float(v1))
out["grad_rel"] = max(float(jnp.max(jnp.abs(g4[k] - g1[k])) / jnp.max(jnp.abs(g1[k])))
                      for k in g1)
res = {}
for name, m in (("single", None), ("sharded", mesh)):
    cfg = FitConfig(optimizer="lbfgs", init_params="same", max_iter=3, force_weight=0.1,
                    eval_every=3, checkpoint_every=0, lstsq_polish=False, atoms_per_group=24)
    res[name] = Trainer(pot.with_params(perturb(pot.params(), 0, 0.1)), samples, None, cfg,
                        mesh=m).run()["params"]
out["step_rel"] = max(float(np.max(np.abs(res["sharded"][k] - res["single"][k]))
                            / np.max(np.abs(res["single"][k]))) for k in res["single"])
print("RESULT " + json.dumps(out))
"""


def test_sharded_loss_gradient_and_step_equal_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", WORKER], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    out = json.loads(line[len("RESULT "):])
    assert all(g % 4 == 0 for g in out["groups"])
    assert all(s == 4 for s in out["shards"])
    assert out["loss_rel"] <= 1e-12
    assert out["grad_rel"] <= 1e-12
    assert out["step_rel"] <= 1e-10
