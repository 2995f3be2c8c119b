"""Read and write MLIP-2 ``.mtp`` files (text, ``key = value``, braces, ``radial_coeffs``).

Numbers are written with 17 significant digits, so a write/read round trip keeps every
float64 bit; the layout follows what ``mlp`` writes so ``mlp`` reads our files.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mtpjax.basis import BasisSpec
from mtpjax.io.errors import FileFormatError
from mtpjax.potential_data import MTPotential

_KEY_VALUE = re.compile(r"^\s*([A-Za-z_]+)\s*=\s*(.*?)\s*$")
_PAIR = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def _parse_numbers(text: str, path, line: int, kind=float) -> list:
    cleaned = text.replace("{", " ").replace("}", " ").replace(",", " ").split()
    try:
        return [kind(tok) for tok in cleaned]
    except ValueError as exc:
        raise FileFormatError(path, line, f"cannot parse number in {text[:60]!r}") from exc


def _parse_nested(text: str, path, line: int, width: int) -> list[list[int]]:
    flat = _parse_numbers(text, path, line, kind=int)
    if len(flat) % width:
        raise FileFormatError(path, line, f"expected groups of {width} integers")
    return [flat[i : i + width] for i in range(0, len(flat), width)]


def read_mtp(path) -> MTPotential:
    """Read an ``.mtp`` file (trained or untrained template) into :class:`MTPotential`."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise FileFormatError(path, None, f"cannot read file: {exc.strerror}") from exc
    if not lines or lines[0].strip() != "MTP":
        raise FileFormatError(path, 1, "first line must be 'MTP'")
    values: dict[str, tuple[str, int]] = {}
    radial_blocks: dict[tuple[int, int], list[list[float]]] = {}
    n = 1
    while n < len(lines):
        raw = lines[n]
        lineno = n + 1
        n += 1
        if not raw.strip() or raw.strip().startswith("#"):
            continue
        if raw.strip() == "radial_coeffs":
            current = None
            while n < len(lines):
                sub = lines[n]
                if _KEY_VALUE.match(sub):
                    break
                n += 1
                if not sub.strip():
                    continue
                pair = _PAIR.match(sub)
                if pair:
                    current = (int(pair.group(1)), int(pair.group(2)))
                    radial_blocks[current] = []
                elif sub.strip().startswith("{"):
                    if current is None:
                        raise FileFormatError(path, n, "radial coefficients before a 'i-j' block")
                    radial_blocks[current].append(_parse_numbers(sub, path, n))
                else:
                    raise FileFormatError(path, n, f"unexpected line in radial_coeffs: {sub!r}")
            continue
        m = _KEY_VALUE.match(raw)
        if not m:
            raise FileFormatError(path, lineno, f"expected 'key = value', got {raw.strip()!r}")
        values[m.group(1)] = (m.group(2), lineno)

    def get(key, kind=str, default=None, required=True):
        if key not in values:
            if required and default is None:
                raise FileFormatError(path, None, f"missing required key {key!r}")
            return default
        text, line = values[key]
        try:
            return kind(text)
        except ValueError as exc:
            raise FileFormatError(path, line, f"bad value for {key}: {text!r}") from exc

    version = get("version", str, "1.1.0")
    if version != "1.1.0":
        raise FileFormatError(path, values["version"][1], f"unsupported version {version!r}")
    if "alpha_index_basic" not in values:
        raise FileFormatError(path, None, "missing required key 'alpha_index_basic'")
    basic = _parse_nested(*values["alpha_index_basic"][:1], path, values["alpha_index_basic"][1], 4)
    times_text = values.get("alpha_index_times", ("{}", 0))
    times = _parse_nested(times_text[0], path, times_text[1], 4)
    map_text, map_line = values.get("alpha_moment_mapping", ("", None))
    mapping = _parse_numbers(map_text, path, map_line, kind=int)
    counts = {
        "alpha_index_basic_count": (len(basic), "alpha_index_basic"),
        "alpha_index_times_count": (len(times), "alpha_index_times"),
        "alpha_scalar_moments": (len(mapping), "alpha_moment_mapping"),
    }
    for key, (actual, what) in counts.items():
        declared = get(key, int, required=False)
        if declared is not None and declared != actual:
            raise FileFormatError(
                path, values[key][1], f"{key} = {declared} but {what} has {actual} entries"
            )
    try:
        basis = BasisSpec(
            basic, np.asarray(times).reshape(-1, 4), mapping, get("alpha_moments_count", int)
        )
    except ValueError as exc:
        raise FileFormatError(path, values["alpha_index_basic"][1], str(exc)) from exc

    species_count = get("species_count", int)
    R = get("radial_basis_size", int)
    K = get("radial_funcs_count", int)
    radial = None
    if radial_blocks:
        radial = np.zeros((species_count, species_count, K, R))
        for i in range(species_count):
            for j in range(species_count):
                block = radial_blocks.get((i, j))
                if block is None:
                    raise FileFormatError(path, None, f"radial_coeffs block {i}-{j} missing")
                arr = np.asarray(block, dtype=np.float64)
                if arr.shape != (K, R):
                    raise FileFormatError(
                        path,
                        None,
                        f"radial_coeffs block {i}-{j} has shape {arr.shape}, expected ({K}, {R})",
                    )
                radial[i, j] = arr
    species = None
    if "species_coeffs" in values:
        species = np.asarray(_parse_numbers(*values["species_coeffs"], path))
    moments = None
    if "moment_coeffs" in values:
        moments = np.asarray(_parse_numbers(*values["moment_coeffs"], path))
    try:
        return MTPotential(
            basis=basis,
            species_count=species_count,
            min_dist=get("min_dist", float),
            max_dist=get("max_dist", float),
            radial_basis_size=R,
            radial_funcs_count=K,
            radial_basis_type=get("radial_basis_type", str),
            scaling=get("scaling", float, 1.0),
            radial_coeffs=radial,
            species_coeffs=species,
            moment_coeffs=moments,
            potential_name=get("potential_name", str, "MTP1m"),
            potential_tag=get("potential_tag", str, "", required=False) or "",
        )
    except ValueError as exc:
        raise FileFormatError(path, None, str(exc)) from exc


def _fmt(x: float) -> str:
    return f"{x:.16e}"


def _braces(values) -> str:
    return "{" + ", ".join(values) + "}"


def format_mtp(pot: MTPotential) -> str:
    """The text of an ``.mtp`` file for ``pot`` (layout as written by ``mlp``)."""
    b = pot.basis
    out = ["MTP", "version = 1.1.0", f"potential_name = {pot.potential_name}"]
    if pot.scaling != 1.0 or pot.is_trained:
        out.append(f"scaling = {_fmt(pot.scaling)}")
    out += [
        f"species_count = {pot.species_count}",
        f"potential_tag = {pot.potential_tag}",
        f"radial_basis_type = {pot.radial_basis_type}",
        f"\tmin_dist = {_fmt(pot.min_dist)}",
        f"\tmax_dist = {_fmt(pot.max_dist)}",
        f"\tradial_basis_size = {pot.radial_basis_size}",
        f"\tradial_funcs_count = {pot.radial_funcs_count}",
    ]
    if pot.radial_coeffs is not None:
        out.append("\tradial_coeffs")
        for i in range(pot.species_count):
            for j in range(pot.species_count):
                out.append(f"\t\t{i}-{j}")
                for row in pot.radial_coeffs[i, j]:
                    out.append("\t\t\t" + _braces(_fmt(v) for v in row))
    out += [
        f"alpha_moments_count = {b.alpha_moments_count}",
        f"alpha_index_basic_count = {b.basic_count}",
        "alpha_index_basic = "
        + _braces(_braces(str(int(v)) for v in row) for row in b.alpha_index_basic),
        f"alpha_index_times_count = {b.times_count}",
        "alpha_index_times = "
        + _braces(_braces(str(int(v)) for v in row) for row in b.alpha_index_times),
        f"alpha_scalar_moments = {b.scalar_count}",
        "alpha_moment_mapping = " + _braces(str(int(v)) for v in b.alpha_moment_mapping),
    ]
    if pot.species_coeffs is not None:
        out.append("species_coeffs = " + _braces(_fmt(v) for v in pot.species_coeffs))
    if pot.moment_coeffs is not None:
        out.append("moment_coeffs = " + _braces(_fmt(v) for v in pot.moment_coeffs))
    return "\n".join(out) + "\n"


def write_mtp(path, pot: MTPotential) -> None:
    """Write ``pot`` to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(format_mtp(pot))
    tmp.replace(path)
