"""Read and write MLIP-2 ``.mtp`` files (text, ``key = value``, braces, ``radial_coeffs``).

Numbers are written with 17 significant digits, so a write/read round trip keeps every
float64 bit; the layout follows what ``mlp`` writes, and :func:`format_mtp` guarantees what
MLIP-2's token reader needs, so ``mlp`` and LAMMPS ``pair_style mlip`` read our files
unchanged (docs/lammps.md).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import numpy as np

from mtpjax.basis import BasisSpec
from mtpjax.io.errors import FileFormatError
from mtpjax.potential_data import RADIAL_BASIS_TYPES, MTPotential

_KEY_VALUE = re.compile(r"^\s*([A-Za-z_]+)\s*=\s*(.*?)\s*$")
_PAIR = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")

#: every key of an MLIP-2 ``.mtp`` file (version 1.1.0), in the order ``mlp`` writes them
KNOWN_KEYS = (
    "version", "potential_name", "scaling", "species_count", "potential_tag",
    "radial_basis_type", "min_dist", "max_dist", "radial_basis_size", "radial_funcs_count",
    "alpha_moments_count", "alpha_index_basic_count", "alpha_index_basic",
    "alpha_index_times_count", "alpha_index_times", "alpha_scalar_moments",
    "alpha_moment_mapping", "species_coeffs", "moment_coeffs",
)
_VERSION = "1.1.0"


def _parse_numbers(text: str, path, line: int | None, kind=float) -> list:
    """Numbers of a ``{a, b, ...}`` (possibly nested) value; finite floats or integers."""
    if text.count("{") != text.count("}"):
        raise FileFormatError(
            path, line, f"unbalanced braces in {text[:60]!r} (truncated file?); expected "
            "'{...}' closed on the same line")
    cleaned = text.replace("{", " ").replace("}", " ").replace(",", " ").split()
    out = []
    for tok in cleaned:
        try:
            value = kind(tok)
        except ValueError as exc:
            what = "an integer" if kind is int else "a number"
            raise FileFormatError(path, line, f"expected {what}, got {tok!r}") from exc
        if kind is float and not np.isfinite(value):
            raise FileFormatError(path, line, f"expected a finite number, got {tok!r}")
        out.append(value)
    return out


def _parse_nested(text: str, path, line: int, width: int) -> list[list[int]]:
    """``{{a, b, c, d}, ...}``: groups of ``width`` integers (also accepted flat)."""
    flat = _parse_numbers(text, path, line, kind=int)  # braces balanced, integers only
    if text.count("{") <= 1:
        groups = [flat[i : i + width] for i in range(0, len(flat), width)]
    else:
        groups = [_parse_numbers(g, path, line, kind=int)
                  for g in re.findall(r"\{([^{}]*)\}", text)]
    for k, g in enumerate(groups):
        if len(g) != width:
            raise FileFormatError(path, line, f"group {k} has {len(g)} integers, expected "
                                  f"{width} ({{{', '.join(['i'] * width)}}})")
    return groups


def _unknown_key(key: str, path, line: int) -> FileFormatError:
    close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return FileFormatError(
        path, line, f"unknown key {key!r}{hint}; expected one of: {', '.join(KNOWN_KEYS)}"
    )


def read_mtp(path) -> MTPotential:
    """Read an ``.mtp`` file (trained or untrained template) into :class:`MTPotential`.

    Strict: unknown or repeated keys, a version other than 1.1.0, declared counts that disagree
    with their tables, ``min_dist ≥ max_dist``, radial blocks of the wrong size, non-finite
    numbers and truncated values raise :class:`~mtpjax.io.errors.FileFormatError` (an
    :class:`~mtpjax.errors.InputError`) with ``path`` and ``line``. Distances in Å,
    coefficients in eV.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise FileFormatError(path, None, f"cannot read file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise FileFormatError(path, None, "not a text file (expected an MLIP .mtp file)") from exc
    if not lines or lines[0].strip() != "MTP":
        raise FileFormatError(path, 1, "first line must be 'MTP' (is this an MLIP .mtp file?)")
    values: dict[str, tuple[str, int]] = {}
    # (i, j) -> (line of the 'i-j' header, [(line, row), ...])
    radial_blocks: dict[tuple[int, int], tuple[int, list[tuple[int, list[float]]]]] = {}
    radial_line = None
    n = 1
    while n < len(lines):
        raw = lines[n]
        lineno = n + 1
        n += 1
        if not raw.strip() or raw.strip().startswith("#"):
            continue
        if raw.strip() == "radial_coeffs":
            if radial_line is not None:
                raise FileFormatError(path, lineno, f"radial_coeffs repeated (first on line "
                                      f"{radial_line})")
            radial_line = lineno
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
                    if current in radial_blocks:
                        raise FileFormatError(path, n, f"radial_coeffs block {sub.strip()} "
                                              "repeated")
                    radial_blocks[current] = (n, [])
                elif sub.strip().startswith("{"):
                    if current is None:
                        raise FileFormatError(path, n, "radial coefficients before a 'i-j' block")
                    radial_blocks[current][1].append((n, _parse_numbers(sub, path, n)))
                else:
                    raise FileFormatError(path, n, f"unexpected line in radial_coeffs: "
                                          f"{sub.strip()[:60]!r}; expected 'i-j' or "
                                          "'{c_0, ..., c_R-1}'")
            continue
        m = _KEY_VALUE.match(raw)
        if not m:
            raise FileFormatError(path, lineno, f"expected 'key = value', got "
                                  f"{raw.strip()[:60]!r}")
        key = m.group(1)
        if key not in KNOWN_KEYS:
            raise _unknown_key(key, path, lineno)
        if key in values:
            raise FileFormatError(path, lineno, f"{key} given twice (first on line "
                                  f"{values[key][1]})")
        values[key] = (m.group(2), lineno)

    def line_of(key):
        return values[key][1] if key in values else None

    def get(key, kind=str, default=None, required=True):
        if key not in values:
            if required and default is None:
                raise FileFormatError(path, None, f"missing required key {key!r} (truncated "
                                      "file?)")
            return default
        text, line = values[key]
        try:
            value = kind(text)
        except ValueError as exc:
            what = {int: "an integer", float: "a number"}.get(kind, "a value")
            raise FileFormatError(path, line, f"bad value for {key}: {text!r}; expected "
                                  f"{what}") from exc
        if kind is float and not np.isfinite(value):
            raise FileFormatError(path, line, f"{key} must be finite, got {text!r}")
        return value

    version = get("version", str, _VERSION)
    if version != _VERSION:
        raise FileFormatError(path, line_of("version"), f"unsupported version {version!r}; "
                              f"expected {_VERSION} (MLIP-2 format)")
    for key in ("alpha_index_basic", "alpha_moment_mapping"):
        if key not in values:
            raise FileFormatError(path, None, f"missing required key {key!r} (truncated file?)")
    basic = _parse_nested(values["alpha_index_basic"][0], path, line_of("alpha_index_basic"), 4)
    times_text, times_line = values.get("alpha_index_times", ("{}", None))
    times = _parse_nested(times_text, path, times_line, 4)
    map_text, map_line = values["alpha_moment_mapping"]
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
                path, values[key][1], f"{key} = {declared} but {what} (line {line_of(what)}) "
                f"has {actual} entries"
            )
    n_moments = get("alpha_moments_count", int)
    try:
        basis = BasisSpec(basic, np.asarray(times).reshape(-1, 4), mapping, n_moments)
    except ValueError as exc:
        raise FileFormatError(path, values["alpha_index_basic"][1], str(exc)) from exc
    if mapping and (min(mapping) < 0 or max(mapping) >= n_moments):
        raise FileFormatError(path, map_line, f"alpha_moment_mapping refers to moment "
                              f"{max(mapping)} but alpha_moments_count = {n_moments}")

    species_count = get("species_count", int)
    if species_count < 1:
        raise FileFormatError(path, line_of("species_count"), f"species_count must be ≥ 1, "
                              f"got {species_count}")
    R = get("radial_basis_size", int)
    if R < 2:
        raise FileFormatError(path, line_of("radial_basis_size"), f"radial_basis_size must be "
                              f"≥ 2, got {R}")
    K = get("radial_funcs_count", int)
    if K < basis.radial_funcs_needed:
        raise FileFormatError(path, line_of("radial_funcs_count"), f"radial_funcs_count = {K} "
                              f"but alpha_index_basic uses radial functions μ up to "
                              f"{basis.radial_funcs_needed - 1}; expected ≥ "
                              f"{basis.radial_funcs_needed}")
    min_dist, max_dist = get("min_dist", float), get("max_dist", float)
    if not 0 <= min_dist < max_dist:
        raise FileFormatError(path, line_of("min_dist"), f"need 0 ≤ min_dist < max_dist (Å), "
                              f"got min_dist = {min_dist}, max_dist = {max_dist} (line "
                              f"{line_of('max_dist')})")
    radial_type = get("radial_basis_type", str)
    if radial_type not in RADIAL_BASIS_TYPES:
        raise FileFormatError(path, line_of("radial_basis_type"), f"radial_basis_type "
                              f"{radial_type!r} not supported; expected one of "
                              f"{', '.join(RADIAL_BASIS_TYPES)}")
    radial = None
    if radial_blocks:
        radial = np.zeros((species_count, species_count, K, R))
        for (i, j), (head_line, _) in radial_blocks.items():
            if i >= species_count or j >= species_count:
                raise FileFormatError(path, head_line, f"radial_coeffs block {i}-{j} but "
                                      f"species_count = {species_count} (types 0..."
                                      f"{species_count - 1})")
        for i in range(species_count):
            for j in range(species_count):
                if (i, j) not in radial_blocks:
                    raise FileFormatError(path, radial_line, f"radial_coeffs block {i}-{j} "
                                          f"missing: species_count = {species_count} (line "
                                          f"{line_of('species_count')}) needs "
                                          f"{species_count}² blocks 0-0 ... "
                                          f"{species_count - 1}-{species_count - 1}")
                head_line, rows = radial_blocks[(i, j)]
                if len(rows) != K:
                    raise FileFormatError(
                        path, rows[-1][0] if rows else head_line,
                        f"radial_coeffs block {i}-{j} has {len(rows)} rows, expected "
                        f"radial_funcs_count = {K}")
                for row_line, row in rows:
                    if len(row) != R:
                        raise FileFormatError(
                            path, row_line, f"radial_coeffs block {i}-{j}: row of {len(row)} "
                            f"numbers, expected radial_basis_size = {R}")
                radial[i, j] = [row for _, row in rows]
    coeffs = {}
    for key, size in (("species_coeffs", species_count), ("moment_coeffs", basis.scalar_count)):
        if key in values:
            text, line = values[key]
            arr = np.asarray(_parse_numbers(text, path, line))
            if arr.shape != (size,):
                what = "species_count" if key == "species_coeffs" else "alpha_scalar_moments"
                raise FileFormatError(path, line, f"{key} has {arr.size} numbers, expected "
                                      f"{what} = {size}")
            coeffs[key] = arr
    present = [k for k, v in (("radial_coeffs", radial), *coeffs.items()) if v is not None]
    if present and len(present) != 3:
        missing = sorted({"radial_coeffs", "species_coeffs", "moment_coeffs"} - set(present))
        raise FileFormatError(path, None, f"has {', '.join(present)} but not "
                              f"{', '.join(missing)}: a trained potential needs all three, a "
                              "template none (truncated file?)")
    try:
        return MTPotential(
            basis=basis,
            species_count=species_count,
            min_dist=min_dist,
            max_dist=max_dist,
            radial_basis_size=R,
            radial_funcs_count=K,
            radial_basis_type=radial_type,
            scaling=get("scaling", float, 1.0),
            radial_coeffs=radial,
            species_coeffs=coeffs.get("species_coeffs"),
            moment_coeffs=coeffs.get("moment_coeffs"),
            potential_name=get("potential_name", str, "MTP1m"),
            potential_tag=get("potential_tag", str, "", required=False) or "",
        )
    except ValueError as exc:
        raise FileFormatError(path, None, str(exc)) from exc


def _fmt(x: float) -> str:
    return f"{x:.16e}"


def _braces(values) -> str:
    return "{" + ", ".join(values) + "}"


#: the name MLIP gives a potential when none is set
DEFAULT_NAME = "MTP1m"


def mlip_name(name: str) -> str:
    """``potential_name`` as MLIP's reader needs it: one word (``MLMTPR::Load`` reads it with
    ``ifs >> pot_desc``, so a second word is taken for the next key and an empty name swallows
    the next key). Runs of white space become ``_``; an empty name becomes ``MTP1m``."""
    return "_".join(str(name).split()) or DEFAULT_NAME


def mlip_tag(tag: str) -> str:
    """``potential_tag`` on one line (MLIP reads the rest of the line with ``getline``)."""
    return " ".join(str(tag).split())


def format_mtp(pot: MTPotential) -> str:
    """The text of an ``.mtp`` file for ``pot``, in the layout ``mlp`` writes and with what
    MLIP-2's reader (``MLMTPR::Load``, used by ``mlp`` and LAMMPS ``pair_style mlip``) needs:

    * line 1 ``MTP``, line 2 exactly ``version = 1.1.0``; every ``key = value`` with the
      single-space `` = `` separator (MLIP skips two characters after each key);
    * ``potential_name`` one word (:func:`mlip_name`), ``scaling`` before ``species_count``,
      ``potential_tag`` on one line (:func:`mlip_tag`);
    * ``radial_funcs_count`` = 1 + the largest μ in ``alpha_index_basic`` (MLIP stops with
      "Wrong number of radial functions specified" otherwise): radial functions no basic moment
      uses are not written. They take no part in any energy, force or stress, so the file
      describes the same potential;
    * radial blocks in the order 0-0, 0-1, …, each row exactly ``radial_basis_size`` numbers,
      ``species_coeffs = {`` … (MLIP skips exactly four characters after that key).
    """
    b = pot.basis
    k = b.radial_funcs_needed
    out = ["MTP", f"version = {_VERSION}", f"potential_name = {mlip_name(pot.potential_name)}"]
    if pot.scaling != 1.0 or pot.is_trained:
        out.append(f"scaling = {_fmt(pot.scaling)}")
    out += [
        f"species_count = {pot.species_count}",
        f"potential_tag = {mlip_tag(pot.potential_tag)}",
        f"radial_basis_type = {pot.radial_basis_type}",
        f"\tmin_dist = {_fmt(pot.min_dist)}",
        f"\tmax_dist = {_fmt(pot.max_dist)}",
        f"\tradial_basis_size = {pot.radial_basis_size}",
        f"\tradial_funcs_count = {k}",
    ]
    if pot.radial_coeffs is not None:
        out.append("\tradial_coeffs")
        for i in range(pot.species_count):
            for j in range(pot.species_count):
                out.append(f"\t\t{i}-{j}")
                for row in pot.radial_coeffs[i, j, :k]:
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
