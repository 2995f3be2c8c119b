"""Block-wise / per-shard neighbour rows (md.neighbors) against the core's allocate()."""

import numpy as np
import pytest
from ase.build import bulk

from md.energy import load_model, local_energy_forces_virial
from md.neighbors import CellBins, MDNeighborList, build_rows, pack_rows
from mtpjax.neighbors import NeighborOverflowError, allocate


def _entries(idx, shifts, mask, row0=0):
    """Set of (i, j, S) of padded rows."""
    idx, shifts, mask = np.asarray(idx), np.asarray(shifts), np.asarray(mask)
    r, s = np.nonzero(mask)
    return {(int(a) + row0, int(idx[a, b]), *map(int, shifts[a, b])) for a, b in zip(r, s,
                                                                                     strict=True)}


def _systems():
    rng = np.random.default_rng(0)
    tiny = (np.array([[0.1, 0.2, 0.3]]), np.diag([2.1, 2.3, 2.6]))  # cell ≪ cutoff
    skewed = (rng.uniform(-3, 6, (5, 3)),  # triclinic, atoms outside the cell
              np.array([[4.0, 0, 0], [3.5, 2.0, 0], [1.5, 1.0, 3.0]]))
    prim = bulk("Si", "diamond", a=5.43).repeat((2, 2, 1))  # triclinic, heights < cutoff
    prim.positions += rng.normal(scale=0.05, size=prim.positions.shape)
    cubic = bulk("Si", "diamond", a=5.43, cubic=True).repeat((3, 3, 3))  # 216 atoms, 3³ bins
    cubic.rattle(0.05, seed=2)
    big_tri = bulk("Si", "diamond", a=5.43).repeat((6, 5, 4))  # 240 atoms, triclinic bins
    big_tri.positions += rng.normal(scale=0.3, size=big_tri.positions.shape)
    return {"tiny": tiny, "skewed": skewed,
            "primitive_2x2x1": (prim.positions, prim.cell.array),
            "cubic_216": (cubic.positions, cubic.cell.array),
            "triclinic_240": (big_tri.positions, big_tri.cell.array)}


SYSTEMS = _systems()


@pytest.mark.parametrize("name", list(SYSTEMS))
@pytest.mark.parametrize("n_shards", [1, 3])
def test_sharded_rows_match_allocate(name, n_shards):
    pos, cell = SYSTEMS[name]
    cutoff, skin = 5.0, 1.0
    ref = allocate(pos, cell, True, cutoff, skin)
    want = _entries(ref.neighbors.idx, ref.neighbors.shifts, ref.neighbors.mask)
    n = len(pos)
    shard = -(-n // n_shards)
    nl = MDNeighborList(cutoff, skin, n, n_shards, shard, capacity_multiplier=1.0, chunk=5)
    nl.build(pos, cell)
    assert nl.max_count == ref.max_count
    assert nl.capacity == ref.capacity
    assert abs(nl.shift_bound - ref.shift_bound) < 1e-12
    got = set()
    for d in range(n_shards):
        idx, shifts, mask = nl.packed(d)
        assert idx.shape == (shard, nl.capacity) and shifts.dtype == np.int8
        assert not mask[max(0, n - d * shard):].any()  # padding atoms: empty rows
        rows = _entries(idx, shifts, mask, row0=d * shard)
        assert all(d * shard <= i < (d + 1) * shard for i, *_ in rows)
        got |= rows
        # empty slots point at the row's own atom with zero shift (as the core's pack)
        r = np.arange(shard) + d * shard
        assert np.all(np.where(mask, True, idx == r[:, None]))
        assert not np.any(shifts[~mask])
    assert got == want


def test_rows_sorted_and_chunk_independent():
    pos, cell = SYSTEMS["cubic_216"]
    bins = CellBins.build(pos, cell, 6.0)
    a = build_rows(bins, 10, 200, chunk=7)
    b = build_rows(bins, 10, 200, chunk=4096)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    rows = np.repeat(np.arange(a.start, a.stop), a.counts)
    key = np.lexsort((a.shifts[:, 2], a.shifts[:, 1], a.shifts[:, 0], a.j, rows))
    assert np.array_equal(key, np.arange(len(key)))


def test_capacity_growth_and_overflow():
    pos, cell = SYSTEMS["cubic_216"]
    nl = MDNeighborList(5.0, 1.0, len(pos), 1, len(pos), capacity_multiplier=1.0)
    nl.build(pos, cell)
    cap = nl.capacity
    nl.build(pos * 0.9, cell * 0.9)  # denser: more neighbours, the buffer grows
    assert nl.capacity > cap and nl.reallocations == 1
    rows = build_rows(CellBins.build(pos * 0.9, cell * 0.9, 6.0), 0, len(pos))
    with pytest.raises(NeighborOverflowError):
        pack_rows(rows, len(pos), cap)


@pytest.mark.parametrize("masked", [False, True])
def test_chunked_force_evaluation_equals_one_pass(pot_path, masked):
    """The chunked scan (last chunk overlapping) with int8 shifts gives the one-pass numbers."""
    import jax
    import jax.numpy as jnp

    pos, cell = SYSTEMS["cubic_216"]
    _, spec, params = load_model(pot_path)
    n = len(pos)
    nl = MDNeighborList(spec.max_dist, 1.0, n, 1, n)
    nl.build(pos, cell)
    idx, shifts, mask = nl.packed(0)
    ref_nl = allocate(pos, cell, True, spec.max_dist, 1.0)
    x, c = jnp.asarray(pos), jnp.asarray(cell)
    t = jnp.zeros(n, jnp.int32)
    am = jnp.arange(n) < 200 if masked else None
    ref = local_energy_forces_virial(spec, params, x, x, c, t, t, ref_nl.neighbors, am,
                                     chunk_size=None)
    from mtpjax.potential import Neighbors

    nb = Neighbors(jnp.asarray(idx), jnp.asarray(shifts), jnp.asarray(mask))
    for chunk in (50, 72):  # 5 chunks of 44 (last overlaps by 4 rows), 3 exact chunks of 72
        out = jax.jit(lambda x, nb, chunk=chunk: local_energy_forces_virial(
            spec, params, x, x, c, t, t, nb, am, chunk_size=chunk))(x, nb)
        assert abs(float(out[0]) - float(ref[0])) < 1e-9
        for a, b in zip(out[1:], ref[1:], strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-10)


def test_simulation_forces_chunked_large_cell(pot_path):
    """10,648 atoms (> one 8192-atom evaluation chunk, per-shard rows): the MD state's forces,
    energy and virial equal the core's one-pass evaluation with allocate()'s list."""
    import jax.numpy as jnp

    from md.runner import Simulation
    from mtpjax.potential import energy_forces_virial
    from tests.md.conftest import diamond

    atoms = diamond(11, rattle=0.05, seed=4)
    sim = Simulation(pot_path, atoms, timestep_fs=1.0, temperature_K=300, skin_A=1.0)
    _, spec, params = load_model(pot_path)
    pos, cell = sim.positions(), sim.cell()
    ref_nl = allocate(pos, cell, True, spec.max_dist, 1.0)
    e, f, w = energy_forces_virial(spec, {k: jnp.asarray(v) for k, v in params.items()},
                                   jnp.asarray(pos), jnp.asarray(cell),
                                   jnp.zeros(len(pos), jnp.int32), ref_nl.neighbors)
    assert abs(float(sim.state.energy) - float(e)) < 1e-8
    np.testing.assert_allclose(sim.forces(), np.asarray(f), atol=1e-10)
    np.testing.assert_allclose(np.asarray(sim.state.virial), np.asarray(w), atol=1e-8)
