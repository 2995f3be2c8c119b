"""The package's public API: every name in ``mtpjax.__all__`` imports, ``__version__`` is the
pyproject version, ``import mtpjax`` stays light, ``python -m mtpjax`` is the command line."""

import subprocess
import sys
import tomllib
from pathlib import Path

import mtpjax

ROOT = Path(__file__).resolve().parents[2]


def test_every_public_name_imports():
    for name in mtpjax.__all__:
        assert getattr(mtpjax, name) is not None, name
        exec(f"from mtpjax import {name}", {})
    assert set(mtpjax.__all__) <= set(dir(mtpjax))


def test_version_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert mtpjax.__version__ == project["version"]


def test_fit_stays_callable_when_the_fit_package_is_imported():
    import mtpjax.fit.trainer  # noqa: F401  (binds the sub-package as mtpjax.fit)

    assert callable(mtpjax.fit) and hasattr(mtpjax.fit, "FitConfig")
    from mtpjax import fit

    assert fit is mtpjax.fit


def test_io_round_trip_through_the_api(tmp_path):
    pot = mtpjax.read_potential(ROOT / "tests" / "data" / "parity" / "si_L08" / "pot.mtp")
    assert isinstance(pot, mtpjax.MTPotential)
    mtpjax.write_potential(tmp_path / "copy.mtp", pot)
    again = mtpjax.read_potential(tmp_path / "copy.mtp")
    a, b = pot.params(), again.params()
    assert all((a[k] == b[k]).all() for k in a)


def test_import_is_light_and_python_m_mtpjax_runs():
    # one subprocess: `import mtpjax` loads no jax, then `python -m mtpjax --help` exits 0
    code = ("import sys, runpy, mtpjax; assert 'jax' not in sys.modules, 'jax imported'; "
            "sys.argv = ['mtpjax', '--help']; runpy.run_module('mtpjax', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: mtpjax" in out.stdout and "train" in out.stdout
