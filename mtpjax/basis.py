"""The one definition of the MTP basis: :class:`BasisSpec`.

MLIP-2 stores the moment-tensor basis in a flattened form (SPEC §2):

- ``alpha_index_basic`` [B, 4] rows (μ, a, b, c): basic moment
  m_i = Σ_j f_μ(r_ij) x^a y^b z^c / r^(a+b+c), i.e. one component of M_{μ,ν}, ν = a+b+c.
- ``alpha_index_times`` [P, 4] rows (p, q, w, k): m_k += w · m_p · m_q, applied in order.
- ``alpha_moment_mapping`` [S]: indices of the scalar moments that enter the site energy.

A ``BasisSpec`` is built from those arrays (read from an ``.mtp`` file) or generated from the
level formula lev(M_{μ,ν}) = 2 + 4μ + ν (:func:`mtpjax.basis_generate.generate_basis`).
Every evaluation path (energy, fitting, MD) consumes this class, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _as_int_array(values, width: int | None, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.int64)
    if width is None:
        arr = arr.reshape(-1)
    else:
        arr = arr.reshape(-1, width)
    return arr


@dataclass(frozen=True, eq=False)
class BasisSpec:
    """Moment-tensor basis in MLIP's flattened form.

    Attributes:
        alpha_index_basic: int [B, 4], rows (μ, a, b, c).
        alpha_index_times: int [P, 4], rows (p, q, multiplicity, target).
        alpha_moment_mapping: int [S], moments that are scalar basis functions.
        alpha_moments_count: total number of moments (basic + products), ≥ B.
    """

    alpha_index_basic: np.ndarray
    alpha_index_times: np.ndarray
    alpha_moment_mapping: np.ndarray
    alpha_moments_count: int
    level: int | None = field(default=None)

    def __post_init__(self):
        basic = _as_int_array(self.alpha_index_basic, 4, "alpha_index_basic")
        times = _as_int_array(self.alpha_index_times, 4, "alpha_index_times")
        mapping = _as_int_array(self.alpha_moment_mapping, None, "alpha_moment_mapping")
        object.__setattr__(self, "alpha_index_basic", basic)
        object.__setattr__(self, "alpha_index_times", times)
        object.__setattr__(self, "alpha_moment_mapping", mapping)
        object.__setattr__(self, "alpha_moments_count", int(self.alpha_moments_count))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` when the arrays are inconsistent."""
        n_basic = len(self.alpha_index_basic)
        n_mom = self.alpha_moments_count
        if n_basic == 0:
            raise ValueError("alpha_index_basic is empty")
        if n_mom < n_basic:
            raise ValueError(
                f"alpha_moments_count = {n_mom} is smaller than alpha_index_basic_count = {n_basic}"
            )
        if (self.alpha_index_basic < 0).any():
            raise ValueError("alpha_index_basic has negative entries")
        if len(self.alpha_index_times):
            p, q, _, k = self.alpha_index_times.T
            if (p < 0).any() or (q < 0).any() or (k < 0).any():
                raise ValueError("alpha_index_times has negative moment indices")
            if max(p.max(), q.max(), k.max()) >= n_mom:
                raise ValueError("alpha_index_times refers to a moment ≥ alpha_moments_count")
            if (k < n_basic).any():
                raise ValueError("alpha_index_times writes into a basic moment")
            # every factor must be complete before it is used (MLIP applies rows in order)
            last_write = {}
            for row, target in enumerate(k):
                last_write[int(target)] = row
            for row, (a, b) in enumerate(zip(p, q, strict=True)):
                for f in (int(a), int(b)):
                    if f >= n_basic and last_write.get(f, -1) >= row:
                        raise ValueError(
                            f"alpha_index_times row {row} uses moment {f} before it is complete"
                        )
        if len(self.alpha_moment_mapping) == 0:
            raise ValueError("alpha_moment_mapping is empty")
        if (self.alpha_moment_mapping < 0).any() or (self.alpha_moment_mapping >= n_mom).any():
            raise ValueError("alpha_moment_mapping refers to a moment outside 0..count-1")

    # ------------------------------------------------------------------ derived
    @property
    def basic_count(self) -> int:
        return len(self.alpha_index_basic)

    @property
    def times_count(self) -> int:
        return len(self.alpha_index_times)

    @property
    def scalar_count(self) -> int:
        return len(self.alpha_moment_mapping)

    @property
    def radial_funcs_needed(self) -> int:
        """Number of radial functions μ the basis uses (max μ + 1)."""
        return int(self.alpha_index_basic[:, 0].max()) + 1

    @property
    def max_power(self) -> int:
        """Largest tensor rank ν = a+b+c among basic moments."""
        return int(self.alpha_index_basic[:, 1:].sum(axis=1).max())

    def moment_levels(self) -> np.ndarray:
        """Level of every moment, int [alpha_moments_count] (−1 where undefined)."""
        lev = -np.ones(self.alpha_moments_count, dtype=np.int64)
        mu, a, b, c = self.alpha_index_basic.T
        lev[: self.basic_count] = 2 + 4 * mu + a + b + c
        for p, q, _, k in self.alpha_index_times:
            lev[k] = lev[p] + lev[q]
        return lev

    def scalar_levels(self) -> np.ndarray:
        """Level of every scalar basis function, int [S]."""
        return self.moment_levels()[self.alpha_moment_mapping]

    def product_waves(self) -> list[np.ndarray]:
        """Split ``alpha_index_times`` rows into dependency waves.

        Rows in one wave only read moments completed in earlier waves, so each wave can be
        evaluated as one vectorised gather–multiply–scatter. Returns a list of int [P_w, 4].
        """
        n_basic = self.basic_count
        depth = np.zeros(self.alpha_moments_count, dtype=np.int64)
        row_depth = np.zeros(self.times_count, dtype=np.int64)
        for row, (p, q, _, k) in enumerate(self.alpha_index_times):
            d = max(depth[p] if p >= n_basic else 0, depth[q] if q >= n_basic else 0) + 1
            row_depth[row] = d
            depth[k] = max(depth[k], d)
        # a target is complete only after its deepest contribution: align all rows of a target
        target_depth = np.zeros(self.alpha_moments_count, dtype=np.int64)
        for row, (_, _, _, k) in enumerate(self.alpha_index_times):
            target_depth[k] = max(target_depth[k], row_depth[row])
        # recompute with targets' final depths so that readers wait for complete targets
        changed = True
        while changed:
            changed = False
            for p, q, _, k in self.alpha_index_times:
                d = (
                    max(
                        target_depth[p] if p >= n_basic else 0,
                        target_depth[q] if q >= n_basic else 0,
                    )
                    + 1
                )
                if d > target_depth[k]:
                    target_depth[k] = d
                    changed = True
        rows_depth = target_depth[self.alpha_index_times[:, 3]] if self.times_count else []
        waves = []
        for d in sorted(set(np.asarray(rows_depth).tolist())):
            waves.append(self.alpha_index_times[np.asarray(rows_depth) == d])
        return waves
