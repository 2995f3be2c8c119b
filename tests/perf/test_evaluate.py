"""Chunked evaluation (mtpjax.evaluate) and the fast neighbour path agree with the core."""

import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from mtpjax.evaluate import build_pairs, energy_forces_virial_chunked
from mtpjax.io.mtp_file import read_mtp
from mtpjax.model import ModelSpec
from mtpjax.neighbors import allocate, pair_list
from mtpjax.potential import energy_forces_virial
from tests.conftest import PARITY


def _cell(repeat=2, rattle=0.1, seed=0, skew=0.0):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)
    cell = atoms.cell[:].copy()
    cell[1] += skew * cell[0]
    atoms.set_cell(cell, scale_atoms=True)
    rng = np.random.default_rng(seed)
    return atoms.positions + rng.normal(0.0, rattle, atoms.positions.shape), cell


@pytest.mark.parametrize("case", ["si_L16", "species2_L16"])
def test_chunked_equals_unchunked(case):
    pot = read_mtp(PARITY / case / "pot.mtp")
    spec = ModelSpec.from_potential(pot)
    params = {k: jnp.asarray(v) for k, v in pot.params().items()}
    pos, cell = _cell()
    types = np.random.default_rng(1).integers(0, pot.species_count, len(pos))
    nl = allocate(pos, cell, True, pot.max_dist)
    e0, f0, v0 = energy_forces_virial(spec, params, jnp.asarray(pos), jnp.asarray(cell),
                                      jnp.asarray(types), nl.neighbors)
    # 64 atoms in chunks of 24: three chunks, the last one padded
    e1, f1, v1 = energy_forces_virial_chunked(spec, params, pos, cell, True, types, chunk_size=24)
    assert abs(e1 - float(e0)) < 1e-9 * len(pos)
    np.testing.assert_allclose(f1, np.asarray(f0), atol=1e-10)
    np.testing.assert_allclose(v1, np.asarray(v0), atol=1e-9)
    assert np.abs(f1).max() > 0.1  # a rattled cell has real forces


def test_chunked_rejects_mismatched_pairs():
    pot = read_mtp(PARITY / "si_L08" / "pot.mtp")
    spec = ModelSpec.from_potential(pot)
    pos, cell = _cell()
    pairs = build_pairs(pos[:-1], cell, True, pot.max_dist)
    with pytest.raises(ValueError, match="63 atoms"):
        energy_forces_virial_chunked(spec, pot.params(), pos, cell, True, np.zeros(64, int),
                                     pairs=pairs)


@pytest.mark.parametrize("skew", [0.0, 0.3])
def test_matscipy_pairs_equal_ase(skew):
    pos, cell = _cell(repeat=4, rattle=0.3, seed=2, skew=skew)
    pos[:5] += 1.7 * cell[0]  # atoms outside the cell keep their own image shifts
    ase = pair_list(pos, cell, True, 5.0, method="ase")
    fast = pair_list(pos, cell, True, 5.0, method="matscipy")
    for a, b in zip(ase, fast, strict=True):
        np.testing.assert_array_equal(a, b)


def test_matscipy_refused_for_small_cells():
    pos, cell = _cell(repeat=1)
    with pytest.raises(ValueError, match="2·cutoff"):
        pair_list(pos, cell, True, 5.0, method="matscipy")
    # "auto" falls back to the exact ASE path for cells smaller than twice the cutoff
    i, _, _ = pair_list(pos, cell, True, 5.0)
    assert len(i) > 0
