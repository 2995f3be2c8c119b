"""Shared helpers for core tests: parity references and batched evaluation."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from ase.build import bulk

from mtpjax.io.mtp_file import read_mtp
from mtpjax.model import ModelSpec
from mtpjax.neighbors import allocate
from mtpjax.padding import pad_atoms, pad_neighbors
from mtpjax.potential import energy_forces_virial
from tests.conftest import PARITY


def load_case(case: str):
    pot = read_mtp(PARITY / case / "pot.mtp")
    ref = np.load(PARITY / case / "reference.npz")
    frames = []
    for k in range(int(ref["count"])):
        frames.append(
            {
                "positions": ref[f"positions_{k}"],
                "cell": ref[f"cell_{k}"],
                "pbc": ref[f"pbc_{k}"].astype(bool),
                "types": ref[f"types_{k}"],
                "energy": float(ref[f"energy_{k}"]),
                "forces": ref[f"forces_{k}"],
                "stress": ref[f"stress_{k}"] if f"stress_{k}" in ref else None,
            }
        )
    return pot, frames


def evaluate_batch(pot, frames):
    """Energy (eV), forces [N,3] (eV/Å), virial [3,3] (eV) per frame, one compile for all."""
    spec = ModelSpec.from_potential(pot)
    params = {k: jnp.asarray(v) for k, v in pot.params().items()}
    nls = [allocate(f["positions"], f["cell"], f["pbc"], pot.max_dist) for f in frames]
    n_pad = max(len(f["positions"]) for f in frames)
    cap = max(nl.capacity for nl in nls)
    batch = []
    for f, nl in zip(frames, nls, strict=True):
        pos, typ, mask = pad_atoms(f["positions"], f["types"], n_pad)
        batch.append(
            (pos, np.asarray(f["cell"], float), typ, pad_neighbors(nl.neighbors, n_pad, cap), mask)
        )
    stacked = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *batch)
    fn = jax.jit(jax.vmap(partial(energy_forces_virial, spec, params)))
    e, f, v = fn(*stacked)
    return [
        (float(e[k]), np.asarray(f[k][: len(fr["positions"])]), np.asarray(v[k]))
        for k, fr in enumerate(frames)
    ]


def voigt(m):
    return np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]])


def rattled_diamond(repeat=2, amplitude=0.1, seed=0, a=5.43):
    atoms = bulk("Si", "diamond", a=a, cubic=True).repeat(repeat)
    atoms.rattle(amplitude, seed=seed)
    return atoms
