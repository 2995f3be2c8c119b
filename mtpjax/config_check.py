"""Shared validation of TOML configs (MD runs, the pipeline): keys, types, ranges, relations.

A :class:`Checker` raises the caller's :class:`~mtpjax.errors.InputError` subclass with the file,
the line of the offending key (found in the TOML text by :func:`toml_key_line`, best effort) and
the dotted key in the message: ``md.toml:12: stage[1].steps: must be ≥ 1, got 0``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from mtpjax.errors import InputError

_HEADER = re.compile(r"^\s*\[(\[)?\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?$")


def _key_items(key: str) -> list[tuple[str, int | None]]:
    items: list[tuple[str, int | None]] = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        if part.startswith("[") and items:
            items[-1] = (items[-1][0], int(part[1:-1]))
        elif not part.startswith("["):
            items.append((part.strip().strip('"'), None))
    return items


def toml_key_line(text: str | None, key: str) -> int | None:
    """1-based line of the dotted ``key`` (``sample.timestep_fs``, ``stage[2].steps``,
    ``md.protocol.compress.run.timestep_fs``) in the TOML ``text``, or of its nearest enclosing
    table or key found; ``None`` when nothing matches. Best effort: tables (``[a.b]``), arrays of
    tables (``[[stage]]``), keys and inline tables written one element per line."""
    if not text or not key:
        return None
    items = _key_items(key)
    lines = text.splitlines()
    headers = []
    counts: dict[str, int] = {}
    for n, raw in enumerate(lines, start=1):
        m = _HEADER.match(raw)
        if m:
            name = ".".join(p.strip().strip('"') for p in m.group(2).split("."))
            idx = None
            if m.group(1):
                idx = counts.get(name, 0)
                counts[name] = idx + 1
            headers.append((n, name, idx))
    consumed, start, end, line = 0, 1, (headers[0][0] - 1 if headers else len(lines)), None
    for h, (n, name, idx) in enumerate(headers):
        parts = name.split(".")
        if len(parts) > len(items) or len(parts) <= consumed:
            continue
        if any(items[k][0] != parts[k] for k in range(len(parts))):
            continue
        want = items[len(parts) - 1][1]
        if idx is not None and want is not None and want != idx:
            continue
        consumed, start, line = len(parts), n + 1, n
        end = headers[h + 1][0] - 1 if h + 1 < len(headers) else len(lines)
    pos = start
    for name, idx in items[consumed:]:
        pattern = re.compile(rf"(^|[\s{{,]){re.escape(name)}\s*=")
        found = next((n for n in range(pos, end + 1) if pattern.search(lines[n - 1])), None)
        if found is None:
            break
        line, pos = found, found
        if idx:  # an inline array written one element per line
            after = lines[found - 1].split("=", 1)[1]
            pos = min(end, found + idx + (0 if "{" in after else 1))
            line = pos
    return line


def toml_error(exc: Exception) -> tuple[str, int | None]:
    """(message, line) of a :class:`tomllib.TOMLDecodeError` (Python 3.11 keeps the line only in
    the text: ``Invalid value (at line 2, column 5)``)."""
    line = getattr(exc, "lineno", None)
    text = str(getattr(exc, "msg", None) or exc)
    m = re.search(r"\s*\(at line (\d+), column \d+\)", text)
    if m:
        line = line or int(m.group(1))
        text = text[: m.start()] + text[m.end():]
    return f"invalid TOML: {text.strip()}", line


class Checker:
    """Validation helpers that raise ``error(f"{key}: {message}", path, line)``.

    Args:
        source: the config file (or a label such as ``md.protocol.compress``).
        text: the TOML text, to find the line of a key (optional).
        error: the :class:`InputError` subclass to raise.
        prefix: dotted prefix of every key (for configs nested in another file).
    """

    def __init__(self, source, text: str | None = None, error=InputError, prefix: str = ""):
        self.source = str(source)
        self.text = text
        self.error = error
        self.prefix = prefix

    def fail(self, key: str, msg: str):
        full = f"{self.prefix}.{key}" if self.prefix and key else (key or self.prefix)
        raise self.error(f"{full}: {msg}" if full else msg, self.source,
                         toml_key_line(self.text, full))

    def keys(self, table, allowed, where: str):
        if not isinstance(table, dict):
            self.fail(where, f"expected a table, got {type(table).__name__}")
        for k in table:
            if k not in allowed:
                self.fail(f"{where}.{k}" if where else k,
                          f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def number(self, table, key, where, default=None, positive=False, nonneg=False,
               integer=False, low=None, high=None, unit: str = ""):
        """``table[key]`` (or ``default``; ``None`` = required), checked: a finite number
        (an integer if ``integer``), > 0 if ``positive``, ≥ 0 if ``nonneg``, within
        [``low``, ``high``] where given (``unit`` for the message)."""
        name = f"{where}.{key}" if where else key
        if key not in table:
            if default is None:
                self.fail(name, "required")
            return default
        return self.value(table[key], name, positive=positive, nonneg=nonneg, integer=integer,
                          low=low, high=high, unit=unit)

    def value(self, v, name, positive=False, nonneg=False, integer=False, low=None, high=None,
              unit: str = ""):
        if isinstance(v, bool) or not isinstance(v, int | float) or (
                integer and not isinstance(v, int)):
            self.fail(name, f"expected {'an integer' if integer else 'a number'}, got {v!r}")
        u = f" {unit}" if unit else ""
        if not math.isfinite(v):
            self.fail(name, f"expected a finite number, got {v!r}")
        if positive and not v > 0:
            self.fail(name, f"must be > 0{u}, got {v}")
        if nonneg and v < 0:
            self.fail(name, f"must be ≥ 0{u}, got {v}")
        if (low is not None and v < low) or (high is not None and v > high):
            lo = "-∞" if low is None else f"{low:g}"
            hi = "∞" if high is None else f"{high:g}"
            self.fail(name, f"expected a value in [{lo}, {hi}]{u}, got {v}")
        return v

    def choice(self, table, key, where, options, default):
        v = table.get(key, default)
        if v not in options:
            self.fail(f"{where}.{key}", f"must be one of {list(options)}, got {v!r}")
        return v

    def species(self, value, key) -> list[str]:
        """A non-empty list of distinct element symbols."""
        from ase.data import atomic_numbers

        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(
                isinstance(s, str) for s in value):
            self.fail(key, f"expected a non-empty list of element symbols, got {value!r}")
        for s in value:
            if s not in atomic_numbers:
                self.fail(key, f"unknown element {s!r}")
        if len(set(value)) != len(value):
            self.fail(key, f"species given twice in {value}")
        return value

    def path(self, value, key, base: Path | None):
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected a file path, got {value!r}")
        p = Path(value).expanduser()
        if p.is_file() or p.is_absolute():
            if not p.is_file():
                self.fail(key, f"file not found: {p}")
            return p
        if base is not None and (base / p).is_file():
            return base / p
        where = f" (also tried {base / p})" if base is not None else ""
        self.fail(key, f"file not found: {p.resolve()}{where}")


#: largest MD time step accepted (fs): beyond it atoms fly apart in any material
MAX_TIMESTEP_FS = 20.0
#: densities accepted (g/cm³): the densest element (Os) is 22.6
MAX_DENSITY_G_CM3 = 30.0


def check_packing(c: Checker, key: str, n_atoms: int, density_g_cm3: float,
                  min_distance_A: float, element: str) -> None:
    """Random placement of ``n_atoms`` with pair distances ≥ ``min_distance_A`` (Å) at
    ``density_g_cm3`` must be possible: hard-sphere packing fraction ≤ 0.6 (random close
    packing ≈ 0.64)."""
    from ase.data import atomic_masses, atomic_numbers

    if element not in atomic_numbers:
        return
    mass_g = atomic_masses[atomic_numbers[element]] * 1.66053906660e-24
    volume_per_atom = mass_g / density_g_cm3 * 1e24  # Å³
    fraction = math.pi / 6.0 * min_distance_A**3 / volume_per_atom
    if fraction > 0.6:
        c.fail(key, f"min_distance_A = {min_distance_A} Å cannot be met at density "
               f"{density_g_cm3} g/cm³ ({volume_per_atom:.3g} Å³ per {element} atom; hard-sphere "
               f"packing fraction {fraction:.2f} > 0.6): lower min_distance_A or the density")
