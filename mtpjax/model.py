"""Static description of an MTP model that the jit-compiled functions close over.

:class:`ModelSpec` holds everything that is *not* a trainable coefficient: the basis (as
index arrays ready for gathers), radial-basis hyper-parameters and species count. It is built
once from an :class:`~mtpjax.potential_data.MTPotential` and is hashable by identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtpjax.basis import BasisSpec
from mtpjax.potential_data import MTPotential


def _monomial_table(basic: np.ndarray):
    """Unique exponent triples (a, b, c) among basic moments and each basic's index into them."""
    exps = [tuple(int(v) for v in row[1:]) for row in basic]
    unique = sorted(set(exps), key=lambda e: (sum(e), -e[0], -e[1]))
    where = {e: i for i, e in enumerate(unique)}
    return np.asarray(unique, dtype=np.int32).reshape(-1, 3), np.asarray(
        [where[e] for e in exps], dtype=np.int32
    )


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """Hyper-parameters and basis index arrays (numpy, static under ``jit``).

    Attributes:
        basis: the :class:`BasisSpec`.
        species_count: C.
        min_dist, max_dist: radial range (Å); max_dist is the cutoff.
        radial_basis_size: R.  radial_funcs_count: K (μ = 0..K−1).
        scaling: radial basis scaling.  repulsive: ``RBChebyshev_repuls`` when True.
        monomials: int [T, 3] unique exponents (a, b, c) of the basic moments.
        basic_mu: int [B] μ of each basic moment; basic_monomial: int [B] index into monomials.
        waves: list of (p, q, w, k) int/float arrays, one per dependency wave of products.
    """

    basis: BasisSpec
    species_count: int
    min_dist: float
    max_dist: float
    radial_basis_size: int
    radial_funcs_count: int
    scaling: float
    repulsive: bool
    monomials: np.ndarray
    basic_mu: np.ndarray
    basic_monomial: np.ndarray
    waves: tuple

    @classmethod
    def from_potential(cls, pot: MTPotential) -> ModelSpec:
        basis = pot.basis
        monomials, basic_monomial = _monomial_table(basis.alpha_index_basic)
        waves = tuple(
            (
                w[:, 0].astype(np.int32),
                w[:, 1].astype(np.int32),
                w[:, 2].astype(np.float64),
                w[:, 3].astype(np.int32),
            )
            for w in basis.product_waves()
        )
        return cls(
            basis=basis,
            species_count=pot.species_count,
            min_dist=float(pot.min_dist),
            max_dist=float(pot.max_dist),
            radial_basis_size=int(pot.radial_basis_size),
            radial_funcs_count=int(pot.radial_funcs_count),
            scaling=float(pot.scaling),
            repulsive=pot.radial_basis_type == "RBChebyshev_repuls",
            monomials=monomials,
            basic_mu=basis.alpha_index_basic[:, 0].astype(np.int32),
            basic_monomial=basic_monomial,
            waves=waves,
        )

    @property
    def cutoff(self) -> float:
        return self.max_dist

    @property
    def max_power(self) -> int:
        return int(self.monomials.max()) if self.monomials.size else 0
