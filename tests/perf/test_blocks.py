"""The fast paths (cache blocks, explicit reverse pass) give the generic autodiff results."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from mtpjax.io.mtp_file import read_mtp
from mtpjax.model import ModelSpec
from mtpjax.neighbors import allocate
from mtpjax.potential import (
    _site_energies_plain,
    energy_forces_virial,
    pair_vectors,
    site_energies,
)
from tests.conftest import PARITY


@pytest.fixture(scope="module")
def system():
    pot = read_mtp(PARITY / "species2_L16" / "pot.mtp")
    spec = ModelSpec.from_potential(pot)
    params = {k: jnp.asarray(v) for k, v in pot.params().items()}
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    rng = np.random.default_rng(3)
    pos = atoms.positions + rng.normal(0.0, 0.1, atoms.positions.shape)
    types = jnp.asarray(rng.integers(0, 2, len(pos)))
    nl = allocate(pos, atoms.cell[:], True, pot.max_dist)
    return spec, params, jnp.asarray(pos), jnp.asarray(atoms.cell[:]), types, nl.neighbors


def _autodiff_efv(spec, params, pos, cell, types, nb, energies=None):
    """Reference: plain JAX autodiff of the unblocked forward code (no custom derivatives)."""
    def plain(p, v, t, nt, m):
        return _site_energies_plain(spec, None, p, v, t, nt, m)

    energies = energies or plain

    def energy(x, eps):
        v = pair_vectors(x, cell, nb, 0.5 * (eps + eps.T))
        return jnp.sum(energies(params, v, types, types[nb.idx], nb.mask))
    e, (gx, ge) = jax.value_and_grad(energy, argnums=(0, 1))(pos, jnp.zeros((3, 3)))
    return e, -gx, ge


@pytest.mark.parametrize("block", [None, 7, 32])
def test_blocks_and_explicit_pass_match_autodiff(system, block):
    spec, params, pos, cell, types, nb = system
    e0, f0, v0 = _autodiff_efv(spec, params, pos, cell, types, nb)
    e1, f1, v1 = energy_forces_virial(spec, params, pos, cell, types, nb, block_size=block)
    assert abs(float(e1 - e0)) < 1e-10
    np.testing.assert_allclose(np.asarray(f1), np.asarray(f0), atol=1e-10)
    np.testing.assert_allclose(np.asarray(v1), np.asarray(v0), atol=1e-9)
    assert float(jnp.abs(f0).max()) > 0.1


def test_site_energies_custom_jvp_matches_plain(system):
    """jax.grad through site_energies (what MD code does) uses the explicit pass."""
    spec, params, pos, cell, types, nb = system

    def custom(p, v, t, nt, m):
        return site_energies(spec, p, v, t, nt, m, block_size=16)

    e0, f0, v0 = _autodiff_efv(spec, params, pos, cell, types, nb)
    e1, f1, v1 = _autodiff_efv(spec, params, pos, cell, types, nb, custom)
    assert abs(float(e1 - e0)) < 1e-10
    np.testing.assert_allclose(np.asarray(f1), np.asarray(f0), atol=1e-10)
    np.testing.assert_allclose(np.asarray(v1), np.asarray(v0), atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["explicit", "site_energies"])
def test_force_loss_gradient_wrt_params_matches(system, path):
    """Fitting differentiates forces w.r.t. coefficients: the fast paths must give the same
    second-order gradient as plain autodiff."""
    spec, params, pos, cell, types, nb = system

    def custom(p, v, t, nt, m):
        return site_energies(spec, p, v, t, nt, m, block_size=16)

    def loss_fast(p):
        if path == "explicit":
            f = energy_forces_virial(spec, p, pos, cell, types, nb, block_size=16)[1]
        else:
            f = _autodiff_efv(spec, p, pos, cell, types, nb, lambda q, *a: custom(p, *a))[1]
        return jnp.sum(f ** 2)

    def loss_autodiff(p):
        return jnp.sum(_autodiff_efv(spec, p, pos, cell, types, nb)[1] ** 2)

    g1, g0 = jax.grad(loss_fast)(params), jax.grad(loss_autodiff)(params)
    for key in ("radial_coeffs", "moment_coeffs"):
        scale = float(jnp.abs(g0[key]).max())
        assert scale > 0
        np.testing.assert_allclose(np.asarray(g1[key]), np.asarray(g0[key]),
                                   atol=1e-9 * scale)
