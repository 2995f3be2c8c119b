"""The project installs where the GPUs are: Python 3.12 with a CUDA jax ≥ 0.11, and never
jax 0.10.2 (jax-ml/jax#39103) on Python 3.11."""

import glob
import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pins(name: str, python: str, extra: str = "") -> SpecifierSet:
    """Combined specifier of ``name`` in the project's requirements on Python ``python``."""
    reqs = PROJECT["dependencies"] + (PROJECT["optional-dependencies"][extra] if extra else [])
    spec = SpecifierSet()
    env = {"python_version": python, "python_full_version": python + ".0", "extra": extra}
    for text in reqs:
        req = Requirement(text)
        if req.name == name and (req.marker is None or req.marker.evaluate(env)):
            spec &= req.specifier
    return spec


def test_requires_python_admits_312():
    spec = SpecifierSet(PROJECT["requires-python"])
    assert "3.11.7" in spec and "3.12.1" in spec and "3.13.0" in spec


@pytest.mark.parametrize("name", ["jax", "jaxlib"])
def test_jax_ranges(name):
    on311, on312 = _pins(name, "3.11"), _pins(name, "3.12")
    assert "0.10.1" in on311 and "0.10.2" not in on311
    assert "0.10.2" not in on312 and "0.11.2" in on312  # the GPU machines' CUDA jax is kept
    cuda = _pins("jax", "3.12", "cuda13")
    assert "0.11.2" in cuda and "0.10.2" not in cuda


def _python312():
    found = shutil.which("python3.12")
    candidates = ([found] if found else []) + sorted(
        glob.glob("/root/.pyenv/versions/3.12*/bin/python3.12"))
    for exe in candidates:
        if subprocess.run([exe, "-c", "import pip"], capture_output=True).returncode == 0:
            return exe
    return None


def _dry_run(tmp_path, extras: str):
    exe = _python312()
    if exe is None:
        pytest.skip("no Python 3.12 interpreter with pip on this machine")
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [exe, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), f"{ROOT}[{extras}]"],
        capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {i["metadata"]["name"]: i["metadata"]["version"]
            for i in json.loads(report.read_text())["install"]}


def test_pip_dry_run_resolves_on_python312(tmp_path):
    """A real resolution for Python 3.12 (the GPU machines' Python), CPU extras."""
    versions = _dry_run(tmp_path, "quippy")
    assert versions["jax"].startswith("0.11.") and versions["jaxlib"].startswith("0.11.")
    assert {"ase", "matscipy", "jax-md", "optax", "quippy-ase"} <= set(versions)


@pytest.mark.slow
def test_pip_dry_run_cuda13_extra(tmp_path):
    """The CUDA extra resolves to jax with the CUDA 13 plugin (several GB of wheels: slow)."""
    versions = _dry_run(tmp_path, "cuda13")
    assert versions["jax"].startswith("0.11.")
    assert "jax-cuda13-plugin" in versions
