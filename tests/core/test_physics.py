"""Finite differences and invariances of energy, forces and stress."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtpjax.io.mtp_file import read_mtp
from mtpjax.model import ModelSpec
from mtpjax.neighbors import allocate
from mtpjax.padding import pad_atoms, pad_neighbors
from mtpjax.potential import energy_forces_virial, total_energy
from tests.conftest import PARITY
from tests.core.helpers import rattled_diamond


@pytest.fixture(scope="module")
def model():
    pot = read_mtp(PARITY / "species2_L16" / "pot.mtp")
    spec = ModelSpec.from_potential(pot)
    params = {k: jnp.asarray(v) for k, v in pot.params().items()}
    return pot, spec, params


def _cell_atoms(seed=0):
    atoms = rattled_diamond(repeat=1, amplitude=0.15, seed=seed)
    atoms.set_cell(
        atoms.cell.array @ np.array([[1.0, 0.05, 0.0], [0.0, 0.98, 0.04], [0, 0, 1.02]]),
        scale_atoms=True,
    )
    types = np.random.default_rng(seed).integers(0, 2, len(atoms))
    return atoms, types


def _energy(spec, params, pos, cell, types, pbc=(True, True, True)):
    nl = allocate(pos, cell, pbc, spec.cutoff)
    return float(
        total_energy(
            spec, params, jnp.asarray(pos), jnp.asarray(cell), jnp.asarray(types), nl.neighbors
        )
    )


def test_forces_match_finite_differences(model):
    pot, spec, params = model
    atoms, types = _cell_atoms()
    pos, cell = atoms.positions, atoms.cell.array
    nl = allocate(pos, cell, atoms.pbc, spec.cutoff)
    _, forces, _ = energy_forces_virial(
        spec, params, jnp.asarray(pos), jnp.asarray(cell), jnp.asarray(types), nl.neighbors
    )
    h = 1e-5
    rng = np.random.default_rng(1)
    for a in rng.choice(len(pos), 4, replace=False):
        for d in range(3):
            plus, minus = pos.copy(), pos.copy()
            plus[a, d] += h
            minus[a, d] -= h
            fd = -(
                _energy(spec, params, plus, cell, types) - _energy(spec, params, minus, cell, types)
            ) / (2 * h)
            assert abs(fd - float(forces[a, d])) < 1e-6 * max(1.0, abs(fd))


def test_stress_matches_finite_strain(model):
    pot, spec, params = model
    atoms, types = _cell_atoms(2)
    pos, cell = atoms.positions, atoms.cell.array
    nl = allocate(pos, cell, atoms.pbc, spec.cutoff)
    _, _, virial = energy_forces_virial(
        spec, params, jnp.asarray(pos), jnp.asarray(cell), jnp.asarray(types), nl.neighbors
    )
    h = 1e-6
    for a, b in [(0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2)]:
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h if a != b else h
        deform_p, deform_m = np.eye(3) + eps, np.eye(3) - eps
        ep = _energy(spec, params, pos @ deform_p, cell @ deform_p, types)
        em = _energy(spec, params, pos @ deform_m, cell @ deform_m, types)
        fd = (ep - em) / (2 * h)
        expected = float(virial[a, b]) * (2 if a != b else 1)
        assert abs(fd - expected) < 1e-5 * max(1.0, abs(expected))
    assert np.allclose(virial, np.asarray(virial).T, atol=1e-10)


def test_rotation_translation_permutation_invariance(model):
    pot, spec, params = model
    atoms, types = _cell_atoms(3)
    pos, cell = atoms.positions, atoms.cell.array
    e0 = _energy(spec, params, pos, cell, types)
    # rotation of positions and cell together
    q, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(3, 3)))
    assert abs(_energy(spec, params, pos @ q.T, cell @ q.T, types) - e0) < 1e-9
    # translation
    assert abs(_energy(spec, params, pos + np.array([0.3, -1.7, 2.2]), cell, types) - e0) < 1e-9
    # permutation
    perm = np.random.default_rng(5).permutation(len(pos))
    assert abs(_energy(spec, params, pos[perm], cell, types[perm]) - e0) < 1e-9
    # a different species assignment must change the energy (the test can fail)
    assert abs(_energy(spec, params, pos, cell, 1 - types) - e0) > 1e-3


def test_padding_invariance(model):
    pot, spec, params = model
    atoms, types = _cell_atoms(6)
    pos, cell = atoms.positions, atoms.cell.array
    nl = allocate(pos, cell, atoms.pbc, spec.cutoff)
    e0, f0, v0 = energy_forces_virial(
        spec, params, jnp.asarray(pos), jnp.asarray(cell), jnp.asarray(types), nl.neighbors
    )
    n_pad, cap = len(pos) + 5, nl.capacity + 7
    p, t, m = pad_atoms(pos, types, n_pad)
    nbrs = jax.tree.map(jnp.asarray, pad_neighbors(nl.neighbors, n_pad, cap))
    e1, f1, v1 = energy_forces_virial(
        spec,
        params,
        jnp.asarray(p),
        jnp.asarray(cell),
        jnp.asarray(t),
        nbrs,
        atom_mask=jnp.asarray(m),
    )
    assert abs(float(e1 - e0)) < 1e-10
    assert np.allclose(f1[: len(pos)], f0, atol=1e-10) and np.allclose(f1[len(pos) :], 0)
    assert np.allclose(v1, v0, atol=1e-9)


def test_energy_and_force_vanish_continuously_at_cutoff(model):
    pot, spec, params = model
    rc = spec.cutoff
    cell = np.zeros((3, 3))
    types = np.array([0, 1])
    e_iso = float(params["species_coeffs"].sum())

    def dimer(r):
        pos = np.array([[0.0, 0.0, 0.0], [r, 0.0, 0.0]])
        nl = allocate(pos, cell, False, rc)
        e, f, _ = energy_forces_virial(
            spec, params, jnp.asarray(pos), jnp.asarray(cell), jnp.asarray(types), nl.neighbors
        )
        return float(e) - e_iso, np.asarray(f)

    for delta in (1e-2, 1e-3, 1e-4):
        e, f = dimer(rc - delta)
        # radial basis ∝ (r − rc)²: energy O(δ²), force O(δ)
        assert abs(e) < 50 * delta**2 and np.abs(f).max() < 50 * delta
    e, f = dimer(rc + 1e-9)
    assert e == 0.0 and np.abs(f).max() == 0.0
    e_far, _ = dimer(rc - 0.5)
    assert abs(e_far) > 1e-6  # the pair does interact inside the cutoff
