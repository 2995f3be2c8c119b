"""Full-precision matrix products on every backend.

On NVIDIA GPUs from Ampere on, XLA's DEFAULT precision runs float32 matrix products
(``dot_general``: the moment-tensor contractions, ``positions @ inv(cell)``) in TF32, with a
10-bit mantissa. On the H200 (docs/gpu.md, 2026-12-04) that put level-16 float32 energies
3.4×10⁻⁴ eV/atom from float64, against 7×10⁻⁷ eV/atom for float32 on a CPU. Every float32 path
of the package (MD, calculators, the jax-md energy and neighbour functions) is traced under
``jax.default_matmul_precision("highest")`` by :func:`highest_precision`; the setting is read
at trace time, so it holds inside a caller's own ``jit`` too, and it changes nothing on CPUs
or in float64. The global JAX configuration is never changed.
"""

from __future__ import annotations

import functools

import jax


def highest_precision(fn):
    """``fn`` traced with full-precision (no TF32/bf16) matrix products; same signature."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped
