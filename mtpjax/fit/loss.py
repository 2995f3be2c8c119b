"""The fitting loss: weighted squared errors of energies, forces and stresses (pure functions).

For configuration c with N_c atoms, per-configuration weight ω_c and reference labels (hats)::

    L = Σ_c ω_c [ w_E (E_c − Ê_c)² / N_c^{p_E}
                + w_F Σ_{i∈c} |F_i − F̂_i|² / N_c^{p_F}
                + w_S ‖V_c − V̂_c‖²_F / N_c^{p_S} ]

with the virial V = ∂E/∂ε (eV, 3×3, = −MLIP PlusStress = ASE stress × volume) and MLIP's
``--weighting`` conventions (read from MLIP-2's ``NonLinearRegression``/``MTPR_trainer``):

==============  ======  ======  ======  ==============================================
weighting        p_E     p_F     p_S    meaning
==============  ======  ======  ======  ==============================================
vibrations (*)    1       0       1     energy error per atom, times N (mlp default)
molecules         0       0       0     total-energy error: large cells count more
structures        2       1       2     per-atom errors: every configuration counts once
==============  ======  ======  ======  ==============================================

so "energy per atom" is ``structures`` (w_E (ΔE/N)²) and "total energy" is ``molecules``.
Default weights w_E : w_F : w_S = 1 : 0.01 : 0.001 as ``mlp train``; the paper's
1 : 0.1 : 0.001 is ``--force-weight 0.1``. A configuration without a stress (or energy, or
force) label simply contributes no such term.

Batches are :class:`mtpjax.fit.data.Batch` es: groups of whole configurations concatenated
along the atom axis, so one energy/force/virial pass evaluates a whole group (faster than a
``vmap`` over padded configurations on CPU, see ``benchmarks/bench_train.py``). Forces are
−∂E/∂x and each configuration's virial is ∂E/∂ε_c for a per-configuration strain ε_c.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp

from mtpjax.fit.data import Batch
from mtpjax.model import ModelSpec
from mtpjax.potential import site_energies

WEIGHTING_EXPONENTS = {
    "vibrations": (1.0, 0.0, 1.0),
    "molecules": (0.0, 0.0, 0.0),
    "structures": (2.0, 1.0, 2.0),
}


@dataclass(frozen=True)
class LossWeights:
    """w_E, w_F, w_S and the size convention (see module docstring)."""

    energy: float = 1.0
    forces: float = 0.01
    stress: float = 0.001
    weighting: str = "vibrations"

    def __post_init__(self):
        if self.weighting not in WEIGHTING_EXPONENTS:
            raise ValueError(
                f"weighting must be one of {sorted(WEIGHTING_EXPONENTS)}, got {self.weighting!r}"
            )
        for name in ("energy", "forces", "stress"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} weight must be ≥ 0, got {getattr(self, name)}")

    @property
    def exponents(self) -> tuple[float, float, float]:
        return WEIGHTING_EXPONENTS[self.weighting]


def predict_group(spec: ModelSpec, params, g: Batch, virials: bool = True,
                  block_size="auto"):
    """Energies [C] (eV), forces [A, 3] (eV/Å) and virials [C, 3, 3] (eV) of one group.

    ``virials`` False (static): no strain is differentiated and the virials are None — the
    same energies and forces for less work (a fit whose stress weight is 0 needs no virials;
    in VarPro's Jacobian passes every tangent would carry the strain's reverse pass).
    ``block_size``: atoms per block of :func:`mtpjax.potential.site_energies` (the values do
    not depend on it; the Jacobian passes pick a smaller one than the default).
    """
    C = g.energy.shape[0]
    dtype = g.positions.dtype
    params = jax.tree.map(jnp.asarray, params)
    types = g.types

    def energies_of(disp):
        e = site_energies(spec, params, disp, types, types[g.nbr_idx], g.nbr_mask, block_size)
        e = jnp.where(g.atom_mask, e, 0.0)
        energies = jax.ops.segment_sum(e, g.atom_conf, num_segments=C + 1)[:C]
        return jnp.sum(energies), energies

    def displacements(positions):
        return positions[g.nbr_idx] - positions[:, None, :] + g.offsets

    if not virials:
        (_, energies), grad_pos = jax.value_and_grad(
            lambda x: energies_of(displacements(x)), has_aux=True)(g.positions)
        return energies, -grad_pos, None

    def total(positions, strain):
        sym = 0.5 * (strain + jnp.swapaxes(strain, -1, -2))  # [C+1, 3, 3]
        disp = displacements(positions)
        return energies_of(disp + jnp.einsum("ajb,abc->ajc", disp, sym[g.atom_conf]))

    # built from the group's data (not jnp.zeros) so that, under shard_map, the strain varies
    # over devices like the data: the gradient of a device-invariant value would be psum-ed
    strain = jnp.pad(jnp.zeros_like(g.virial), ((0, 1), (0, 0), (0, 0))).astype(dtype)
    (_, energies), (grad_pos, grad_strain) = jax.value_and_grad(
        total, argnums=(0, 1), has_aux=True)(g.positions, strain)
    return energies, -grad_pos, grad_strain[:C]


def row_weights(weights: LossWeights, g: Batch, factors=None):
    """Loss weight of each residual row of one group, ``f · ω_c / N_c^p`` (ω_c the
    configuration's weight, p the size exponent; 0 on a missing label or an empty slot):
    energies [C], forces [A] (of the atom's configuration), virials [C]. ``factors``
    (f_E, f_F, f_S): default (w_E, w_F, w_S) of ``weights``; (1, 1, 1) gives the unweighted
    part losses of :func:`group_terms`. The one definition of the loss weighting."""
    fE, fF, fS = (weights.energy, weights.forces, weights.stress) if factors is None \
        else factors
    pE, pF, pS = weights.exponents
    n = g.n_atoms
    conf = jnp.minimum(g.atom_conf, n.shape[0] - 1)
    w_atom = jnp.where(g.atom_mask, g.weight[conf], 0.0)
    return (fE * g.weight / n**pE * g.has_energy, fF * w_atom / n[conf] ** pF * g.has_forces,
            fS * g.weight / n**pS * g.has_stress)


def residual_scales(weights: LossWeights, g: Batch):
    """√weights of the residual rows of one group (:func:`row_weights`): energies [C],
    forces [A], virials [C]."""
    return tuple(jnp.sqrt(w) for w in row_weights(weights, g))


def group_residuals(spec: ModelSpec, weights: LossWeights, params, g: Batch,
                    block_size="auto"):
    """Weighted residuals r of one group, with ‖r‖² = the group's loss (:func:`group_terms`).

    Rows: energies [C], then forces [3A], then virials [9C]; a part whose weight is 0 is left
    out (static), so the row count is C·[w_E>0] + 3A·[w_F>0] + 9C·[w_S>0]. ``block_size``: as
    for :func:`predict_group`.
    """
    E, F, V = predict_group(spec, params, g, virials=weights.stress > 0, block_size=block_size)
    sE, sF, sS = residual_scales(weights, g)
    parts = []
    if weights.energy > 0:
        parts.append(sE * (E - g.energy))
    if weights.forces > 0:
        parts.append((sF[:, None] * (F - g.forces)).reshape(-1))
    if weights.stress > 0:
        parts.append((sS[:, None, None] * (V - g.virial)).reshape(-1))
    if not parts:
        return jnp.zeros(1, E.dtype)
    return jnp.concatenate(parts)


def group_terms(spec: ModelSpec, weights: LossWeights, params, g: Batch) -> dict:
    """Loss parts and error sums of one group (all scalars)."""
    energies, forces, virials = predict_group(spec, params, g)
    n = g.n_atoms
    de = jnp.where(g.has_energy, energies - g.energy, 0.0)
    df2 = jnp.where(g.has_forces, jnp.sum((forces - g.forces) ** 2, -1), 0.0)
    ds2 = jnp.where(g.has_stress, jnp.sum((virials - g.virial) ** 2, (-1, -2)), 0.0)

    wE, wF, wS = row_weights(weights, g, (1.0, 1.0, 1.0))
    e_loss = jnp.sum(wE * de**2)
    f_loss = jnp.sum(wF * df2)
    s_loss = jnp.sum(wS * ds2)
    loss = weights.energy * e_loss + weights.forces * f_loss + weights.stress * s_loss
    real = g.weight > 0  # empty slots have weight 0
    return {
        "loss": loss,
        "energy_loss": e_loss,
        "force_loss": f_loss,
        "stress_loss": s_loss,
        # error statistics (per-atom energies, force components, virial per atom)
        "energy_abs_sum": jnp.sum(jnp.where(real, jnp.abs(de) / n, 0.0)),
        "energy_sq_sum": jnp.sum(jnp.where(real, (de / n) ** 2, 0.0)),
        "energy_count": jnp.sum(real & g.has_energy).astype(energies.dtype),
        "force_sq_sum": jnp.sum(jnp.where(wF > 0, df2, 0.0)),  # (labelled atoms of weight > 0)
        "force_count": 3.0 * jnp.sum(wF > 0).astype(energies.dtype),
        "stress_sq_sum": jnp.sum(jnp.where(real, ds2 / n**2, 0.0)),
        "stress_count": 9.0 * jnp.sum(real & g.has_stress).astype(energies.dtype),
    }


def batch_terms(spec: ModelSpec, weights: LossWeights, params, batch: Batch) -> dict:
    """Sum of :func:`group_terms` over the G groups (sequential ``lax.map``: bounded memory)."""
    per_group = jax.lax.map(lambda g: group_terms(spec, weights, params, g), batch)
    return jax.tree.map(lambda x: jnp.sum(x, axis=0), per_group)


def dataset_terms(spec: ModelSpec, weights: LossWeights, params, batches) -> dict:
    """Sum over a sequence of batches (one per shape bucket)."""
    parts = [batch_terms(spec, weights, params, b) for b in batches]
    return jax.tree.map(lambda *x: sum(x), *parts)


def summarize(terms: dict) -> dict:
    """Error metrics from summed terms: energy MAE/RMSE (eV/atom), force RMSE (eV/Å), ..."""
    out = {"loss": float(terms["loss"])}
    ne, nf, ns = (float(terms[k]) for k in ("energy_count", "force_count", "stress_count"))
    if ne:
        out["energy_mae"] = float(terms["energy_abs_sum"]) / ne
        out["energy_rmse"] = (float(terms["energy_sq_sum"]) / ne) ** 0.5
    if nf:
        out["force_rmse"] = (float(terms["force_sq_sum"]) / nf) ** 0.5
    if ns:
        out["virial_rmse"] = (float(terms["stress_sq_sum"]) / ns) ** 0.5
    return out


@lru_cache(maxsize=32)  # one set of compiled functions per (model, weights, mesh)
def make_loss_fn(spec: ModelSpec, weights: LossWeights, mesh=None, axis: str = "data"):
    """``(loss_fn, terms_fn)`` over a tuple of batches, optionally data-parallel.

    With a :class:`jax.sharding.Mesh`, the group axis G of every batch is split over the mesh
    axis ``axis`` (``shard_map``); each device evaluates its own groups, takes the gradient of
    its partial loss, and partial sums and gradients are reduced with ``psum``. ``loss_fn`` is
    a ``custom_vjp`` whose backward pass returns that all-reduced gradient, so
    ``jax.grad``/optax line searches work on it unchanged.
    """

    def local_terms(params, batches):
        return dataset_terms(spec, weights, params, batches)

    if mesh is None:

        def loss_fn(params, batches):
            return local_terms(params, batches)["loss"]

        return loss_fn, local_terms

    from jax.sharding import PartitionSpec as P

    def smap(fn, params, batches):
        in_specs = (jax.tree.map(lambda _: P(), params), jax.tree.map(lambda _: P(axis), batches))
        # check_vma=False: no autodiff crosses the shard_map boundary (gradients are taken
        # per device inside it and reduced explicitly), so replication typing is not needed
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P(),
                             check_vma=False)(params, batches)

    def terms_fn(params, batches):
        return smap(lambda p, b: jax.lax.psum(local_terms(p, b), axis), params, batches)

    def local_value_and_grad(params, batches):
        def f(p):
            t = local_terms(p, batches)
            return t["loss"], t

        (_, terms), grad = jax.value_and_grad(f, has_aux=True)(params)
        return jax.lax.psum((terms, grad), axis)  # the gradient all-reduce

    @jax.custom_vjp
    def loss_fn(params, batches):
        return terms_fn(params, batches)["loss"]

    def fwd(params, batches):
        terms, grad = smap(local_value_and_grad, params, batches)
        return terms["loss"], grad

    def bwd(grad, ct):
        return jax.tree.map(lambda g: ct * g, grad), None

    loss_fn.defvjp(fwd, bwd)
    return loss_fn, terms_fn
