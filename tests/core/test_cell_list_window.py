"""The cell list's bin window (mtpjax.cell_list.build(window=...), used by md/domain.py):
binning only a domain and its halo gives the same rows, in the same order, as the
whole-cell bin table, and an atom outside the window is an overflow, never a silent miss."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from md.domain import DomainSpec, bin_window_size
from mtpjax import cell_list

CUTOFF, SKIN = 5.0, 1.0


def _domain_and_halo(p: int, k: int, seed: int = 0):
    """Random atoms in a long sheared cell; the local atoms of domain k of p slabs along
    lattice vector 0 (its atoms first, then those within the reach of it), their cell and
    the list spec of the whole cell."""
    rng = np.random.default_rng(seed)
    cell = np.array([[90.0, 0.0, 0.0], [2.0, 13.0, 0.0], [-1.5, 1.0, 12.0]])
    s = rng.random((1500, 3))
    spec = cell_list.plan(s @ cell, cell, CUTOFF, SKIN)
    w = spec.reach / cell_list.cell_heights(cell)[0]
    lo, hi = k / p, (k + 1) / p
    own = (s[:, 0] >= lo) & (s[:, 0] < hi)
    halo = ~own & (((s[:, 0] - (lo - w)) % 1.0) < (hi - lo + 2 * w))
    local = np.concatenate([s[own], s[halo]]) @ cell
    return local, int(own.sum()), cell, spec


def test_window_rows_equal_whole_cell_rows():
    p = 6
    for k in (0, 5):  # the domains at both periodic ends (windows that wrap)
        x, n_own, cell, spec = _domain_and_halo(p, k)
        dspec = DomainSpec((p, 1, 1), spec, n_own, (1, 0, 0), 1)
        size = bin_window_size(dspec)
        assert size[0] < spec.nb[0] and size[1:] == spec.nb[1:]  # a real reduction
        w = spec.reach / cell_list.cell_heights(cell)[0]
        origin = np.array([(math.floor((k / p - w) * spec.nb[0]) - 1) % spec.nb[0], 0, 0])
        build = jax.jit(cell_list.build, static_argnums=(0, 4))
        with jax.enable_x64(True):
            whole = build(spec, jnp.asarray(x), jnp.asarray(cell), 0, n_own)
            windowed = jax.jit(lambda x, c, o, spec=spec, n=n_own, size=size:
                               cell_list.build(spec, x, c, 0, n, window=(o, size)))
            part = windowed(jnp.asarray(x), jnp.asarray(cell), jnp.asarray(origin, jnp.int32))
        assert not bool(whole.did_buffer_overflow) and not bool(part.did_buffer_overflow)
        assert int(np.asarray(whole.mask).sum()) > 20 * n_own
        for name in ("idx", "shifts", "mask", "max_count", "max_bin_count"):
            assert np.array_equal(np.asarray(getattr(whole, name)),
                                  np.asarray(getattr(part, name))), (k, name)


def test_atom_outside_the_window_overflows():
    x, n_own, cell, spec = _domain_and_halo(6, 2)
    size = (2, spec.nb[1], spec.nb[2])  # too narrow for the halo
    with jax.enable_x64(True):
        nl = cell_list.build(spec, jnp.asarray(x), jnp.asarray(cell), 0, n_own,
                             window=(jnp.asarray([3, 0, 0], jnp.int32), size))
    assert bool(nl.did_buffer_overflow)
