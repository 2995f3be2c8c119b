"""Variable projection over devices and processes: 4 emulated devices = 1 device to 1e-10,
resuming a 4-device checkpoint on 1 device, and 2 processes × 2 devices (jax.distributed on
localhost, CPU collectives over gloo) = 1 device. Each configuration runs in its own
subprocess (XLA_FLAGS and jax.distributed must be set before JAX starts), compiling its own
programs: slow (minutes on 2 cores)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

WORKER = r"""
import json, sys
import jax
mode, workdir, iters, optimizer = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if mode.startswith("mp"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address="127.0.0.1:" + sys.argv[5],
                               num_processes=2, process_id=int(mode[2:]))
jax.config.update("jax_enable_x64", True)
from tests.fit.conftest import label_with, si_cells
from mtpjax.io.mtp_file import read_mtp
from mtpjax.fit.trainer import FitConfig, Trainer
from mtpjax.params import perturb

pot = read_mtp("tests/data/parity/si_L08/pot.mtp")
samples = label_with(pot, si_cells(10, seed=4))
start = perturb(perturb(pot.params(), 1, 0.3, "linear"), 2, 0.02, "radial")
if optimizer == "varpro":
    cfg = FitConfig(optimizer="varpro", init_params="same", max_iter=iters, force_weight=0.1,
                    eval_every=0, checkpoint_every=1, jac_atoms=24, atoms_per_group=24,
                    compile_cache="off")
else:  # random start: least-squares pre-fit, preconditioning (radial norms), polish
    cfg = FitConfig(optimizer=optimizer, init_params="random", seed=5, max_iter=iters,
                    force_weight=0.1, eval_every=0, checkpoint_every=0, lstsq_atoms=24,
                    atoms_per_group=24, compile_cache="off", lm_hessian_fraction=0.5)
    start = pot.params()
tr = Trainer(pot.with_params(start), samples, None, cfg,
             workdir=None if workdir == "-" else workdir)
res = tr.run(resume=True)
out = {"devices": len(jax.devices()), "processes": jax.process_count(),
       "loss": res["final"]["loss"],
       "losses": [r["loss"] for r in tr.history if not r.get("final")],
       "params": {k: [float(x) for x in v.ravel()] for k, v in res["params"].items()}}
print("RESULT " + json.dumps(out))
"""


def _run(mode, devices, workdir="-", iters=3, port=None, optimizer="varpro"):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-c", WORKER, mode, str(workdir), str(iters), optimizer]
    if port:
        cmd.append(str(port))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc):
    out, err = proc.communicate(timeout=1500)
    assert proc.returncode == 0, err[-3000:]
    line = [x for x in out.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _assert_same(a, b, rtol=1e-10):
    assert abs(a["loss"] - b["loss"]) <= rtol * abs(b["loss"])
    for k in b["params"]:
        x, y = np.asarray(a["params"][k]), np.asarray(b["params"][k])
        assert np.max(np.abs(x - y)) <= rtol * np.max(np.abs(y)), k


@pytest.fixture(scope="module")
def one_device():
    return _result(_run("single", 1))


def test_four_devices_equal_one(one_device):
    four = _result(_run("single", 4))
    assert four["devices"] == 4 and one_device["devices"] == 1
    _assert_same(four, one_device)


def test_resume_on_another_device_count(one_device, tmp_path):
    """2 iterations on 4 devices, checkpoint, then the last one on 1 device."""
    first = _result(_run("single", 4, tmp_path, iters=2))
    assert first["devices"] == 4
    resumed = _result(_run("single", 1, tmp_path, iters=3))
    assert resumed["devices"] == 1
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log if not r.get("final")] == [0, 1, 2, 3]
    _assert_same(resumed, one_device)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_of_two_devices_equal_one(one_device):
    port = _free_port()
    procs = [_run(f"mp{i}", 2, port=port) for i in range(2)]
    results = [_result(p) for p in procs]
    for r in results:
        assert r["devices"] == 4 and r["processes"] == 2
        _assert_same(r, one_device)


@pytest.mark.parametrize("optimizer", ["lbfgs", "lm"])
def test_least_squares_paths_on_devices_and_processes(optimizer):
    """From a random start: the least-squares pre-fit, the radial column norms
    (preconditioning), 2 iterations and the least-squares polish on 4 devices and on
    2 processes × 2 devices equal 1 device to 1e-10."""
    one = _run("single", 1, iters=2, optimizer=optimizer)
    four = _run("single", 4, iters=2, optimizer=optimizer)
    port = _free_port()
    procs = [_run(f"mp{i}", 2, iters=2, port=port, optimizer=optimizer) for i in range(2)]
    one, four, *multi = (_result(p) for p in (one, four, *procs))
    assert one["devices"] == 1 and four["devices"] == 4
    assert len(one["losses"]) == 3 and one["losses"][-1] < one["losses"][0]  # steps taken
    _assert_same(four, one)
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-10)
    for r in multi:
        assert r["devices"] == 4 and r["processes"] == 2
        _assert_same(r, one)
