"""Small labelled Si data sets for the fitting tests (labels from a known MTP)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from mtpjax.fit.data import Sample, precompute_neighbors
from mtpjax.io.mtp_file import read_mtp
from mtpjax.model import ModelSpec
from mtpjax.neighbors import allocate
from mtpjax.potential import energy_forces_virial


def si_cells(n: int, seed: int = 0):
    """``n`` rattled, strained diamond-Si cells of 2, 8 and 16 atoms (ASE Atoms)."""
    rng = np.random.default_rng(seed)
    prims = [bulk("Si", "diamond", a=5.43), bulk("Si", "diamond", a=5.43, cubic=True),
             bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))]
    out = []
    for k in range(n):
        atoms = prims[k % 3].copy()
        strain = np.eye(3) + rng.normal(0, 0.02, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
        out.append(atoms)
    return out


def label_with(pot, atoms_list, source="synthetic"):
    """Samples labelled by ``pot`` through the core energy/forces/virial (independent path)."""
    spec = ModelSpec.from_potential(pot)
    params = {k: jnp.asarray(v) for k, v in pot.params().items()}
    samples = []
    for n, atoms in enumerate(atoms_list):
        nl = allocate(atoms.positions, atoms.cell.array, atoms.pbc, pot.max_dist)
        e, f, v = energy_forces_virial(spec, params, jnp.asarray(atoms.positions),
                                       jnp.asarray(atoms.cell.array),
                                       jnp.zeros(len(atoms), jnp.int32), nl.neighbors)
        samples.append(Sample(positions=atoms.positions.copy(),
                              types=np.zeros(len(atoms), np.int32),
                              cell=atoms.cell.array.copy(), pbc=np.ones(3, bool),
                              energy=float(e), forces=np.asarray(f), virial=np.asarray(v),
                              source=source, index=n))
    precompute_neighbors(samples, pot.max_dist)
    return samples


@pytest.fixture(scope="session")
def pot_l08(parity_dir):
    return read_mtp(parity_dir / "si_L08" / "pot.mtp")


@pytest.fixture(scope="session")
def labelled(pot_l08):
    """12 small cells labelled by the trained level-8 Si potential."""
    return label_with(pot_l08, si_cells(12, seed=1))


@pytest.fixture(scope="session")
def template_l08(templates_dir):
    pot = read_mtp(templates_dir / "08.mtp")
    return dataclasses.replace(pot, min_dist=1.5, max_dist=5.0)


def group_rows(spec, weights):
    """Jit-compiled ``rows(radial, group) -> (A [M, P], b [M])``: the real path's rows
    (:func:`mtpjax.fit.varpro.linear_rows`, [A | r₀]) as A θ − b (b = −r₀), dense, for checks."""
    import jax

    from mtpjax.fit.varpro import linear_rows

    @jax.jit
    def rows(radial, g):
        Ar = linear_rows(spec, weights, radial, g)
        return Ar[:, :-1], -Ar[:, -1]

    return rows


def dense_lstsq(spec, weights, params, batches):
    """Reference linear least squares: the rows of every group stacked into one dense design
    matrix (:func:`group_rows`) and ``numpy.linalg.lstsq``.
    Returns (θ [P], ‖Aθ − b‖²)."""
    import jax

    rows = group_rows(spec, weights)
    As, bs = [], []
    for batch in batches:
        for k in range(batch.nbr_idx.shape[0]):
            g = jax.tree.map(lambda x, k=k: jnp.asarray(x[k]), batch)
            A, b = rows(jnp.asarray(params["radial_coeffs"]), g)
            As.append(np.asarray(A))
            bs.append(np.asarray(b))
    A, b = np.concatenate(As), np.concatenate(bs)
    theta = np.linalg.lstsq(A, b, rcond=1e-13)[0]
    return theta, float(np.sum((A @ theta - b) ** 2))
