"""Loading ASE calculators from a command-line spec, and a cheap Si reference calculator.

Spec forms accepted by :func:`load_calculator`:

* ``mtp:PATH`` or a path ending in ``.mtp`` — :class:`mtpjax.calculator.MTPCalculator`
  (imported lazily) with ``species`` (default ``["Si"]``);
* ``module:factory`` — ``factory()`` from an importable module must return an ASE calculator,
  e.g. ``md.analysis.calculators:stillinger_weber_si``;
* ``sw`` — shortcut for the Stillinger–Weber Si calculator below.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path


def stillinger_weber_si():
    """Stillinger–Weber Si (Phys. Rev. B 31, 5262 (1985)) from matscipy: cheap, for tests/demos."""
    from matscipy.calculators.manybody import Manybody
    from matscipy.calculators.manybody.explicit_forms import StillingerWeber
    from matscipy.calculators.manybody.explicit_forms.stillinger_weber import (
        Stillinger_Weber_PRB_31_5262_Si,
    )

    return Manybody(**StillingerWeber(Stillinger_Weber_PRB_31_5262_Si))


def load_calculator(spec: str, species: Sequence[str] = ("Si",)):
    """Build an ASE calculator from ``spec`` (see the module docstring).

    Raises:
        ValueError: the spec has none of the accepted forms, or its module/factory is missing.
    """
    spec = spec.strip()
    if spec.lower() == "sw":
        return stillinger_weber_si()
    if spec.startswith("mtp:") or spec.endswith(".mtp"):
        path = spec[4:] if spec.startswith("mtp:") else spec
        if not Path(path).is_file():
            raise ValueError(f"calculator spec {spec!r}: no such potential file {path}")
        try:
            from mtpjax.calculator import MTPCalculator  # lazy: optional at analysis time
        except ImportError as exc:
            raise ValueError(f"calculator spec {spec!r}: the MTP calculator is not available "
                             f"({exc})") from exc
        return MTPCalculator(path, species=list(species))
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"calculator spec {spec!r}: expected 'mtp:PATH', 'PATH.mtp', 'sw' "
                         "or 'module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"calculator spec {spec!r}: cannot load {attr!r} from "
                         f"{module_name!r} ({exc})") from exc
    return factory()
