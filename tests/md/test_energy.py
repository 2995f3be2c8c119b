"""MD forces equal the core's (and MTPCalculator's); the jax-md energy function works with
``space.periodic_general`` (real and fractional coordinates, wrapped positions, stress)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from md.config import StageConfig
from md.energy import energy_forces_virial, load_model, mtp_energy_fn, neighbor_list_fn
from md.runner import Simulation
from md.units import KB, MVV2E
from mtpjax.calculator import MTPCalculator
from mtpjax.neighbors import allocate
from mtpjax.potential import energy_forces_virial as core_efv
from tests.md.conftest import diamond


def _core(pot_path, atoms):
    _, spec, params = load_model(pot_path)
    params = {k: jnp.asarray(v) for k, v in params.items()}
    nl = allocate(atoms.positions, atoms.cell.array, True, spec.max_dist, 0.5)
    types = jnp.zeros(len(atoms), jnp.int32)
    args = (jnp.asarray(atoms.positions), jnp.asarray(atoms.cell.array), types, nl.neighbors)
    return spec, params, nl, args


@pytest.mark.parametrize("cell", ["si64", "triclinic_si"])
def test_block_energy_equals_core(pot_path, cell, request):
    atoms = request.getfixturevalue(cell)
    spec, params, _, args = _core(pot_path, atoms)
    e0, f0, w0 = core_efv(spec, params, *args)
    e1, f1, w1 = energy_forces_virial(spec, params, *args)
    assert abs(float(e0) - float(e1)) < 1e-9
    np.testing.assert_allclose(f1, f0, atol=1e-10)
    np.testing.assert_allclose(w1, w0, atol=1e-9)
    assert np.abs(np.asarray(f0)).max() > 0.1  # a rattled cell has real forces


def test_md_forces_equal_calculator_after_steps(pot_path, si64):
    """Forces held by the MD state after 30 NVE steps (positions moved, list reused) equal a
    fresh MTPCalculator evaluation at the same positions."""
    sim = Simulation(pot_path, si64, timestep_fs=1.0, temperature_K=900, skin_A=1.0)
    sim.run_stage(StageConfig("nve", "nve", 30, 900.0, 900.0))
    atoms = sim.atoms()
    atoms.calc = MTPCalculator(str(pot_path), species=["Si"])
    np.testing.assert_allclose(sim.forces(), atoms.get_forces(), atol=1e-9)
    assert abs(float(sim.state.energy) - atoms.get_potential_energy()) < 1e-8
    virial = np.asarray(sim.state.virial)
    s = atoms.get_stress(voigt=False)
    np.testing.assert_allclose(virial / atoms.get_volume(), s, atol=1e-9)


@pytest.mark.parametrize("fractional", [False, True])
def test_jax_md_energy_fn(pot_path, triclinic_si, fractional):
    from jax_md import quantity, space

    atoms = triclinic_si
    cell = atoms.cell.array
    box = jnp.asarray(cell.T)  # jax-md: lattice vectors as columns
    spec, params, nl, args = _core(pot_path, atoms)
    e0, f0, w0 = core_efv(spec, params, *args)

    energy_fn = mtp_energy_fn(pot_path, fractional_coordinates=fractional)
    nbr_fns = neighbor_list_fn(spec.max_dist, skin=0.5, fractional_coordinates=fractional)
    frac = atoms.get_scaled_positions(wrap=False)
    R = jnp.asarray(frac if fractional else atoms.positions)
    nbrs = nbr_fns.allocate(R, box)
    e = energy_fn(R, nbrs, box=box)
    f = -jax.grad(energy_fn)(R, nbrs, box=box)  # real-space forces in both modes
    assert abs(float(e) - float(e0)) < 1e-9
    np.testing.assert_allclose(f, f0, atol=1e-9)

    # positions wrapped by lattice vectors (what periodic_general's shift_fn does)
    shift = np.zeros_like(frac)
    shift[::3] = [1, -2, 1]
    frac_w = frac + shift
    R_w = jnp.asarray(frac_w if fractional else frac_w @ cell)
    assert abs(float(energy_fn(R_w, nbrs, box=box)) - float(e0)) < 1e-9
    np.testing.assert_allclose(-jax.grad(energy_fn)(R_w, nbrs, box=box), f0, atol=1e-9)

    # jax-md's stress (perturbation hook) is the pressure tensor −W/V
    stress = quantity.stress(energy_fn, R, box, neighbor=nbrs)
    np.testing.assert_allclose(stress, -np.asarray(w0) / atoms.get_volume(), atol=1e-9)
    _ = space  # the module must import (users build their shift_fn with it)


def test_jax_md_nve_matches_md_runner(pot_path, si64):
    """jax-md's own NVE integrator driven by the MTP energy_fn reproduces md's NVE."""
    from jax_md import simulate, space

    atoms = si64
    box = jnp.asarray(atoms.cell.array.T)
    _, spec, _ = load_model(pot_path)
    _, shift_fn = space.periodic_general(box, fractional_coordinates=False)
    energy_fn = mtp_energy_fn(pot_path)
    nbr_fns = neighbor_list_fn(spec.max_dist, skin=1.0)
    sim = Simulation(pot_path, atoms, timestep_fs=1.0, temperature_K=600, seed=4, skin_A=1.0)
    v0 = sim.velocities()
    R = jnp.asarray(sim.positions())
    nbrs = nbr_fns.allocate(R, box)
    # eV, Å, amu: jax-md's time unit is sqrt(amu Å²/eV) = 10.18 fs
    dt = 1.0 / np.sqrt(MVV2E)
    masses = jnp.asarray(atoms.get_masses())
    init, apply = simulate.nve(energy_fn, shift_fn, dt)
    state = init(jax.random.PRNGKey(0), R, kT=0.0, mass=masses[:, None], neighbor=nbrs,
                 box=box, momenta=masses[:, None] * v0 * np.sqrt(MVV2E))

    # the whole loop, list updates included, is one compiled lax.fori_loop
    def body(_, carry):
        state, nbrs = carry
        state = apply(state, neighbor=nbrs, box=box)
        return state, nbr_fns.update(state.position, nbrs, box)

    run = jax.jit(lambda c: jax.lax.fori_loop(0, 20, body, c))
    state, nbrs = run((state, nbrs))
    assert not bool(nbrs.did_buffer_overflow)
    sim.run_stage(StageConfig("nve", "nve", 20, 600.0, 600.0))
    ours = sim.atoms().get_scaled_positions(wrap=True)
    theirs = np.asarray(state.position) @ np.linalg.inv(atoms.cell.array)
    theirs -= np.floor(theirs)
    d = (ours - theirs + 0.5) % 1.0 - 0.5
    assert np.abs(d @ atoms.cell.array).max() < 1e-8


def test_jax_md_nve_fori_loop_conserves_energy(pot_path):
    """A hot 216-atom cell under jax-md's NVE in one lax.fori_loop: the on-device list is
    rebuilt inside the loop (several times) and the total energy is conserved."""
    from jax_md import quantity, simulate, space

    atoms = diamond(3, rattle=0.1, seed=5)
    box = jnp.asarray(atoms.cell.array.T)
    _, spec, _ = load_model(pot_path)
    _, shift_fn = space.periodic_general(box, fractional_coordinates=False)
    energy_fn = mtp_energy_fn(pot_path)
    nbr_fns = neighbor_list_fn(spec.max_dist, skin=0.4)
    masses = jnp.asarray(atoms.get_masses())[:, None]
    dt = 1.0 / np.sqrt(MVV2E)  # 1 fs
    init, apply = simulate.nve(energy_fn, shift_fn, dt)
    R = jnp.asarray(atoms.positions)
    nbrs = nbr_fns.allocate(R, box)
    state = init(jax.random.PRNGKey(1), R, kT=KB * 1500.0, mass=masses, neighbor=nbrs, box=box)

    def total(state, nbrs):
        kin = quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)
        return energy_fn(state.position, nbrs, box=box) + kin

    def body(_, carry):
        state, nbrs = carry
        state = apply(state, neighbor=nbrs, box=box)
        return state, nbr_fns.update(state.position, nbrs, box)

    e0 = float(total(state, nbrs))
    state, nbrs = jax.jit(lambda c: jax.lax.fori_loop(0, 200, body, c))((state, nbrs))
    assert not bool(nbrs.did_buffer_overflow)
    assert int(nbrs.rebuilds) >= 2
    drift = abs(float(total(state, nbrs)) - e0) / len(atoms)
    assert drift < 2e-4, drift  # eV/atom over 200 fs at 1 fs


@pytest.mark.parametrize("k", [25, 29])  # 2-atom cell (cutoff ≫ cell), skewed triclinic 16 atoms
def test_md_device_list_forces_equal_mlp_two_species(k):
    """The MD path (on-device cell list, chunked block evaluation) reproduces `mlp calc-efs`
    2.1.2 for a 2-species level-16 potential in cells far smaller than the cutoff."""
    from ase import Atoms

    root = Path(__file__).resolve().parents[1] / "data" / "parity" / "species2_L16"
    ref = np.load(root / "reference.npz")
    species = ["Si", "Ge"]
    atoms = Atoms([species[t] for t in ref[f"types_{k}"]], positions=ref[f"positions_{k}"],
                  cell=ref[f"cell_{k}"], pbc=True)
    sim = Simulation(root / "pot.mtp", atoms, species=species, temperature_K=0.0, skin_A=0.5)
    assert abs(float(sim.state.energy) - float(ref[f"energy_{k}"])) / len(atoms) < 1e-9
    np.testing.assert_allclose(sim.forces(), ref[f"forces_{k}"], atol=2e-6)


def test_two_potentials_of_one_template_in_one_process(pot_path, si64, tmp_path):
    """Two potentials of the same level and hyper-parameters (one ModelSpec) but different
    coefficients, run one after the other in one process (the pipeline's M''_L then M'_L
    students): each MD state holds its own potential's energy and forces. Before the fix the
    second run reused the first one's compiled engine, coefficients included."""
    from mtpjax.io.mtp_file import read_mtp, write_mtp

    pot = read_mtp(pot_path)
    params = pot.params()
    other = tmp_path / "other.mtp"
    write_mtp(other, pot.with_params({**params,
                                      "moment_coeffs": 1.1 * params["moment_coeffs"]}))
    for path in (pot_path, other, pot_path):
        sim = Simulation(path, si64, timestep_fs=1.0, temperature_K=0.0, skin_A=1.0)
        atoms = sim.atoms()
        atoms.calc = MTPCalculator(str(path), species=["Si"])
        assert abs(float(sim.state.energy) - atoms.get_potential_energy()) < 1e-8
        np.testing.assert_allclose(sim.forces(), atoms.get_forces(), atol=1e-9)
