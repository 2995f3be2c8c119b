"""The on-device cell list (mtpjax.cell_list) against the exact host builder (ASE)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from mtpjax import cell_list
from mtpjax.neighbors import pair_list

CUTOFF, SKIN = 5.0, 1.0


def _host(pos, cell, reach):
    i, j, S = pair_list(pos, cell, True, reach, method="ase")
    return {(int(a), int(b), *map(int, s)) for a, b, s in zip(i, j, S, strict=True)}


def _entries(nl, row0=0):
    idx, shifts, mask = (np.asarray(a) for a in (nl.idx, nl.shifts, nl.mask))
    r, s = np.nonzero(mask)
    return {(int(a) + row0, int(idx[a, b]), *map(int, shifts[a, b]))
            for a, b in zip(r, s, strict=True)}


def _systems():
    rng = np.random.default_rng(0)
    out = {
        "tiny": (np.array([[0.1, 0.2, 0.3]]), np.diag([2.1, 2.3, 2.6])),  # cell ≪ cutoff
        "skewed": (rng.uniform(-3, 6, (5, 3)),  # triclinic, atoms outside the cell
                   np.array([[4.0, 0, 0], [3.5, 2.0, 0], [1.5, 1.0, 3.0]])),
    }
    prim = bulk("Si", "diamond", a=5.43).repeat((2, 2, 1))  # triclinic, heights < cutoff
    prim.positions += rng.normal(scale=0.05, size=prim.positions.shape)
    out["primitive_2x2x1"] = (prim.positions, prim.cell.array)
    cubic = bulk("Si", "diamond", a=5.43, cubic=True).repeat(3)
    cubic.rattle(0.05, seed=2)
    out["cubic_216"] = (cubic.positions, cubic.cell.array)
    tri = bulk("Si", "diamond", a=5.43).repeat((6, 5, 4))  # 240 atoms, triclinic bins
    tri.positions += rng.normal(scale=0.3, size=tri.positions.shape)
    out["triclinic_240"] = (tri.positions, tri.cell.array)
    # random gas-like positions, unwrapped by several cells
    box = np.array([[13.0, 0.0, 0.0], [2.0, 14.0, 0.0], [-1.5, 3.0, 15.0]])
    out["random_unwrapped"] = (rng.uniform(-2, 3, (300, 3)) @ box, box)
    # compressed by 12 %: denser rows, bins thinner than the reach for the original spec
    big = bulk("Si", "diamond", a=5.43, cubic=True).repeat(4)
    big.rattle(0.1, seed=4)
    big.set_cell(big.cell.array * 0.88, scale_atoms=True)
    out["compressed_512"] = (big.positions, big.cell.array)
    return out


SYSTEMS = _systems()


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_rows_equal_host_builder(name):
    pos, cell = SYSTEMS[name]
    spec = cell_list.plan(pos, cell, CUTOFF, SKIN, capacity_multiplier=1.0, chunk=37)
    with jax.enable_x64(True):
        nl = cell_list.allocate(spec, pos, cell)
    want = _host(pos, cell, CUTOFF + SKIN)
    assert not bool(nl.did_buffer_overflow)
    assert _entries(nl) == want
    counts = np.bincount([e[0] for e in want], minlength=len(pos))
    assert int(nl.max_count) == counts.max() == spec.capacity
    assert nl.shifts.dtype == jnp.int8 and nl.idx.dtype == jnp.int32


def test_two_species_and_block_rows():
    """Rows of a block of central atoms (a device's shard) against all atoms; species do not
    enter the list, the padding atoms (≥ n_real) are never neighbours."""
    pos, cell = SYSTEMS["triclinic_240"]
    want = _host(pos, cell, CUTOFF + SKIN)
    spec = cell_list.plan(pos, cell, CUTOFF, SKIN, chunk=16)
    padded = np.concatenate([pos, np.zeros((8, 3))])  # 8 padding atoms at the origin
    with jax.enable_x64(True):
        for start, count in [(0, 61), (61, 61), (183, 65)]:
            nl = jax.jit(cell_list.build, static_argnums=(0, 4, 6))(
                spec, jnp.asarray(padded), jnp.asarray(cell), start, count, 0, len(pos))
            got = _entries(nl, row0=start)
            assert got == {e for e in want if start <= e[0] < start + count}
            assert not np.asarray(nl.mask)[max(0, len(pos) - start):].any()


def test_overflow_flags_instead_of_truncation():
    pos, cell = SYSTEMS["cubic_216"]
    spec = cell_list.plan(pos, cell, CUTOFF, SKIN, capacity_multiplier=1.0)
    small = cell_list.CellListSpec(spec.cutoff, spec.skin, spec.nb, spec.m, spec.bin_capacity,
                                   spec.capacity - 3)
    with jax.enable_x64(True):
        nl = cell_list.allocate(small, pos, cell)
        assert bool(nl.did_buffer_overflow) and int(nl.max_count) == spec.capacity
        grown = cell_list.grow(small, nl)
        assert grown.capacity >= spec.capacity
        assert _entries(cell_list.allocate(grown, pos, cell)) == _host(pos, cell, 6.0)
        # a bin that holds too many atoms
        tight = cell_list.CellListSpec(spec.cutoff, spec.skin, spec.nb, spec.m, 2,
                                       spec.capacity)
        assert bool(cell_list.allocate(tight, pos, cell).did_buffer_overflow)
        # a cell compressed below the bin grid's reach: flagged, and grow re-bins it
        squeezed = cell * 0.7
        nl = cell_list.allocate(spec, pos @ np.linalg.inv(cell) @ squeezed, squeezed)
        assert bool(nl.did_buffer_overflow)
        regrid = cell_list.grow(spec, nl, cell=squeezed)
        nl = cell_list.allocate(regrid, pos @ np.linalg.inv(cell) @ squeezed, squeezed)
        assert not bool(nl.did_buffer_overflow)
        assert _entries(nl) == _host(pos @ np.linalg.inv(cell) @ squeezed, squeezed, 6.0)


def test_staleness_in_scaled_coordinates():
    """A homogeneous compression uses the skin through σ_min only; displacements count twice."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(4)
    pos, cell = atoms.positions, atoms.cell.array
    spec = cell_list.plan(pos, cell, CUTOFF, SKIN)
    with jax.enable_x64(True):
        nl = cell_list.allocate(spec, pos, cell)

        def stale(p, c):
            return bool(cell_list.is_stale(nl, jnp.asarray(p), jnp.asarray(c)))

        assert not stale(pos, cell)
        # 15 % linear compression: 0.85 · 6 = 5.1 > 5 Å: still exact (a Cartesian test would
        # see 2 Å displacements at the box edge)
        assert not stale(pos * 0.85, cell * 0.85)
        assert stale(pos * 0.83, cell * 0.83)  # 0.83 · 6 = 4.98 < 5
        moved = pos.copy()
        moved[5] += [0.49, 0, 0]
        assert not stale(moved, cell)
        moved[5] += [0.02, 0, 0]
        assert stale(moved, cell)
        # a whole-cell jump (wrapped atom) is not a displacement
        wrapped = pos.copy()
        wrapped[7] += cell[1]
        assert not stale(wrapped, cell)
        # the exact list at the compressed geometry is a subset of the kept rows
        squeezed = cell * 0.85
        want = {e for e in _host(pos * 0.85, squeezed, CUTOFF)}
        assert want <= _entries(nl)


def test_update_rebuilds_only_when_stale_and_repad():
    pos, cell = SYSTEMS["cubic_216"]
    spec = cell_list.plan(pos, cell, CUTOFF, SKIN)
    with jax.enable_x64(True):
        nl = cell_list.allocate(spec, pos, cell)
        update = jax.jit(cell_list.update)
        same = update(nl, jnp.asarray(pos + 0.1), jnp.asarray(cell))
        assert int(same.rebuilds) == 0
        rng = np.random.default_rng(1)
        far = pos + rng.normal(scale=0.6, size=pos.shape)
        new = update(nl, jnp.asarray(far), jnp.asarray(cell))
        assert int(new.rebuilds) == 1 and _entries(new) == _host(far, cell, 6.0)
        bigger = cell_list.CellListSpec(spec.cutoff, spec.skin, spec.nb, spec.m,
                                        spec.bin_capacity, spec.capacity + 7)
        padded = cell_list.repad(nl, bigger)
        assert padded.idx.shape == (len(pos), spec.capacity + 7)
        assert _entries(padded) == _entries(nl)


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError, match="singular"):
        cell_list.plan(np.zeros((2, 3)), np.zeros((3, 3)), CUTOFF, SKIN)
    with pytest.raises(ValueError, match="NaN"):
        cell_list.plan(np.full((2, 3), np.nan), np.eye(3) * 10, CUTOFF, SKIN)
