"""Extrapolation grades and MaxVol active-set selection, as MLIP-2's ``mlp`` computes them.

The algorithm follows ``mlp calc-grade`` / ``mlp select-add`` (MLIP-2 2.1.2, energy equations
only, its defaults):

* **Rows.** Each configuration gives one row b ∈ ℝᴾ: the gradient of its total energy E with
  respect to *all* coefficients of the potential, in MLIP's order
  ``[radial_coeffs (C·C·K·R, index ((t_c·C + t_n)·K + μ)·R + k), species_coeffs (C),
  moment_coeffs (S)]`` — the radial coefficients enter too (MLIP's ``CoeffCount`` is the whole
  ``regression_coeffs``). Weighting ``"vibrations"`` (default) and ``"structures"`` divide by
  the atom count N, ``"molecules"`` does not. Units: eV per coefficient unit, / N.
* **Active set.** A is P × P, initialised to ``init_threshold``·I. Candidate rows B [M, P] are
  expressed in A: C = B A⁻¹. While max |C_ij| > threshold, B-row i and A-row j are swapped,
  with rank-one (Sherman–Morrison) updates of A⁻¹ and C; each swap multiplies |det A| by
  |C_ij|. A selection run starts only when the first max |C| exceeds ``select_threshold`` and
  continues while it exceeds ``swap_threshold``. ``calc-grade`` selects on the training set
  with (select, swap) thresholds; ``select-add`` uses (swap, swap) for the training set, then
  (select, swap) for the new configurations.
* **Grade.** γ(x) = max_j |(b(x) A⁻¹)_j|: γ ≤ 1 inside the active set's span (interpolation),
  γ > 1 extrapolation. mlp writes it as ``Feature MV_grade`` with 6 decimals (``9.9e99`` when
  γ > 10¹⁰).

Rows are computed on the device, configurations packed in padded groups of one coarsely
rounded shape per call (forward-mode Jacobian when a group holds more configurations than there
are coefficients, reverse mode otherwise); the MaxVol updates are O(P²) per swap on the host,
in float64.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from mtpjax.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from mtpjax.potential_data import MTPotential

WEIGHTINGS = ("vibrations", "molecules", "structures")

#: mlp's defaults (``mlp calc-grade`` / ``select-add`` help text)
INIT_THRESHOLD = 1e-5
SELECT_THRESHOLD = 1.1
SWAP_THRESHOLD = 1.0000001


def coefficient_count(spec) -> int:
    """P = C·C·K·R + C + S, the length of a row (MLIP's ``CoeffCount``)."""
    C, K, R = spec.species_count, spec.radial_funcs_count, spec.radial_basis_size
    return C * C * K * R + C + spec.basis.scalar_count


def _flat(params) -> jnp.ndarray:
    return jnp.concatenate([jnp.ravel(params["radial_coeffs"]),
                            jnp.ravel(params["species_coeffs"]),
                            jnp.ravel(params["moment_coeffs"])])


def _unflat(spec, theta, shape) -> dict:
    C = spec.species_count
    q = int(np.prod(shape))
    return {"radial_coeffs": theta[:q].reshape(shape), "species_coeffs": theta[q:q + C],
            "moment_coeffs": theta[q + C:]}


_ROWS_CACHE: dict = {}


def make_group_rows(spec):
    """Jit-compiled ``rows(params, group) -> J [Cg, P]`` (cached per model hyper-parameters):
    ∂E_c/∂θ of each configuration slot of one :class:`~mtpjax.fit.data.Batch` group
    (unweighted; empty slots give zero rows)."""
    from mtpjax.potential import site_energies

    def rows(params, g):
        shape = params["radial_coeffs"].shape
        Cg = g.energy.shape[0]

        def energies(theta):
            p = _unflat(spec, theta, shape)
            disp = g.positions[g.nbr_idx] - g.positions[:, None, :] + g.offsets
            e = site_energies(spec, p, disp, g.types, g.types[g.nbr_idx], g.nbr_mask)
            e = jnp.where(g.atom_mask, e, 0.0)
            return jax.ops.segment_sum(e, g.atom_conf, num_segments=Cg + 1)[:Cg]

        theta = _flat(params)
        # forward mode costs ~P energy passes, reverse mode ~Cg: take the cheaper
        jac = jax.jacrev if Cg < theta.shape[0] else jax.jacfwd
        return jac(energies)(theta)

    import hashlib
    import pickle

    key = hashlib.sha256(pickle.dumps(spec)).hexdigest()
    if key not in _ROWS_CACHE:
        _ROWS_CACHE[key] = jax.jit(rows)
    return _ROWS_CACHE[key]


def _samples(configs):
    """:class:`~mtpjax.fit.data.Sample` s (geometry only) of configurations with ``positions``,
    ``types``, ``cell`` (or None) and ``pbc``."""
    from mtpjax.fit.data import Sample

    out = []
    for n, c in enumerate(configs):
        cell = getattr(c, "cell", None)
        out.append(Sample(
            positions=np.asarray(c.positions, np.float64),
            types=np.asarray(c.types, np.int32),
            cell=np.zeros((3, 3)) if cell is None else np.asarray(cell, np.float64),
            pbc=np.asarray(c.pbc, bool), source=str(getattr(c, "path", "") or ""),
            index=n if getattr(c, "index", None) is None else c.index,
            line=getattr(c, "line", None)))
    return out


def energy_rows(spec, params, configs, weighting: str = "vibrations", *,
                target_atoms: int = 2048, rows_fn=None) -> np.ndarray:
    """Rows b(x) of ``configs``, float64 [M, P] (see the module docstring).

    ``configs``: objects with ``positions`` [N, 3] (Å), ``types`` [N], ``cell`` [3, 3] or None,
    ``pbc`` [3] (e.g. :class:`~mtpjax.io.cfg.Configuration`). Empty configurations give zero
    rows. ``weighting``: ``"vibrations"``/``"structures"`` (÷ N) or ``"molecules"``.
    """
    from mtpjax.fit.data import group_configurations, pack_groups, precompute_neighbors, round_up
    from mtpjax.params import to_jax

    if weighting not in WEIGHTINGS:
        raise InputError(f"weighting {weighting!r}: expected one of {', '.join(WEIGHTINGS)}")
    P = coefficient_count(spec)
    samples = _samples(configs)
    out = np.zeros((len(samples), P))
    keep = [k for k, s in enumerate(samples) if len(s) > 0]
    if not keep:
        return out
    sub = [samples[k] for k in keep]
    for k in keep:
        t = samples[k].types
        if t.min() < 0 or t.max() >= spec.species_count:
            msg = (f"atom type {int(t.max())} but the potential has species_count = "
                   f"{spec.species_count}")
            c = configs[k]
            raise c.error(msg) if hasattr(c, "error") else InputError(msg)
    precompute_neighbors(sub, spec.cutoff)
    rows_fn = rows_fn or make_group_rows(spec)
    # one group shape per call, rounded coarsely so that calls share compiled code
    sizes = [len(x) for x in sub]
    A = max(int(target_atoms), round_up(max(sizes), 256))
    J = round_up(max(x.max_neighbors for x in sub), 16)
    groups = group_configurations(sizes, A)
    Cg = 1 << (max(len(g) for g in groups) - 1).bit_length()  # a power of two
    with jax.enable_x64(True):
        jparams = to_jax(params, jnp.float64)
        for members in groups:
            batch = pack_groups(sub, [members], A, J, Cg)
            rows = np.asarray(rows_fn(jparams, jax.tree.map(lambda x: jnp.asarray(x[0]), batch)))
            for c, k in enumerate(members):
                out[keep[k]] = rows[c]
    if weighting != "molecules":
        n = np.array([max(len(s), 1) for s in samples], np.float64)
        out /= n[:, None]
    return out


@dataclass
class MaxVol:
    """MLIP's MaxVol state: the active-set matrix A [P, P] and its inverse.

    ``labels[j]`` names the configuration that gave row j of A (``None`` while row j is still
    the initial ``init_threshold``·e_j). ``log_det``: log |det A| (natural log).
    """

    A: np.ndarray
    A_inv: np.ndarray
    init_threshold: float = INIT_THRESHOLD
    labels: list = field(default_factory=list)
    log_det: float = 0.0

    @classmethod
    def new(cls, n: int, init_threshold: float = INIT_THRESHOLD) -> MaxVol:
        if not init_threshold > 0:
            raise InputError(f"init threshold must be > 0, got {init_threshold}")
        return cls(np.eye(n) * init_threshold, np.eye(n) / init_threshold,
                   float(init_threshold), [None] * n, n * float(np.log(init_threshold)))

    @property
    def n(self) -> int:
        return self.A.shape[0]

    def coefficients(self, B) -> np.ndarray:
        """C = B A⁻¹, float [M, P]: each row of ``B`` [M, P] in the basis of A's rows."""
        return np.asarray(B, np.float64) @ self.A_inv

    def grades(self, B) -> np.ndarray:
        """γ = max_j |(B A⁻¹)_ij| of each row, float [M] (0 for an empty B row set)."""
        B = np.atleast_2d(np.asarray(B, np.float64))
        if B.shape[0] == 0:
            return np.zeros(0)
        return np.max(np.abs(self.coefficients(B)), axis=1)

    def inited_rows(self) -> int:
        """Rows of A that come from configurations."""
        return sum(lab is not None for lab in self.labels)

    def select(self, B, labels, select_threshold: float, swap_threshold: float,
               swap_limit: int | None = None) -> list[tuple[int, int]]:
        """Swap rows of ``B`` [M, P] into A while they raise |det A| by more than the
        thresholds (mlp's ``MaxvolSelection::Select``); ``labels`` [M] names B's rows.

        Returns the swaps (B row, A row) in order. A row of B may go in and out again.
        """
        B = np.array(B, np.float64, copy=True)
        labels = list(labels)
        M = B.shape[0]
        if M == 0:
            return []
        if len(labels) != M:
            raise ValueError("one label per row of B")
        if not (select_threshold > 1.0 and swap_threshold > 1.0):
            raise InputError("select and swap thresholds must be > 1 "
                             f"(got {select_threshold}, {swap_threshold})")
        n = self.n
        C = B @ self.A_inv

        def argmax():  # first maximum in row-major order, as cblas_idamax
            k = int(np.argmax(np.abs(C).reshape(-1)))
            return k // n, k % n

        i0, j0 = argmax()
        grade = abs(C[i0, j0])
        swaps: list[tuple[int, int]] = []
        if not grade > select_threshold:
            return swaps
        limit = np.inf if not swap_limit else swap_limit
        while grade > swap_threshold and len(swaps) < limit:
            self.log_det += float(np.log(grade))
            c = C[i0, j0]
            # A' = A + e_j0 (b − a_j0)ᵀ: Sherman–Morrison, 1 + (b − a_j0)ᵀ A⁻¹ e_j0 = c
            v = B[i0] - self.A[j0]
            self.A_inv -= np.outer(self.A_inv[:, j0], (v @ self.A_inv) / c)
            # C' = C − u wᵀ with u = C[:, j0]/c + e_i0/c, w = C[i0] − e_j0 (B's row i0 becomes
            # the old a_j0, whose coefficients in A' are −C[i0]/c off j0 and 1/c at j0)
            u = C[:, j0] / c
            u[i0] += 1.0 / c
            w = C[i0].copy()
            w[j0] -= 1.0
            C -= np.outer(u, w)
            # swap the rows (and their labels)
            old = self.A[j0].copy()
            self.A[j0] = B[i0]
            B[i0] = old
            labels[i0], self.labels[j0] = self.labels[j0], labels[i0]
            swaps.append((i0, j0))
            i0, j0 = argmax()
            grade = abs(C[i0, j0])
        return swaps

    # ----------------------------------------------------------------- persistence
    def to_arrays(self) -> dict:
        return {"A": self.A, "A_inv": self.A_inv, "init_threshold": self.init_threshold,
                "log_det": self.log_det}


def format_grade(g: float) -> str:
    """mlp's ``MV_grade`` text: 6 decimals, ``9.9e99`` above 10¹⁰."""
    return "9.9e99" if g > 1e10 else f"{g:.6f}"


class Grader:
    """Grades of configurations against an active set selected from a training set.

    Args:
        potential: :class:`~mtpjax.potential_data.MTPotential` or a ``.mtp`` path.
        maxvol: the active set (:class:`MaxVol`); ``None``: empty (fill it with :meth:`select`,
            or use :func:`training_grader`).
        weighting: row weighting (``"vibrations"``, mlp's default).
        init_threshold: A starts as ``init_threshold``·I (when ``maxvol`` is None).

    ``active_configs`` maps the labels of A's rows to their configurations (saved with the state).
    """

    def __init__(self, potential: MTPotential | str | os.PathLike,
                 maxvol: MaxVol | None = None, weighting: str = "vibrations",
                 init_threshold: float = INIT_THRESHOLD) -> None:
        from mtpjax.io.mtp_file import read_mtp
        from mtpjax.model import ModelSpec

        self.potential = read_mtp(potential) if isinstance(potential, (str, Path)) else potential
        if not self.potential.is_trained:
            raise InputError("the potential has no coefficients (untrained)")
        self.spec = ModelSpec.from_potential(self.potential)
        self.params = self.potential.params()
        if weighting not in WEIGHTINGS:
            raise InputError(f"weighting {weighting!r}: expected one of {', '.join(WEIGHTINGS)}")
        self.weighting = weighting
        self.maxvol = maxvol or MaxVol.new(coefficient_count(self.spec), init_threshold)
        if self.maxvol.n != coefficient_count(self.spec):
            raise InputError(f"active set of size {self.maxvol.n} but the potential has "
                             f"{coefficient_count(self.spec)} coefficients")
        self.active_configs: dict = {}
        self._rows_fn = None

    def rows(self, configs) -> np.ndarray:
        """Rows [M, P] of ``configs`` (see :func:`energy_rows`)."""
        if self._rows_fn is None:
            self._rows_fn = make_group_rows(self.spec)
        return energy_rows(self.spec, self.params, configs, self.weighting,
                           rows_fn=self._rows_fn)

    def select(self, configs, select_threshold: float, swap_threshold: float,
               swap_limit: int | None = None, tag: str = "cfg") -> list[tuple[int, int]]:
        """Add ``configs`` to the active set (one MaxVol selection run); labels are
        ``(tag, index)`` (a tag not yet in the active set; a loaded state uses ``"active"``).
        Returns the swaps (configuration index, A row)."""
        configs = list(configs)
        if any(lab is not None and lab[0] == tag for lab in self.maxvol.labels):
            raise ValueError(f"tag {tag!r} is already used by rows of the active set")
        labels = [(tag, k) for k in range(len(configs))]
        swaps = self.maxvol.select(self.rows(configs), labels, select_threshold,
                                   swap_threshold, swap_limit)
        for k, _ in swaps:
            self.active_configs[(tag, k)] = configs[k]
        live = set(self.maxvol.labels)
        self.active_configs = {k: v for k, v in self.active_configs.items() if k in live}
        return swaps

    def selected(self, tag: str) -> list[int]:
        """Indices of configurations labelled ``tag`` in the active set, in A-row order, each
        once (the order in which ``mlp select-add`` writes them)."""
        out: list[int] = []
        for lab in self.maxvol.labels:
            if lab is not None and lab[0] == tag and lab[1] not in out:
                out.append(lab[1])
        return out

    def grade(self, configs: Iterable) -> np.ndarray:
        """γ of each configuration, float [M] (0 for empty ones)."""
        configs = list(configs)
        return self.maxvol.grades(self.rows(configs)) if configs else np.zeros(0)

    def grade_atoms(self, atoms: Atoms, species: Sequence[str]) -> float:
        """γ of one ASE ``Atoms`` (``species``: element per MLIP type)."""
        from mtpjax.calculator import types_from_numbers

        cfg = _AtomsView(atoms.positions, types_from_numbers(atoms.numbers, species),
                         np.asarray(atoms.cell.array), np.asarray(atoms.pbc, bool))
        return float(self.grade([cfg])[0])

    # ----------------------------------------------------------------- files
    def save(self, path: str | os.PathLike, format: str | None = None) -> None:
        """Write the active-set state (potential, A, A⁻¹, the active configurations).

        ``format``: ``"mlp"`` (MLIP-2's binary ``.als`` layout, readable by ``mlp``: LAMMPS
        ``select:load-state``, ``mlp relax``), ``"npz"`` (an mtpjax archive, which also keeps
        the weighting and the initial threshold) or ``None``: ``"mlp"`` for a ``.als`` name,
        else ``"npz"``. Both are read back by :meth:`load`."""
        fmt = format or ("mlp" if Path(path).suffix == ".als" else "npz")
        if fmt == "mlp":
            return self._save_mlp(Path(path))
        if fmt != "npz":
            raise ValueError(f"format {format!r}: expected 'mlp' or 'npz'")
        from mtpjax.io.cfg import format_configuration
        from mtpjax.io.mtp_file import format_mtp

        keys = [k for k in dict.fromkeys(self.maxvol.labels) if k is not None]
        index = {k: n for n, k in enumerate(keys)}
        rows = np.array([-1 if lab is None else index[lab] for lab in self.maxvol.labels])
        text = "".join(format_configuration(_as_configuration(self.active_configs[k])) + "\n"
                       for k in keys)
        with open(path, "wb") as fh:
            np.savez(fh, format=np.array("mtpjax-active-set-1"),
                     potential=np.array(format_mtp(self.potential)),
                     weighting=np.array(self.weighting), row_config=rows,
                     configs=np.array(text), **self.maxvol.to_arrays())

    def _save_mlp(self, path: Path) -> None:
        """MLIP-2's ``MaxvolSelection::Save`` layout: the ``.mtp`` text, ``\\n^``, the four
        float64 selection weights (site energy, energy, forces, stress = 0, 1, 0, 0),
        ``\\n#``, A and A⁻¹ᵀ as P×P float64 (native byte order, as mlp), ``\\n``, one line
        ``row config`` per row of A (uninitialised rows share one empty configuration), then
        the configurations (mlp's lossless text, ``%.16e``), each once, in row order."""
        from mtpjax.io.mtp_file import format_mtp

        if self.weighting == "molecules":
            raise InputError("mlp's .als has no weighting field and assumes 'vibrations': save "
                             "a 'molecules' state in the npz format (another file name)", path)
        order: dict = {}
        for lab in self.maxvol.labels:
            order.setdefault(lab, len(order))
        missing = [lab for lab in order if lab is not None and lab not in self.active_configs]
        if missing:
            raise ValueError(f"no configuration for active-set rows {missing[:3]}")
        with open(path, "wb") as fh:
            fh.write(format_mtp(self.potential).rstrip("\n").encode() + b"\n^")
            fh.write(np.array([0.0, 1.0, 0.0, 0.0], "=f8").tobytes() + b"\n#")
            fh.write(np.ascontiguousarray(self.maxvol.A, "=f8").tobytes())
            fh.write(np.ascontiguousarray(self.maxvol.A_inv.T, "=f8").tobytes() + b"\n")
            fh.write("".join(f"{i} {order[lab]}\n"
                             for i, lab in enumerate(self.maxvol.labels)).encode())
            for lab in order:
                cfg = None if lab is None else _as_configuration(self.active_configs[lab])
                fh.write(_mlp_lossless(cfg).encode())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Grader:
        """Read a state written by :meth:`save`."""
        import tempfile

        from mtpjax.io.cfg import read_cfg
        from mtpjax.io.mtp_file import read_mtp

        path = Path(path)
        if not path.exists():
            raise InputError("no such file", path)
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head.startswith(b"MTP"):
            return cls._load_mlp(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["format"]) != "mtpjax-active-set-1":
                    raise InputError("not an mtpjax active-set file", path)
                data = {k: z[k] for k in z.files}
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"not an mtpjax active-set file ({exc})", path) from exc
        with tempfile.TemporaryDirectory() as tmp:
            pot_path = Path(tmp) / "pot.mtp"
            pot_path.write_text(str(data["potential"]))
            pot = read_mtp(pot_path)
            cfg_path = Path(tmp) / "active.cfg"
            cfg_path.write_text(str(data["configs"]))
            configs = read_cfg(cfg_path) if str(data["configs"]).strip() else []
        rows = [int(r) for r in data["row_config"]]
        labels = [None if r < 0 else ("active", r) for r in rows]
        mv = MaxVol(np.array(data["A"]), np.array(data["A_inv"]),
                    float(data["init_threshold"]), labels, float(data["log_det"]))
        grader = cls(pot, mv, str(data["weighting"]))
        grader.active_configs = {("active", n): c for n, c in enumerate(configs)}
        return grader


    @classmethod
    def _load_mlp(cls, path: Path) -> Grader:
        """Read the potential and A, A⁻¹ of an ``mlp`` ``.als`` state (MLIP-2 layout: the
        ``.mtp`` text, ``\\n^``, 4 float64 selection weights, ``\\n#``, A and A⁻¹ᵀ as P×P
        float64, then the row-to-configuration table and the configurations, not read here)."""
        import tempfile

        from mtpjax.io.mtp_file import read_mtp

        data = path.read_bytes()
        cut = data.find(b"\n^")
        if cut < 0:
            raise InputError("not an mlp active-learning state (no '^' after the potential)",
                             path)
        with tempfile.TemporaryDirectory() as tmp:
            pot_path = Path(tmp) / "pot.mtp"
            pot_path.write_bytes(data[:cut] + b"\n")
            try:
                pot = read_mtp(pot_path)
            except InputError as exc:
                raise InputError(f"potential part of the mlp state: {exc.message}", path) from exc
        pos = cut + 2
        weights = np.frombuffer(data[pos:pos + 32], "<f8")
        if weights.size != 4:
            raise InputError("truncated mlp active-learning state", path)
        if weights[1] == 0 or np.any(weights[[0, 2, 3]] != 0):
            raise InputError("only energy-weighted mlp states are supported (weights nbh, "
                             f"energy, forces, stress = {weights.tolist()})", path)
        pos = data.find(b"#", pos + 32) + 1
        from mtpjax.model import ModelSpec

        n = coefficient_count(ModelSpec.from_potential(pot))
        mats = np.frombuffer(data[pos:pos + 16 * n * n], "<f8")
        if pos == 0 or mats.size != 2 * n * n:
            raise InputError(f"truncated mlp active-learning state (expected two {n}×{n} "
                             "matrices)", path)
        A = mats[:n * n].reshape(n, n).copy()
        A_inv = mats[n * n:].reshape(n, n).T.copy()  # stored column by column
        labels, configs = _mlp_rows_and_configs(data[pos + 16 * n * n:], n, path)
        sign, logdet = np.linalg.slogdet(A)
        mv = MaxVol(A, A_inv, float("nan"), labels, float(logdet))
        grader = cls(pot, mv)
        grader.active_configs = configs
        return grader


def _mlp_rows_and_configs(tail: bytes, n: int, path: Path) -> tuple[list, dict]:
    """Labels of A's rows (``("active", k)``, ``None`` for the empty configuration of
    uninitialised rows) and the configurations ``{("active", k): Configuration}`` of the text
    after the matrices of an mlp ``.als`` (``row config`` lines, then the configurations)."""
    import tempfile

    from mtpjax.io.cfg import read_cfg

    text = tail.decode("utf-8", errors="replace")
    head, sep, body = text.partition("BEGIN_CFG")
    try:
        table = [int(v) for v in head.split()]
    except ValueError:
        table = []
    if len(table) != 2 * n or table[0::2] != list(range(n)):
        raise InputError(f"mlp active-learning state: expected {n} 'row configuration' lines "
                         "after the matrices", path)
    blocks = [sep + b for b in body.split("BEGIN_CFG")] if sep else []
    sizes = []
    for b in blocks:
        parts = b.split()
        sizes.append(int(parts[2]) if len(parts) > 2 and parts[1] == "Size"
                     and parts[2].isdigit() else -1)
    cfg_of_row = table[1::2]
    if cfg_of_row and max(cfg_of_row) >= len(blocks):
        raise InputError(f"mlp active-learning state: row table names configuration "
                         f"{max(cfg_of_row)} but only {len(blocks)} follow", path)
    keep = [k for k, size in enumerate(sizes) if size != 0]
    configs: dict = {}
    if keep:
        with tempfile.TemporaryDirectory() as tmp:
            cfg_path = Path(tmp) / "active.cfg"
            cfg_path.write_text("".join(blocks[k] for k in keep))
            try:
                for k, c in zip(keep, read_cfg(cfg_path), strict=True):
                    configs[("active", k)] = c
            except InputError as exc:
                raise InputError(f"configurations of the mlp state: {exc.message}",
                                 path) from exc
    labels = [("active", k) if sizes[k] != 0 else None for k in cfg_of_row]
    return labels, configs


def _mlp_lossless(cfg) -> str:
    """mlp's ``Configuration::Save(..., SAVE_NO_LOSS)`` text (``%.16e``, ``END_CFG`` and a
    blank line) of a :class:`~mtpjax.io.cfg.Configuration`; ``None``: mlp's empty
    configuration (size 0, unit lattice)."""
    e = "{:.16e}".format
    if cfg is None:
        n, cell = 0, np.eye(3)
    else:
        n = len(cfg)
        cell = np.zeros((3, 3)) if cfg.cell is None else np.where(
            np.asarray(cfg.pbc, bool)[:, None], np.asarray(cfg.cell, np.float64), 0.0)
    lines = ["BEGIN_CFG", " Size", f"    {n}"]
    count = max([a + 1 for a in range(3) if np.any(cell[a] != 0)], default=0)
    if count:
        lines.append(" Supercell")
        lines += ["    " + " ".join(e(v) for v in cell[a]) for a in range(count)]
    forces = None if cfg is None else cfg.forces
    lines.append(" AtomData:  id type       cartes_x      cartes_y      cartes_z"
                 + ("           fx          fy          fz" if forces is not None else ""))
    for i in range(n):
        row = f"    {i + 1} {int(cfg.types[i])}  " + " ".join(e(v) for v in cfg.positions[i])
        if forces is not None:
            row += "  " + " ".join(e(v) for v in forces[i])
        lines.append(row)
    if cfg is not None and cfg.energy is not None:
        lines += [" Energy", f"    {e(cfg.energy)}"]
    if cfg is not None and cfg.plus_stress is not None:
        lines.append(" PlusStress:  xx          yy          zz          yz          xz"
                     "          xy")
        lines.append("     " + " ".join(e(v) for v in cfg.plus_stress))
    for key, value in ({} if cfg is None else cfg.features).items():
        lines.append(f" Feature   {key}\t{value}")
    lines.append("END_CFG")
    return "\n".join(lines) + "\n\n"


@dataclass
class _AtomsView:
    positions: np.ndarray
    types: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray


def _as_configuration(c):
    from mtpjax.io.cfg import Configuration

    if isinstance(c, Configuration):
        return c
    return Configuration(positions=np.asarray(c.positions), types=np.asarray(c.types),
                         cell=None if c.cell is None else np.asarray(c.cell),
                         pbc=np.asarray(c.pbc, bool))


def training_grader(potential, train, *, init_threshold: float = INIT_THRESHOLD,
                    select_threshold: float = SELECT_THRESHOLD,
                    swap_threshold: float = SWAP_THRESHOLD, weighting: str = "vibrations"
                    ) -> Grader:
    """A :class:`Grader` whose active set is selected from ``train`` (configurations), as
    ``mlp calc-grade`` does (train rows selected with ``select_threshold``/``swap_threshold``)."""
    grader = Grader(potential, weighting=weighting, init_threshold=init_threshold)
    grader.select(list(train), select_threshold, swap_threshold, tag="train")
    return grader
