"""A strict Python re-enactment of MLIP-2's ``.mtp`` reader (``MLMTPR::Load``, dev_src/mtpr.cpp,
MLIP-2 2.1.2), the reader behind ``mlp`` and LAMMPS ``pair_style mlip``.

It replays the C++ ``std::istream`` operations in the same order (``>>`` of words, integers,
doubles and characters, ``ignore(n, delim)``, ``getline``) and the same checks, so a file it
accepts is read by MLIP token for token with the same values. It is stricter than MLIP in one
way: the first failed extraction raises at once (MLIP sets ``failbit`` and often checks later).
"""

from __future__ import annotations

import re

import numpy as np

_INT = re.compile(r"[+-]?\d+")
# what libstdc++'s num_get accepts for a double (no inf / nan)
_DOUBLE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


class MlipReadError(ValueError):
    """MLIP would stop (``ERROR(...)``) or its stream would fail here."""


class IStream:
    """The subset of ``std::ifstream`` that MLIP's reader uses, over a string."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def _skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _fail(self, what: str):
        line = self.text.count("\n", 0, self.pos) + 1
        near = self.text[self.pos:self.pos + 30]
        raise MlipReadError(f"line {line}: stream fails reading {what} at {near!r}")

    def word(self) -> str:
        self._skip_ws()
        start = self.pos
        while self.pos < len(self.text) and not self.text[self.pos].isspace():
            self.pos += 1
        if self.pos == start:
            self._fail("a word (end of file)")
        return self.text[start:self.pos]

    def _number(self, pattern, kind, what):
        self._skip_ws()
        m = pattern.match(self.text, self.pos)
        if not m:
            self._fail(what)
        self.pos = m.end()
        return kind(m.group(0))

    def int(self) -> int:
        return self._number(_INT, int, "an integer")

    def double(self) -> float:
        return self._number(_DOUBLE, float, "a double")

    def char(self) -> str:
        self._skip_ws()
        if self.pos >= len(self.text):
            self._fail("a character (end of file)")
        self.pos += 1
        return self.text[self.pos - 1]

    def ignore(self, n: int, delim: str | None = None) -> None:
        for _ in range(n):
            if self.pos >= len(self.text):
                return
            c = self.text[self.pos]
            self.pos += 1
            if c == delim:
                return

    def getline(self, limit: int | None = None) -> str:
        end = self.text.find("\n", self.pos)
        end = len(self.text) if end < 0 else end
        line = self.text[self.pos:end]
        if limit is not None and len(line) >= limit:
            self._fail(f"a line (longer than {limit - 1} characters)")
        self.pos = min(end + 1, len(self.text))
        return line[:-1] if line.endswith("\r") else line


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise MlipReadError(message)


def read_like_mlip(text: str) -> dict:
    """Parse ``.mtp`` text as ``MLMTPR::Load`` does; the values MLIP ends up with.

    Returns a dict: ``potential_name``, ``scaling`` (the product MLIP uses), ``species_count``,
    ``radial_basis_type``, ``min_dist``, ``max_dist``, ``radial_basis_size``,
    ``radial_funcs_count``, ``radial_coeffs`` [C, C, K, R] or None, ``alpha_moments_count``,
    ``alpha_index_basic`` [B, 4], ``alpha_index_times`` [P, 4], ``alpha_moment_mapping`` [S],
    ``species_coeffs`` [C] / ``moment_coeffs`` [S] or None.
    """
    s = IStream(text)
    _expect(s.getline(1000) == "MTP", "Can read only MTP format potentials")
    _expect(s.getline(1000) == "version = 1.1.0", 'MTP file must have version "1.1.0"')
    out: dict = {"potential_name": None, "scaling": 1.0}
    tok = s.word()
    if tok == "potential_name":
        s.ignore(2)
        out["potential_name"] = s.word()
        tok = s.word()
    if tok == "scaling":
        s.ignore(2)
        out["scaling"] = s.double()
        tok = s.word()
    _expect(tok == "species_count",
            f"Error reading .mtp file (expected species_count, got {tok!r})")
    s.ignore(2)
    c = out["species_count"] = s.int()
    tok = s.word()
    if tok == "potential_tag":
        s.getline()
        tok = s.word()
    _expect(tok == "radial_basis_type", f"Error reading .mtp file (got {tok!r})")
    s.ignore(2)
    out["radial_basis_type"] = s.word()
    _expect(out["radial_basis_type"] in ("RBChebyshev", "RBChebyshev_repuls", "RBShapeev",
                                         "RBTaylor", "RBvdW"), "Wrong radial basis type")
    # AnyRadialBasis::ReadRadialBasis
    tok = s.word()
    rb_scaling = 1.0
    if tok == "scaling":
        s.ignore(2)
        rb_scaling = s.double()
        tok = s.word()
    for key in ("min_dist", "max_dist", "radial_basis_size"):
        _expect(tok == key, f"Error reading .mtp file (expected {key}, got {tok!r})")
        s.ignore(2)
        out[key] = s.int() if key == "radial_basis_size" else s.double()
        if key != "radial_basis_size":
            tok = s.word()
    out["scaling"] *= rb_scaling
    r = out["radial_basis_size"]
    tok = s.word()
    _expect(tok == "radial_funcs_count", f"Error reading .mtp file (got {tok!r})")
    s.ignore(2)
    k = out["radial_funcs_count"] = s.int()
    tok = s.word()
    out["radial_coeffs"] = None
    if tok == "radial_coeffs":
        coeffs = np.zeros((c, c, k, r))
        for s1 in range(c):
            for s2 in range(c):
                s.int(), s.char(), s.int()  # "i-j": MLIP reads and ignores the numbers
                for i in range(k):
                    s.char()  # '{'
                    for j in range(r):
                        coeffs[s1, s2, i, j] = s.double()
                        s.char()  # ',' or '}'
        out["radial_coeffs"] = coeffs
        tok = s.word()
    _expect(tok == "alpha_moments_count", f"Error reading .mtp file (got {tok!r})")
    s.ignore(2)
    out["alpha_moments_count"] = s.int()
    for key in ("alpha_index_basic", "alpha_index_times"):
        tok = s.word()
        _expect(tok == key + "_count", f"Error reading .mtp file (got {tok!r})")
        s.ignore(2)
        count = s.int()
        tok = s.word()
        _expect(tok == key, f"Error reading .mtp file (got {tok!r})")
        s.ignore(4)
        rows = []
        for _ in range(count):
            s.ignore(1000, "{")
            row = [s.int()]
            for _ in range(3):
                s.char()
                row.append(s.int())
            rows.append(row)
        out[key] = np.asarray(rows, dtype=int).reshape(-1, 4)
        if key == "alpha_index_basic":
            radial_max = int(out[key][:, 0].max()) if count else -1
            _expect(radial_max == k - 1, "Wrong number of radial functions specified")
        s.ignore(1000, "\n")
    tok = s.word()
    _expect(tok == "alpha_scalar_moments", f"Error reading .mtp file (got {tok!r})")
    s.ignore(2)
    n_scalar = s.int()
    tok = s.word()
    _expect(tok == "alpha_moment_mapping", f"Error reading .mtp file (got {tok!r})")
    s.ignore(4)
    mapping = []
    for _ in range(n_scalar):
        mapping.append(s.int())
        s.char()
    out["alpha_moment_mapping"] = np.asarray(mapping, dtype=int)
    s.ignore(1000, "\n")
    out["species_coeffs"] = out["moment_coeffs"] = None
    s._skip_ws()
    if s.pos >= len(s.text):
        return out  # an untrained template: MLIP initialises the coefficients itself
    tok = s.word()
    if tok != "species_coeffs":
        return out
    s.ignore(4)
    species = []
    for _ in range(c):
        species.append(s.double())
        s.char()
    tok = s.word()
    _expect(tok == "moment_coeffs", "Cannot read linear coeffs")
    s.ignore(2)
    s.ignore(10, "{")
    moments = []
    for _ in range(n_scalar):
        moments.append(s.double())
        s.char()
    out["species_coeffs"] = np.asarray(species)
    out["moment_coeffs"] = np.asarray(moments)
    return out
