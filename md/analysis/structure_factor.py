"""Static structure factor S(Q) of a periodic frame, and its first sharp diffraction peak.

Three routes (all for a single species, Q in Å⁻¹, r in Å):

* :func:`structure_factor_from_gr` — Fourier transform of the radial distribution function,

      S(Q) = 1 + 4πρ ∫₀^R r² [g(r) − 1] sin(Qr)/(Qr) W(r) dr,

  with the Lorch window W(r) = sin(πr/R)/(πr/R) (E. Lorch, J. Phys. C 2, 229 (1969)), which
  damps the truncation ripples of the finite cut-off R at the cost of a broadening of about
  2π/R. ``window="none"`` gives the bare truncated transform. Fast for 10⁵–10⁶ atoms.
* :func:`debye_structure_factor` — the same integral done exactly as a Debye pair sum over all
  pairs (periodic images included) with r < R, without histogram binning:

      S(Q) = 1 + (1/N) Σ_{i≠j, r_ij<R} W(r_ij) sin(Q r_ij)/(Q r_ij)
             − 4πρ ∫₀^R r² W(r) sin(Qr)/(Qr) dr.

  A cross-check of the binning for small cells (cost ∝ pairs × Q points).
* :func:`direct_structure_factor` — the exact periodic S(q) = |Σ_j exp(−i q·r_j)|² / N on the
  reciprocal lattice of the cell, averaged in |q| shells. Bragg peaks of a crystal appear at
  their exact positions (used to check the (111), (220), (311) peaks of diamond Si).

The first sharp diffraction peak (FSDP) height H and its inverse H⁻¹ follow the paper's
Table I (after Xie et al., PNAS 110, 13250 (2013)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from matscipy.neighbours import neighbour_list

from .bonds import check_frame

WINDOWS = ("lorch", "none")


def number_density(atoms: Atoms) -> float:
    """Number density ρ = N / V in Å⁻³ (raises ``ValueError`` without a 3-D cell)."""
    check_frame(atoms, need_cell=True, what="number density")
    return len(atoms) / abs(atoms.cell.volume)


def max_radius(atoms: Atoms) -> float:
    """Half the smallest perpendicular width of the cell (Å): the largest r free of self-images."""
    check_frame(atoms, need_cell=True, what="radial distribution")
    cell = np.asarray(atoms.cell)
    volume = abs(np.linalg.det(cell))
    widths = [volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3]))
              for k in range(3)]
    return 0.5 * min(widths)


def window_function(r: np.ndarray, r_max: float, window: str = "lorch") -> np.ndarray:
    """Real-space window W(r) on [0, r_max]: ``"lorch"`` sin(πr/R)/(πr/R) or ``"none"`` (1)."""
    if window == "lorch":
        return np.sinc(np.asarray(r) / r_max)  # numpy sinc(x) = sin(πx)/(πx)
    if window == "none":
        return np.ones_like(np.asarray(r, dtype=float))
    raise ValueError(f"unknown window {window!r}; choose one of {WINDOWS}")


@dataclass(frozen=True)
class RadialDistribution:
    """g(r) on bin centres ``r`` (Å); ``rho`` the number density (Å⁻³); ``r_max`` in Å."""

    r: np.ndarray
    g: np.ndarray
    rho: float
    r_max: float


def radial_distribution(atoms: Atoms, r_max: float | None = None, dr: float = 0.01,
                        clip: bool = True) -> RadialDistribution:
    """Radial distribution function g(r) of a periodic frame.

    Args:
        atoms: periodic frame (3-D cell required).
        r_max: largest distance in Å; default and upper bound (with ``clip``) is half the
            smallest perpendicular cell width.
        dr: bin width in Å.
        clip: reduce ``r_max`` to :func:`max_radius` so that no atom sees its own image.
    """
    limit = max_radius(atoms)
    r_max = limit if r_max is None else float(r_max)
    if clip:
        r_max = min(r_max, limit)
    if r_max <= dr:
        raise ValueError(f"r_max = {r_max:.3g} Å is not larger than the bin width {dr} Å")
    n_bins = int(np.floor(r_max / dr))
    r_max = n_bins * dr
    d = neighbour_list("d", atoms, r_max)
    counts = np.bincount(np.minimum((d / dr).astype(np.int64), n_bins - 1), minlength=n_bins)
    edges = np.arange(n_bins + 1) * dr
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    rho = number_density(atoms)
    g = counts / (len(atoms) * rho * shell)
    return RadialDistribution(0.5 * (edges[1:] + edges[:-1]), g, rho, r_max)


def default_q(q_max: float = 12.0, dq: float = 0.01) -> np.ndarray:
    """Q grid (Å⁻¹) from ``dq`` to ``q_max``."""
    return np.arange(dq, q_max + 0.5 * dq, dq)


def _sinc_qr(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """sin(Qr)/(Qr) as a (len(q), len(r)) matrix."""
    return np.sinc(np.outer(q, r) / np.pi)


def structure_factor_from_gr(rdf: RadialDistribution, q: np.ndarray | None = None,
                             window: str = "lorch") -> tuple[np.ndarray, np.ndarray]:
    """S(Q) by a windowed Fourier transform of g(r) (see the module docstring).

    Returns:
        ``(q, s)``: Q in Å⁻¹ and S(Q) (dimensionless).
    """
    q = default_q() if q is None else np.asarray(q, dtype=float)
    dr = rdf.r[1] - rdf.r[0]
    integrand = rdf.r**2 * (rdf.g - 1.0) * window_function(rdf.r, rdf.r_max, window) * dr
    s = 1.0 + 4.0 * np.pi * rdf.rho * (_sinc_qr(q, rdf.r) @ integrand)
    return q, s


def debye_structure_factor(atoms: Atoms, q: np.ndarray | None = None,
                           r_max: float | None = None, window: str = "lorch",
                           chunk: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """S(Q) by the windowed Debye pair sum over r < ``r_max`` (Å); see the module docstring.

    Cost grows as (number of pairs) × (number of Q points): meant for cells of up to a few
    thousand atoms as a cross-check of :func:`structure_factor_from_gr`.
    """
    q = default_q() if q is None else np.asarray(q, dtype=float)
    limit = max_radius(atoms)
    r_max = limit if r_max is None else min(float(r_max), limit)
    d = neighbour_list("d", atoms, r_max)
    rho = number_density(atoms)
    pair_sum = np.zeros_like(q)
    for start in range(0, d.size, chunk):
        dd = d[start:start + chunk]
        pair_sum += _sinc_qr(q, dd) @ window_function(dd, r_max, window)
    r = np.linspace(0.0, r_max, 4001)
    dr = r[1] - r[0]
    background = 4.0 * np.pi * rho * (_sinc_qr(q, r) @ (r**2 * window_function(r, r_max, window)))
    background -= 4.0 * np.pi * rho * 0.5 * (r[-1] ** 2 * window_function(r[-1:], r_max, window)[0]
                                             * np.sinc(q * r[-1] / np.pi))  # trapezoid end
    return q, 1.0 + pair_sum / len(atoms) - background * dr


def direct_structure_factor(atoms: Atoms, q_max: float = 6.0, dq: float = 0.02,
                            max_vectors: int = 2_000_000,
                            chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact periodic S(q) = |Σ_j exp(−i q·r_j)|²/N on the reciprocal lattice, shell-averaged.

    Args:
        atoms: periodic frame.
        q_max: largest |q| in Å⁻¹.
        dq: width of the |q| shells in Å⁻¹; empty shells are dropped.
        max_vectors: refuse (``ValueError``) to use more reciprocal vectors than this.

    Returns:
        ``(q, s)``: shell centres in Å⁻¹ and the mean S over the vectors in each shell.
    """
    check_frame(atoms, need_cell=True, what="direct S(Q)")
    recip = 2.0 * np.pi * np.asarray(atoms.cell.reciprocal())  # rows b_k, with 2π
    n = [int(np.ceil(q_max / np.linalg.norm(b))) + 1 for b in recip]
    n_total = np.prod([2 * m + 1 for m in n])
    if n_total > max_vectors:
        raise ValueError(f"direct S(Q) would need {n_total} reciprocal vectors (> {max_vectors}); "
                         "lower q_max or use the g(r) route for large cells")
    axes = [np.arange(-m, m + 1) for m in n]
    hkl = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    qv = hkl @ recip
    qn = np.linalg.norm(qv, axis=1)
    # half space: q and −q give the same |ρ_q|²
    first = np.argmax(hkl != 0, axis=1)
    positive = hkl[np.arange(len(hkl)), first] > 0
    keep = positive & (qn <= q_max)
    qv, qn = qv[keep], qn[keep]
    pos = atoms.get_positions()
    s = np.empty(qn.size)
    for start in range(0, qn.size, chunk):
        phase = pos @ qv[start:start + chunk].T  # (N, chunk)
        s[start:start + chunk] = (np.cos(phase).sum(0) ** 2 + np.sin(phase).sum(0) ** 2)
    s /= len(atoms)
    shell = np.floor(qn / dq).astype(np.int64)
    total = np.bincount(shell, weights=s)
    count = np.bincount(shell)
    filled = count > 0
    centres = (np.arange(total.size) + 0.5) * dq
    return centres[filled], total[filled] / count[filled]


@dataclass(frozen=True)
class Peak:
    """A peak of S(Q): position ``q`` (Å⁻¹), ``height`` H, and ``inverse_height`` H⁻¹.

    ``at_window_edge`` is true when the maximum lies on the boundary of the search window,
    i.e. S(Q) has no interior maximum there (no FSDP found, e.g. a liquid or a tiny cell).
    """

    q: float
    height: float
    at_window_edge: bool = False

    @property
    def inverse_height(self) -> float:
        return 1.0 / self.height


def first_sharp_diffraction_peak(q: np.ndarray, s: np.ndarray,
                                 q_window: tuple[float, float] = (1.5, 2.6)) -> Peak:
    """Position and height of the FSDP: the maximum of S(Q) within ``q_window`` (Å⁻¹).

    The default window brackets the FSDP of amorphous Si (≈ 2.0 Å⁻¹). An interior maximum is
    refined by a parabola through the highest sample and its two neighbours.
    """
    q, s = np.asarray(q, dtype=float), np.asarray(s, dtype=float)
    inside = np.flatnonzero((q >= q_window[0]) & (q <= q_window[1]))
    if inside.size < 3:
        raise ValueError(f"fewer than 3 Q points in the FSDP window {q_window} Å⁻¹")
    k = inside[np.argmax(s[inside])]
    if k in (inside[0], inside[-1]):
        return Peak(float(q[k]), float(s[k]), at_window_edge=True)
    y0, y1, y2 = s[k - 1], s[k], s[k + 1]
    curvature = y0 - 2.0 * y1 + y2
    if curvature >= 0:
        return Peak(float(q[k]), float(y1))
    shift = float(np.clip(0.5 * (y0 - y2) / curvature, -1.0, 1.0))
    step = 0.5 * (q[k + 1] - q[k - 1])
    return Peak(float(q[k] + shift * step), float(y1 - 0.25 * (y0 - y2) * shift))
