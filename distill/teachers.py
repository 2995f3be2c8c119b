"""Teachers: picklable specs that build an ASE calculator where the labels are computed.

A `TeacherSpec` is plain data (kind, model, species, keyword arguments). It crosses process
and machine boundaries by pickle; the calculator itself — a quippy `Potential` cannot be
pickled — is built inside each worker by `build_calculator`. Kinds:

- ``gap``: a GAP XML file, built as ``quippy.potential.Potential(param_filename=model, **kwargs)``;
- ``ase``: any importable factory ``"module:function"`` called with ``**kwargs`` (a calculator
  class is a factory too, e.g. ``ase.calculators.emt:EMT``);
- ``mtp``: an mtpjax ``.mtp`` file, built as ``MTPCalculator(model, species=[...], **kwargs)``.

`teacher_identity` records what the labels depend on: the kind, the sha256 of every model file
(a GAP's XML and its sparse-point files), the factory name, species and keyword arguments.
Its hash, `teacher_id`, keys the labels in the store; moving a model file to another path
keeps the id, editing it changes it. A GAP's XML is hashed without what `gap_fit` writes into
it that does not change a prediction — its timestamped label (``GAP_2026_12_4_...``) and the
``<command_line>`` record of the fit's paths — so refitting the same data with the same
settings (a fresh clone running the demo) gives the same id and the same labels' keys.
Library versions are recorded but not hashed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import re
import tomllib
from pathlib import Path
from typing import Any

from distill.hashing import file_sha256, json_sha256

KINDS = ("gap", "ase", "mtp")
_PACKAGE = {"gap": "quippy-ase", "ase": "ase", "mtp": "mtpjax"}


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    """What a worker needs to build a teacher calculator.

    kind: ``"gap"``, ``"ase"`` or ``"mtp"``. model: the model file (gap, mtp) or the factory
    ``"module:function"`` (ase). species: element symbols in type order (mtp). kwargs: keyword
    arguments for the constructor / factory (JSON-able values).
    """

    kind: str
    model: str
    species: tuple[str, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


def check_teacher(spec: TeacherSpec) -> None:
    """Raise a clear error for an unknown kind, a missing model file or a bad factory name.

    Cheap: builds nothing and imports only the factory's module (kind ``ase``).
    """
    if spec.kind not in KINDS:
        raise ValueError(f"unknown teacher kind {spec.kind!r}; expected one of {', '.join(KINDS)}")
    if spec.kind in ("gap", "mtp"):
        for path in model_files(spec):
            if not path.is_file():
                raise FileNotFoundError(f"{spec.kind} teacher: model file not found: {path}")
        if spec.kind == "mtp" and not spec.species:
            raise ValueError(f"mtp teacher {spec.model}: species are required, e.g. mtp:pot.mtp:Si")
    else:
        _factory(spec.model)


def model_files(spec: TeacherSpec) -> list[Path]:
    """The files a teacher's labels depend on: a GAP's XML plus its sparse-point files."""
    if spec.kind == "ase":
        return []
    main = Path(spec.model)
    if spec.kind != "gap" or not main.is_file():
        return [main]
    text = main.read_text(errors="replace")
    sparse = sorted(set(re.findall(r'sparseX_filename="([^"]+)"', text)))
    return [main] + [main.parent / name for name in sparse]


_GAP_LABEL = re.compile(rb"<(GAP_[0-9_]+)>")
_GAP_COMMAND_LINE = re.compile(rb"<command_line>.*?</command_line>", re.S)


def model_digest(spec: TeacherSpec, path: Path) -> str:
    """sha256 of what a model file's predictions depend on (hex).

    A GAP's XML (the spec's model file): its bytes with `gap_fit`'s label replaced by a fixed
    token everywhere and its ``<command_line>`` element removed; every other file: its bytes.
    """
    if spec.kind != "gap" or Path(path) != Path(spec.model):
        return file_sha256(path)
    data = Path(path).read_bytes()
    found = _GAP_LABEL.search(data)
    if found:
        data = data.replace(found.group(1), b"GAP_LABEL")
    return hashlib.sha256(_GAP_COMMAND_LINE.sub(b"", data)).hexdigest()


def teacher_identity(spec: TeacherSpec) -> dict:
    """Kind, model, file hashes, species, settings, library version and the `teacher_id`."""
    check_teacher(spec)
    files = [{"name": p.name, "sha256": file_sha256(p)} for p in model_files(spec)]
    hashed = {
        "kind": spec.kind,
        "factory": spec.model if spec.kind == "ase" else None,
        "files": [model_digest(spec, p) for p in model_files(spec)],
        "species": list(spec.species),
        "kwargs": spec.kwargs,
    }
    return {
        "teacher_id": json_sha256(hashed)[:16],
        "kind": spec.kind,
        "model": spec.model,
        "files": files,
        "species": list(spec.species),
        "kwargs": spec.kwargs,
        "version": _version(_PACKAGE[spec.kind]),
    }


def build_calculator(spec: TeacherSpec):
    """Build the ASE calculator of `spec` (call inside the worker that uses it)."""
    check_teacher(spec)
    if spec.kind == "gap":
        from quippy.potential import Potential

        return Potential(param_filename=str(spec.model), **spec.kwargs)
    if spec.kind == "mtp":
        from mtpjax.calculator import MTPCalculator

        return MTPCalculator(str(spec.model), species=list(spec.species), **spec.kwargs)
    return _factory(spec.model)(**spec.kwargs)


def parse_teacher(text: str) -> TeacherSpec:
    """A `TeacherSpec` from the command-line syntax (see docs/labelling.md).

    ``gap:PATH.xml`` · ``ase:MODULE:FACTORY`` · ``ase:MODULE:FACTORY:{"json": "kwargs"}`` ·
    ``mtp:PATH.mtp:Si[,O...]`` · or a ``.toml`` / ``.json`` file with keys ``kind``, ``model``,
    ``species``, ``kwargs`` (relative model paths are relative to that file).
    """
    path = Path(text)
    if path.suffix in (".toml", ".json"):
        return _from_file(path)
    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise ValueError(
            f"teacher spec {text!r}: expected KIND:..., e.g. gap:gap.xml, "
            "ase:ase.calculators.emt:EMT, mtp:pot.mtp:Si, or a .toml/.json file"
        )
    if kind == "gap":
        return TeacherSpec("gap", rest)
    if kind == "mtp":
        model, _, species = rest.rpartition(":")
        if not model:
            raise ValueError(f"teacher spec {text!r}: expected mtp:PATH.mtp:Si[,O...]")
        return TeacherSpec("mtp", model, tuple(s.strip() for s in species.split(",")))
    if kind == "ase":
        module, _, tail = rest.partition(":")
        function, _, kwargs = tail.partition(":")
        try:
            parsed = json.loads(kwargs) if kwargs else {}
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"teacher spec {text!r}: keyword arguments are not JSON: {exc}"
            ) from None
        return TeacherSpec("ase", f"{module}:{function}", (), parsed)
    raise ValueError(
        f"unknown teacher kind {kind!r} in {text!r}; expected one of {', '.join(KINDS)}"
    )


def _from_file(path: Path) -> TeacherSpec:
    if not path.is_file():
        raise FileNotFoundError(f"teacher spec file not found: {path}")
    try:
        raw = (
            tomllib.loads(path.read_text())
            if path.suffix == ".toml"
            else json.loads(path.read_text())
        )
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot parse teacher spec: {exc}") from None
    unknown = set(raw) - {"kind", "model", "species", "kwargs"}
    if unknown or "kind" not in raw or "model" not in raw:
        raise ValueError(
            f"{path}: teacher spec needs keys kind, model (optional species, kwargs); "
            f"unknown keys: {sorted(unknown)}"
        )
    model = str(raw["model"])
    if raw["kind"] in ("gap", "mtp") and not Path(model).is_absolute():
        model = str(path.parent / model)
    return TeacherSpec(
        raw["kind"], model, tuple(raw.get("species", ())), dict(raw.get("kwargs", {}))
    )


def _factory(name: str):
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ValueError(f"ase teacher {name!r}: expected 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"ase teacher {name!r}: cannot import {module_name}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"ase teacher {name!r}: {module_name} has no callable {attr!r}")
    return factory


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
