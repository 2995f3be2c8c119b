"""mtpjax: Moment Tensor Potentials in JAX, with parity to MLIP-2's ``mlp``.

Public API (imported on first use, so ``import mtpjax`` stays light)::

    import mtpjax

    pot = mtpjax.read_potential("pot.mtp")                  # MLIP-2 .mtp → MTPotential
    atoms.calc = mtpjax.MTPCalculator(pot, species=["Si"])  # ASE calculator
    trained = mtpjax.fit("template.mtp", "train.cfg", max_iter=200)  # as `mtpjax train`
    mtpjax.write_potential("trained.mtp", trained)
    e, f, virial = mtpjax.energy_fn(spec, params, x, cell, types, neighbors)  # jit-able core
    grader = mtpjax.Grader(pot)                            # MaxVol extrapolation grades

``mtpjax.cell_list`` is the device-side neighbour list of the MD engine; ``python -m mtpjax``
is the ``mtpjax`` command line. ``mtpjax.fit`` is also the fitting sub-package
(:mod:`mtpjax.fit`: ``FitConfig``, ``Trainer``, ``load_dataset``); calling it runs
:func:`mtpjax.api.fit`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

_DIST = "mtpjax"


def _version() -> str:
    """The version of this source tree (its pyproject.toml, when the package sits in a
    checkout, so that a stale editable install does not misreport it), else the installed
    distribution's metadata."""
    from pathlib import Path

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        try:
            import tomllib

            project = tomllib.loads(pyproject.read_text()).get("project", {})
            if project.get("name") == _DIST and "version" in project:
                return str(project["version"])
        except (OSError, ValueError):
            pass
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version(_DIST)
    except PackageNotFoundError:
        return "0+unknown"


__version__: str = _version()

# public name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "MTPCalculator": ("mtpjax.calculator", "MTPCalculator"),
    "MTPotential": ("mtpjax.potential_data", "MTPotential"),
    "read_potential": ("mtpjax.api", "read_potential"),
    "write_potential": ("mtpjax.api", "write_potential"),
    "energy_fn": ("mtpjax.api", "energy_fn"),
    # the sub-package mtpjax.fit, callable as mtpjax.api.fit (a function here would be
    # replaced by the sub-package as soon as anything imports mtpjax.fit.*)
    "fit": ("mtpjax.fit", None),
    "FitConfig": ("mtpjax.fit.trainer", "FitConfig"),
    "Grader": ("mtpjax.grade", "Grader"),
    "cell_list": ("mtpjax.cell_list", None),
}

__all__ = [
    "__version__", "MTPCalculator", "MTPotential", "read_potential", "write_potential",
    "energy_fn", "fit", "FitConfig", "Grader", "cell_list",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from mtpjax import cell_list, fit
    from mtpjax.api import energy_fn, read_potential, write_potential
    from mtpjax.calculator import MTPCalculator
    from mtpjax.fit.trainer import FitConfig
    from mtpjax.grade import Grader
    from mtpjax.potential_data import MTPotential


def __getattr__(name: str):  # PEP 562: import the public API on first use
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'mtpjax' has no attribute {name!r}") from None
    import importlib

    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})
