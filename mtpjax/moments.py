"""Moment tensors from neighbour vectors (SPEC §2).

Basic moments m_i = Σ_j f_μ(r_ij) u_x^a u_y^b u_z^c with u = r_ij / |r_ij|, computed per
monomial degree layer (:func:`monomial_layers`, :func:`moment_tensor`) with an explicit reverse
pass (:func:`pair_adjoints`); products m_k += w m_p m_q are applied wave by wave in row form
(:func:`moment_rows`; every row of a wave only reads finished moments).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtpjax.model import ModelSpec


def moment_rows(spec: ModelSpec, basic_rows):
    """All moments in row form, float [moment_rows, N], from basic moments [B, N].

    Each dependency wave gathers its factor rows, multiplies and sums the products into one new
    block of rows (``segment_sum``); atoms are the contiguous minor axis, so gathers, sums and
    their reverse-mode transposes move whole rows. Row order: :func:`mtpjax.model._product_plan`.
    """
    m = basic_rows
    dtype = basic_rows.dtype
    for p, q, w, seg, count in spec.row_waves:
        contrib = m[p] * m[q] * w.astype(dtype)[:, None]
        new = jax.ops.segment_sum(contrib, seg, num_segments=count, indices_are_sorted=True)
        m = jnp.concatenate([m, new], 0)
    return jnp.concatenate([m, jnp.zeros((1,) + m.shape[1:], dtype)], 0)


def scalar_moment_rows(spec: ModelSpec, basic_rows):
    """Scalar basis function values B_s in row form, float [S, N], from basic moments [B, N]."""
    return moment_rows(spec, basic_rows)[spec.scalar_rows]


def monomial_layers(unit, max_power: int):
    """Monomials u_x^a u_y^b u_z^c grouped by degree d = a+b+c ≤ ``max_power``.

    Layer d+1 is [layer_d · u_x, (a = 0 part of layer_d) · u_y, u_z^d · u_z], built from static
    slices (no gathers, cheap to differentiate); within a layer a, then b, descend, which is the
    order of :func:`mtpjax.model.full_monomials`.

    Args:
        unit: float [..., 3] unit vectors.
    Returns:
        list of float [..., (d+1)(d+2)/2], d = 0..max_power.
    """
    ux, uy, uz = unit[..., 0:1], unit[..., 1:2], unit[..., 2:3]
    layer = jnp.ones_like(ux)
    layers = [layer]
    for d in range(max_power):
        layer = jnp.concatenate([layer * ux, layer[..., -(d + 1):] * uy, layer[..., -1:] * uz], -1)
        layers.append(layer)
    return layers


def moment_tensor(spec: ModelSpec, radial_values, layers):
    """Compact moment tensor Σ_j f_μ(r_ij) u_ij^t, float [N, Σ_d K_d T_d].

    One contraction per degree layer d with the radial functions μ < K_d that the basis uses
    at that rank (``spec.layer_k``): measured faster on CPU than one contraction with the
    concatenated [N, J, T] monomials and all K (benchmarks/NOTES.md).

    Args:
        radial_values: float [N, J, K]; layers: :func:`monomial_layers` [N, J, T_d].
    """
    n = radial_values.shape[0]
    blocks = [
        jnp.einsum("njk,njt->nkt", radial_values[..., :k], m).reshape(n, -1)
        for k, m in zip(spec.layer_k, layers, strict=True)
        if k > 0
    ]
    return jnp.concatenate(blocks, -1)


def basic_from_tensor(spec: ModelSpec, tensor):
    """Basic moments float [N, B] picked from the compact moment tensor (:func:`moment_tensor`)."""
    return tensor[:, spec.basic_flat]


def pair_adjoints(spec: ModelSpec, grad_basic_rows, layers, radial_values):
    """Explicit reverse pass of the basic moments (no scatter, no [N, J, T] adjoint).

    With G[μ, t] = ∂E/∂(basic moment μ, t) and G_a[μ, s] = (s_a+1) G[μ, s + e_a] (tables in
    :func:`mtpjax.model._layer_tables`): ∂E/∂f_μ = Σ_t G[μ,t] u^t and
    ∂E/∂u_a = Σ_μ f_μ Σ_s G_a[μ, s] u^s — per degree layer one contraction of the monomials with
    [G, G_x, G_y, G_z].

    Args:
        grad_basic_rows: float [B, N], ∂E/∂(basic moments) in row form.
        layers: monomial layers of the unit vectors (:func:`monomial_layers`), [N, J, T_d].
        radial_values: float [N, J, K] (zero on padded entries).
    Returns:
        (∂E/∂f float [N, J, K], ∂E/∂u float [N, J, 3]) for radial values f and unit vectors u.
    """
    n = grad_basic_rows.shape[1]
    dtype = grad_basic_rows.dtype
    k_count = radial_values.shape[-1]
    padded = jnp.concatenate([grad_basic_rows, jnp.zeros((1, n), dtype)], 0)  # [B+1, N]
    rows = (padded[spec.grad_src] * spec.grad_scale.astype(dtype)[:, None]).T  # [N, rows]
    d_radial = jnp.zeros(radial_values.shape, dtype)
    d_unit = [jnp.zeros(radial_values.shape[:-1], dtype) for _ in range(3)]
    k_next = spec.layer_k[1:] + (0,)
    offset = 0
    for k, k1, m in zip(spec.layer_k, k_next, layers, strict=True):
        width = k + 3 * k1
        t_d = m.shape[-1]
        if width == 0:
            continue
        g = rows[:, offset:offset + width * t_d].reshape(n, width, t_d)
        offset += width * t_d
        h = jnp.einsum("njt,nct->njc", m, g)  # [N, J, K_d + 3 K_{d+1}]
        if k:
            d_radial = d_radial + jnp.pad(h[..., :k], ((0, 0), (0, 0), (0, k_count - k)))
        for a in range(k1 and 3):
            part = h[..., k + a * k1:k + (a + 1) * k1]
            d_unit[a] = d_unit[a] + jnp.sum(radial_values[..., :k1] * part, -1)
    return d_radial, jnp.stack(d_unit, -1)
