"""Plain container of an MTP's hyper-parameters and coefficients (numpy, no JAX)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from mtpjax.basis import BasisSpec

RADIAL_BASIS_TYPES = ("RBChebyshev", "RBChebyshev_repuls")


@dataclass(eq=False)
class MTPotential:
    """An MTP as stored in an MLIP-2 ``.mtp`` file (``version = 1.1.0``).

    Attributes:
        basis: the moment-tensor basis.
        species_count: number of species C (MLIP type indices 0..C-1).
        min_dist, max_dist: radial basis range (Å); max_dist is the cutoff.
        radial_basis_size: R, number of Chebyshev functions.
        radial_funcs_count: K, number of radial functions f_μ.
        scaling: factor applied to the radial basis (dimensionless).
        radial_coeffs: float [C, C, K, R], block (central type, neighbour type).
        species_coeffs: float [C] (eV), per-species constant site energy.
        moment_coeffs: float [S] (eV), coefficient of each scalar basis function.
    """

    basis: BasisSpec
    species_count: int
    min_dist: float
    max_dist: float
    radial_basis_size: int = 8
    radial_funcs_count: int = 1
    radial_basis_type: str = "RBChebyshev"
    scaling: float = 1.0
    radial_coeffs: np.ndarray | None = None
    species_coeffs: np.ndarray | None = None
    moment_coeffs: np.ndarray | None = None
    potential_name: str = "MTP1m"
    potential_tag: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.radial_basis_type not in RADIAL_BASIS_TYPES:
            raise ValueError(
                f"radial_basis_type {self.radial_basis_type!r} not supported "
                f"(supported: {', '.join(RADIAL_BASIS_TYPES)})"
            )
        if self.species_count < 1:
            raise ValueError("species_count must be ≥ 1")
        if not (0 <= self.min_dist < self.max_dist):
            raise ValueError(f"need 0 ≤ min_dist < max_dist, got {self.min_dist}, {self.max_dist}")
        if self.radial_basis_size < 2:
            raise ValueError("radial_basis_size must be ≥ 2")
        if self.radial_funcs_count < self.basis.radial_funcs_needed:
            raise ValueError(
                f"radial_funcs_count = {self.radial_funcs_count} but the basis uses "
                f"μ up to {self.basis.radial_funcs_needed - 1}"
            )
        C, K, R = self.species_count, self.radial_funcs_count, self.radial_basis_size
        shapes = {
            "radial_coeffs": (C, C, K, R),
            "species_coeffs": (C,),
            "moment_coeffs": (self.basis.scalar_count,),
        }
        for name, shape in shapes.items():
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value, dtype=np.float64)
            if value.shape != shape:
                raise ValueError(f"{name} has shape {value.shape}, expected {shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name} contains NaN or infinite values")
            setattr(self, name, value)

    @property
    def is_trained(self) -> bool:
        return all(
            v is not None for v in (self.radial_coeffs, self.species_coeffs, self.moment_coeffs)
        )

    @property
    def cutoff(self) -> float:
        return float(self.max_dist)

    def with_params(self, params: dict) -> MTPotential:
        """Copy with coefficients taken from a parameter pytree (see :mod:`mtpjax.params`)."""
        return replace(
            self,
            radial_coeffs=np.asarray(params["radial_coeffs"], dtype=np.float64),
            species_coeffs=np.asarray(params["species_coeffs"], dtype=np.float64),
            moment_coeffs=np.asarray(params["moment_coeffs"], dtype=np.float64),
            scaling=float(params.get("scaling", self.scaling)),
        )

    def params(self) -> dict:
        """Coefficients as a dict of numpy arrays (a JAX pytree)."""
        if not self.is_trained:
            raise ValueError("potential has no coefficients (untrained template)")
        return {
            "radial_coeffs": self.radial_coeffs,
            "species_coeffs": self.species_coeffs,
            "moment_coeffs": self.moment_coeffs,
        }
