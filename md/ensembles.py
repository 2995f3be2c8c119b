"""Integrators: NVE, NVT (Nosé–Hoover chain, Langevin), NPT (isotropic / fully flexible cell).

One step is the symmetric splitting  T(dt/2) · B(dt/2) · [barostat] · A(dt) · F · B(dt/2) · T(dt/2):

* T: thermostat half step — Nosé–Hoover chain (Martyna–Klein–Tuckerman, Frenkel & Smit
  Alg. 31, chain masses Q₁ = N_f k_B T τ², Q_j = k_B T τ²) or Langevin O-step
  (v ← c v + √((1−c²) k_B T/m) ξ, c = e^{−dt/(2τ)}; the pair T·…·T is OBABO);
* B: half kick with forces; A: drift; F: new forces (one MTP evaluation per step);
* barostat: stochastic cell rescaling (Bernetti & Bussi, J. Chem. Phys. 153, 114107 (2020);
  anisotropic form of Del Tatto, Raiteri, Bernetti & Bussi, Appl. Sci. 12, 1139 (2022)).
  Isotropic: dε = −(β/τ_p)(P₀ − P − k_BT/V) dt + √(2 k_BT β dt /(V τ_p)) R, cell ← e^{dε/3} cell.
  Flexible: a symmetric log-strain dε_ab = −(β/τ_p)(P₀δ_ab − P_ab − k_BTδ_ab/V) dt + noise,
  cell ← cell · exp(dε) (no rotation). Positions scale with the cell, velocities inversely.

Everything works on a *block* of atoms with a :class:`Comm` giving the collectives, so the same
code runs on one device (identity collectives) and inside ``shard_map`` (:mod:`md.sharded`).

Units: positions Å, velocities Å/fs, forces eV/Å, masses amu, time fs, energies eV, kT eV,
pressures eV/Å³ internally (GPa at the interfaces), τ in fs, compressibility β in 1/GPa.
The pressure tensor is P = (Σ m v⊗v − W)/V with W = ∂E/∂ε the core's virial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from md.units import EV_A3_TO_GPA, KB, MVV2E

ENSEMBLES = ("nve", "nvt", "npt")
THERMOSTATS = ("nhc", "langevin")
BAROSTATS = ("iso", "aniso")


@dataclass(frozen=True)
class Comm:
    """Collectives over the atom axis ``axis`` (``None``: a single block, identity ops)."""

    axis: str | None = None

    def sum(self, x):
        return x if self.axis is None else lax.psum(x, self.axis)

    def max(self, x):
        return x if self.axis is None else lax.pmax(x, self.axis)

    def gather(self, x):
        """Concatenate the blocks of all devices along axis 0 (tiled all-gather)."""
        return x if self.axis is None else lax.all_gather(x, self.axis, tiled=True)

    def scatter_sum(self, x):
        """Sum a full [N, ...] array over devices and keep this device's block."""
        return x if self.axis is None else lax.psum_scatter(x, self.axis, tiled=True)

    def index(self):
        return 0 if self.axis is None else lax.axis_index(self.axis)


@dataclass(frozen=True)
class EnsembleSpec:
    """Static description of an integrator (hashable; one compile per distinct spec).

    ensemble: ``nve`` | ``nvt`` | ``npt``; thermostat: ``nhc`` | ``langevin`` (nvt/npt);
    barostat: ``iso`` | ``aniso`` (npt). dt_fs: time step (fs). tau_t_fs, tau_p_fs: thermostat
    and barostat times (fs). compressibility: β (1/GPa). chain_length: NHC length.
    dof: degrees of freedom for the temperature (3N − 3 unless Langevin: 3N).
    """

    ensemble: str
    dt_fs: float
    dof: int
    thermostat: str = "nhc"
    barostat: str = "iso"
    tau_t_fs: float = 100.0
    tau_p_fs: float = 1000.0
    compressibility: float = 0.01
    chain_length: int = 3

    def __post_init__(self):
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {self.ensemble!r}")
        if self.ensemble != "nve" and self.thermostat not in THERMOSTATS:
            raise ValueError(f"thermostat must be one of {THERMOSTATS}, got {self.thermostat!r}")
        if self.ensemble == "npt" and self.barostat not in BAROSTATS:
            raise ValueError(f"barostat must be one of {BAROSTATS}, got {self.barostat!r}")
        for name in ("dt_fs", "tau_t_fs", "tau_p_fs", "compressibility"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.chain_length < 1:
            raise ValueError("chain_length must be ≥ 1")

    @property
    def thermostatted(self) -> bool:
        return self.ensemble in ("nvt", "npt")


class MDState(NamedTuple):
    """State of one block of atoms (a pytree). Per-atom fields are local to the block.

    positions [n, 3] Å (unwrapped between neighbour rebuilds); velocities [n, 3] Å/fs;
    forces [n, 3] eV/Å; masses [n] amu; cell [3, 3] Å (rows); energy () eV; virial [3, 3] eV;
    chain_xi, chain_v [M] Nosé–Hoover chain positions / velocities (1/fs);
    key: PRNG key; bath () eV: energy removed from the system by stochastic thermostat /
    barostat steps (adds to the conserved quantity); step () int.
    """

    positions: jax.Array
    velocities: jax.Array
    forces: jax.Array
    masses: jax.Array
    cell: jax.Array
    energy: jax.Array
    virial: jax.Array
    chain_xi: jax.Array
    chain_v: jax.Array
    key: jax.Array
    bath: jax.Array
    step: jax.Array


class Targets(NamedTuple):
    """Per-step targets: kT (eV) and P₀ (eV/Å³)."""

    kT: jax.Array
    pressure: jax.Array


def kinetic_tensor(velocities, masses, comm: Comm):
    """Σ m v⊗v (eV), [3, 3], summed over all blocks."""
    k = jnp.einsum("n,na,nb->ab", masses, velocities, velocities) * MVV2E
    return comm.sum(k)


def volume(cell):
    return jnp.abs(jnp.linalg.det(cell))


def pressure_tensor(state: MDState, comm: Comm):
    """Pressure tensor (eV/Å³), [3, 3]: (Σ m v⊗v − virial)/V."""
    return (kinetic_tensor(state.velocities, state.masses, comm) - state.virial) / volume(
        state.cell
    )


def chain_masses(spec: EnsembleSpec, kT):
    q = kT * spec.tau_t_fs**2 * jnp.ones(spec.chain_length)
    return q.at[0].multiply(spec.dof)


def _nhc_half(spec: EnsembleSpec, state: MDState, kT, comm: Comm) -> MDState:
    """Nosé–Hoover chain propagation over dt/2 (velocities scaled, chain advanced)."""
    dt = spec.dt_fs
    M = spec.chain_length
    Q = chain_masses(spec, kT)
    vxi = state.chain_v
    k2 = jnp.trace(kinetic_tensor(state.velocities, state.masses, comm))

    def force(j, k2, vxi):
        if j == 0:
            return (k2 - spec.dof * kT) / Q[0]
        return (Q[j - 1] * vxi[j - 1] ** 2 - kT) / Q[j]

    vxi = vxi.at[M - 1].add(0.25 * dt * force(M - 1, k2, vxi))
    for j in reversed(range(M - 1)):
        a = jnp.exp(-0.125 * dt * vxi[j + 1])
        vxi = vxi.at[j].set((vxi[j] * a + 0.25 * dt * force(j, k2, vxi)) * a)
    scale = jnp.exp(-0.5 * dt * vxi[0])
    velocities = state.velocities * scale
    k2 = k2 * scale**2
    xi = state.chain_xi + 0.5 * dt * vxi
    for j in range(M - 1):
        a = jnp.exp(-0.125 * dt * vxi[j + 1])
        vxi = vxi.at[j].set((vxi[j] * a + 0.25 * dt * force(j, k2, vxi)) * a)
    vxi = vxi.at[M - 1].add(0.25 * dt * force(M - 1, k2, vxi))
    return state._replace(velocities=velocities, chain_xi=xi, chain_v=vxi)


def atom_normal(key, atom_ids, dtype):
    """Normal noise [n, 3] for the atoms ``atom_ids`` [n] (global indices): atom i's numbers
    come from ``fold_in(key, i)``, so they do not depend on how atoms are split or ordered
    over devices (replicated blocks, spatial domains of :mod:`md.domain`)."""
    ids = jnp.asarray(atom_ids).astype(jnp.uint32)
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (3,), dtype))(ids)


def block_ids(n: int, comm: Comm):
    """Global indices [n] of the atoms of this contiguous block."""
    return comm.index() * n + jnp.arange(n)


def _langevin_half(spec: EnsembleSpec, state: MDState, kT, atom_mask, comm: Comm,
                   atom_ids=None) -> MDState:
    """Langevin O-step over dt/2; the kinetic energy change goes to ``bath``. ``atom_ids``:
    global index of each row (default: contiguous blocks), see :func:`atom_normal`."""
    key, sub = jax.random.split(state.key)
    c = jnp.exp(-0.5 * spec.dt_fs / spec.tau_t_fs)
    sigma = jnp.sqrt((1.0 - c * c) * kT / (state.masses * MVV2E))[:, None]
    ids = block_ids(state.velocities.shape[0], comm) if atom_ids is None else atom_ids
    noise = atom_normal(sub, ids, state.velocities.dtype)
    v = jnp.where(atom_mask[:, None], c * state.velocities + sigma * noise, 0.0)
    k_old = 0.5 * jnp.trace(kinetic_tensor(state.velocities, state.masses, comm))
    k_new = 0.5 * jnp.trace(kinetic_tensor(v, state.masses, comm))
    return state._replace(velocities=v, key=key, bath=state.bath - (k_new - k_old))


def thermostat_half(spec: EnsembleSpec, state: MDState, kT, atom_mask, comm: Comm,
                    atom_ids=None) -> MDState:
    if not spec.thermostatted:
        return state
    if spec.thermostat == "nhc":
        return _nhc_half(spec, state, kT, comm)
    return _langevin_half(spec, state, kT, atom_mask, comm, atom_ids)


def _barostat_strain(spec: EnsembleSpec, state: MDState, velocities, targets: Targets,
                     comm: Comm):
    """Deformation μ [3, 3] of one stochastic cell-rescaling step, and the new key."""
    dt = spec.dt_fs
    kT = targets.kT
    beta = spec.compressibility * EV_A3_TO_GPA  # 1/GPa → Å³/eV
    vol = volume(state.cell)
    p_tensor = (kinetic_tensor(velocities, state.masses, comm) - state.virial) / vol
    key, sub = jax.random.split(state.key)
    amp = jnp.sqrt(2.0 * kT * beta * dt / (vol * spec.tau_p_fs))
    eye = jnp.eye(3, dtype=velocities.dtype)
    if spec.barostat == "iso":
        p = jnp.trace(p_tensor) / 3.0
        deps = -(beta / spec.tau_p_fs) * (targets.pressure - p - kT / vol) * dt
        deps = deps + amp * jax.random.normal(sub, (), velocities.dtype)
        return eye * jnp.exp(deps / 3.0), key
    p_sym = 0.5 * (p_tensor + p_tensor.T)
    drift = -(beta / spec.tau_p_fs) * ((targets.pressure - kT / vol) * eye - p_sym) * dt
    r = jax.random.normal(sub, (3, 3), velocities.dtype)
    deps = drift + amp * 0.5 * (r + r.T) * jnp.where(eye > 0, 2.0 ** 0.5, 1.0)
    return jax.scipy.linalg.expm(deps), key


def make_step(spec: EnsembleSpec, force_fn, comm: Comm = Comm()):
    """Build ``step(state, topo, targets, nl) -> (state, nl)`` for one time step.

    ``force_fn(positions, cell, topo, nl) -> (positions, E eV, F [n, 3] eV/Å, virial [3, 3]
    eV, nl)`` evaluates the potential for this block (with collectives inside), first
    rebuilding the neighbour list ``nl`` if it is stale (which may wrap the positions into
    the cell: hence returned); ``topo`` carries ``atom_mask`` [n] and optionally
    ``atom_ids`` [n] (global atom indices for the Langevin noise; see :mod:`md.sharded`).
    """
    dt = spec.dt_fs

    def step(state: MDState, topo, targets: Targets, nl):
        mask = topo.atom_mask
        ids = getattr(topo, "atom_ids", None)
        state = thermostat_half(spec, state, targets.kT, mask, comm, ids)
        inv_m = (1.0 / (state.masses * MVV2E))[:, None]
        v = state.velocities + 0.5 * dt * state.forces * inv_m
        x = state.positions + dt * v
        cell, key, bath = state.cell, state.key, state.bath
        if spec.ensemble == "npt":
            mu, key = _barostat_strain(spec, state, v, targets, comm)
            k_old = 0.5 * jnp.trace(kinetic_tensor(v, state.masses, comm))
            v_old_vol = volume(cell)
            x = x @ mu
            v = v @ jnp.linalg.inv(mu)
            cell = cell @ mu
            k_new = 0.5 * jnp.trace(kinetic_tensor(v, state.masses, comm))
            bath = bath - (k_new - k_old) - targets.pressure * (volume(cell) - v_old_vol)
        x, energy, forces, virial, nl = force_fn(x, cell, topo, nl)
        if spec.ensemble == "npt":
            # work of the deformation on the potential, trapezoid: ΔU ≈ ½(W₀ + W₁) : (μ − I)
            strain = mu - jnp.eye(3, dtype=mu.dtype)
            bath = bath - 0.5 * jnp.sum((state.virial + virial) * strain)
        v = v + 0.5 * dt * forces * inv_m
        v = jnp.where(mask[:, None], v, 0.0)
        state = state._replace(positions=x, velocities=v, forces=forces, cell=cell,
                               energy=energy, virial=virial, key=key, bath=bath,
                               step=state.step + 1)
        return thermostat_half(spec, state, targets.kT, mask, comm, ids), nl

    return step


class Observables(NamedTuple):
    """Thermodynamic observables: T (K), P (GPa), V (Å³), E_pot, E_kin, E_tot, conserved (eV),
    stress tensor (GPa, pressure sign: compressive positive) [3, 3]."""

    T_K: jax.Array
    P_GPa: jax.Array
    V_A3: jax.Array
    E_pot: jax.Array
    E_kin: jax.Array
    E_tot: jax.Array
    conserved: jax.Array
    pressure_tensor_GPa: jax.Array


def observables(spec: EnsembleSpec, state: MDState, targets: Targets, comm: Comm = Comm()):
    """Observables of a state. ``conserved`` = E_tot + bath terms: NHC chain energy, P₀V (npt)
    and the energy removed by stochastic steps; it is constant up to integration error."""
    k_t = kinetic_tensor(state.velocities, state.masses, comm)
    e_kin = 0.5 * jnp.trace(k_t)
    vol = volume(state.cell)
    p_t = (k_t - state.virial) / vol
    e_tot = state.energy + e_kin
    conserved = e_tot + state.bath
    if spec.thermostatted and spec.thermostat == "nhc":
        q = chain_masses(spec, targets.kT)
        conserved = conserved + 0.5 * jnp.sum(q * state.chain_v**2)
        conserved = conserved + targets.kT * (spec.dof * state.chain_xi[0] + jnp.sum(
            state.chain_xi[1:]))
    if spec.ensemble == "npt":
        conserved = conserved + targets.pressure * vol
    return Observables(
        T_K=2.0 * e_kin / (spec.dof * KB),
        P_GPa=jnp.trace(p_t) / 3.0 * EV_A3_TO_GPA,
        V_A3=vol,
        E_pot=state.energy,
        E_kin=e_kin,
        E_tot=e_tot,
        conserved=conserved,
        pressure_tensor_GPa=p_t * EV_A3_TO_GPA,
    )
