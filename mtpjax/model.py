"""Static description of an MTP model that the jit-compiled functions close over.

:class:`ModelSpec` holds everything that is *not* a trainable coefficient: the basis (as
index arrays ready for gathers), radial-basis hyper-parameters and species count. It is built
once from an :class:`~mtpjax.potential_data.MTPotential` and is hashable by identity.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from mtpjax.basis import BasisSpec
from mtpjax.potential_data import MTPotential


def full_monomials(max_power: int) -> np.ndarray:
    """Every exponent triple (a, b, c) with a+b+c ≤ ``max_power``, int [T, 3], in the layered
    order of :func:`mtpjax.moments.monomial_layers` (degree ascending, then a, b descending)."""
    rows = [
        (a, b, d - a - b)
        for d in range(max_power + 1)
        for a in range(d, -1, -1)
        for b in range(d - a, -1, -1)
    ]
    return np.asarray(rows, dtype=np.int32).reshape(-1, 3)


def _layer_tables(basic: np.ndarray) -> dict:
    """Tables of the per-degree-layer moment contraction and its explicit reverse pass.

    Layer d holds the monomials of degree d (T_d = (d+1)(d+2)/2, order of
    :func:`full_monomials`) and only radial functions μ < K_d, K_d = 1 + max μ of the basic
    moments of rank d. The compact moment tensor is the concatenation over d of the flattened
    [K_d, T_d] blocks; ``basic_flat`` [B] indexes it.

    For the reverse pass with G[μ, t] = ∂E/∂(basic moment μ, t) (0 if absent), layer d needs
    [G[μ < K_d, s], G_x, G_y, G_z] with G_a[μ, s] = (s_a + 1)·G[μ, s + e_a] for μ < K_{d+1}
    (so Σ_t G[μ,t] ∂u^t/∂u_a = Σ_s G_a[μ, s] u^s). ``grad_src`` indexes the basic moments (B
    meaning zero) and ``grad_scale`` holds the factors, layer after layer, each layer's rows
    ordered (block c = 0..3, μ, s).
    """
    max_power = int(basic[:, 1:].sum(axis=1).max())
    exps = full_monomials(max_power)
    degree = exps.sum(axis=1)
    layer_start = np.concatenate([[0], np.cumsum([(d + 1) * (d + 2) // 2
                                                  for d in range(max_power + 1)])])
    where = {tuple(e): i for i, e in enumerate(exps.tolist())}
    slot = {(mu, where[(a, b, c)]): i for i, (mu, a, b, c) in enumerate(basic.tolist())}
    layer_k = [0] * (max_power + 2)
    for mu, a, b, c in basic.tolist():
        layer_k[a + b + c] = max(layer_k[a + b + c], mu + 1)
    compact_start, offset = [], 0
    for d in range(max_power + 1):
        compact_start.append(offset)
        offset += layer_k[d] * (layer_start[d + 1] - layer_start[d])
    flat = []
    for mu, a, b, c in basic.tolist():
        t = where[(a, b, c)]
        d = int(degree[t])
        flat.append(compact_start[d] + mu * (layer_start[d + 1] - layer_start[d])
                    + t - layer_start[d])
    n_basic = len(basic)
    src, scale = [], []
    for d in range(max_power + 1):
        layer = range(layer_start[d], layer_start[d + 1])
        for mu in range(layer_k[d]):
            for s in layer:
                b = slot.get((mu, s))
                src.append(n_basic if b is None else b)
                scale.append(0.0 if b is None else 1.0)
        for axis in range(3):
            for mu in range(layer_k[d + 1]):
                for s in layer:
                    up = list(exps[s])
                    up[axis] += 1
                    b = slot.get((mu, where.get(tuple(up), -1)))
                    src.append(n_basic if b is None else b)
                    scale.append(0.0 if b is None else float(up[axis]))
    return {
        "exps": exps,
        "layer_k": tuple(int(k) for k in layer_k[: max_power + 1]),
        "basic_flat": np.asarray(flat, dtype=np.int32),
        "grad_src": np.asarray(src, dtype=np.int32),
        "grad_scale": np.asarray(scale, dtype=np.float64),
    }


def _product_plan(basis: BasisSpec):
    """Product moments renumbered so that each dependency wave appends one block of rows.

    Returns (waves, scalar_rows, rows): waves is a tuple of (p int [P_w], q int [P_w],
    w float [P_w], segment int [P_w] sorted, target count U_w), with p, q indexing the rows
    computed so far and segment the new row (offset by the rows so far) each product adds to;
    scalar_rows int [S] indexes the final rows for ``alpha_moment_mapping``; rows is the number
    of rows (the last one is all zeros, for moments that no product writes).
    """
    n_basic = basis.basic_count
    new = np.full(basis.alpha_moments_count, -1, dtype=np.int64)
    new[:n_basic] = np.arange(n_basic)
    rows = n_basic
    plan = []
    for wave in basis.product_waves():
        p, q, w, k = wave[:, 0], wave[:, 1], wave[:, 2], wave[:, 3]
        targets = np.unique(k)
        local = np.searchsorted(targets, k)
        order = np.argsort(local, kind="stable")
        pp, qq = new[p[order]], new[q[order]]
        if (pp < 0).any() or (qq < 0).any():
            raise ValueError("alpha_index_times reads a moment that no earlier row computes")
        plan.append((pp.astype(np.int32), qq.astype(np.int32), w[order].astype(np.float64),
                     local[order].astype(np.int32), len(targets)))
        new[targets] = rows + np.arange(len(targets))
        rows += len(targets)
    zero_row = rows
    scalar_rows = np.where(new[basis.alpha_moment_mapping] < 0, zero_row,
                           new[basis.alpha_moment_mapping]).astype(np.int32)
    return tuple(plan), scalar_rows, rows + 1


def _row_tables(basis: BasisSpec) -> dict:
    plan, scalar_rows, rows = _product_plan(basis)
    return {"row_waves": plan, "scalar_rows": scalar_rows, "moment_rows": rows}


def _model_key(pot: MTPotential) -> tuple:
    """Everything :meth:`ModelSpec.from_potential` reads from ``pot``, as a hashable value."""
    b = pot.basis
    arrays = (b.alpha_index_basic, b.alpha_index_times, b.alpha_moment_mapping)
    return (tuple((a.shape, a.tobytes()) for a in arrays), b.alpha_moments_count, b.level,
            int(pot.species_count), float(pot.min_dist), float(pot.max_dist),
            int(pot.radial_basis_size), int(pot.radial_funcs_count), float(pot.scaling),
            pot.radial_basis_type)


# the live specs by model (entries go when no potential, calculator or cache holds them)
_SPECS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """Hyper-parameters and basis index arrays (numpy, static under ``jit``).

    Attributes:
        basis: the :class:`BasisSpec`.
        species_count: C.
        min_dist, max_dist: radial range (Å); max_dist is the cutoff.
        radial_basis_size: R.  radial_funcs_count: K (μ = 0..K−1).
        scaling: radial basis scaling.  repulsive: ``RBChebyshev_repuls`` when True.
        exps: int [T, 3] every monomial of degree ≤ max_power (:func:`full_monomials`).
        layer_k: K_d, radial functions used with the monomials of degree d.
        basic_flat, grad_src, grad_scale: index tables of the layered moment contraction and
            its explicit reverse pass (:func:`_layer_tables`).
        row_waves, scalar_rows, moment_rows: the product DAG in row form (:func:`_product_plan`).
    """

    basis: BasisSpec
    species_count: int
    min_dist: float
    max_dist: float
    radial_basis_size: int
    radial_funcs_count: int
    scaling: float
    repulsive: bool
    exps: np.ndarray
    layer_k: tuple
    basic_flat: np.ndarray
    grad_src: np.ndarray
    grad_scale: np.ndarray
    row_waves: tuple
    scalar_rows: np.ndarray
    moment_rows: int

    @classmethod
    def from_potential(cls, pot: MTPotential) -> ModelSpec:
        """The spec of ``pot``'s model: one instance per distinct model in a process.

        Potentials with the same basis and hyper-parameters (whatever their coefficients) get
        the same object. A spec is static under ``jit`` and hashed by identity, so everything
        compiled for it (fits, calculators, grades) is reused by every later potential of the
        same model instead of being compiled again."""
        key = _model_key(pot)
        spec = _SPECS.get(key)
        if spec is None:
            basis = pot.basis
            spec = cls(
                basis=basis,
                species_count=pot.species_count,
                min_dist=float(pot.min_dist),
                max_dist=float(pot.max_dist),
                radial_basis_size=int(pot.radial_basis_size),
                radial_funcs_count=int(pot.radial_funcs_count),
                scaling=float(pot.scaling),
                repulsive=pot.radial_basis_type == "RBChebyshev_repuls",
                **_layer_tables(basis.alpha_index_basic),
                **_row_tables(basis),
            )
            _SPECS[key] = spec
        return spec

    @property
    def cutoff(self) -> float:
        return self.max_dist

    @property
    def max_power(self) -> int:
        """Largest monomial degree a+b+c of the basic moments."""
        return int(self.exps.sum(axis=1).max())
