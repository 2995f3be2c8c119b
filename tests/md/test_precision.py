"""Float32 programs use full-precision matrix products (no TF32 on GPUs, mtpjax.precision).

XLA's DEFAULT precision runs float32 ``dot_general`` in TF32 on NVIDIA GPUs; the H200 gave
level-16 float32 energies 3.4e-4 eV/atom off float64 that way (docs/gpu.md). On a CPU the
precision changes nothing, so these tests read it where it is decided: in the lowered program.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
from ase.build import bulk

import md.runner
import md.sharded
from md.config import StageConfig
from md.energy import mtp_energy_fn, neighbor_list_fn
from md.runner import Simulation
from mtpjax.calculator import MTPCalculator


def dot_precisions(text: str) -> list[str]:
    """The precision of every dot_general in a lowered (StableHLO) program."""
    found = re.findall(r"stablehlo\.dot_general[^\n]*?precision = \[(\w+), (\w+)\]", text)
    dots = text.count("stablehlo.dot_general")
    assert len(found) == dots, "a dot_general without a precision"
    return [p for pair in found for p in pair]


def assert_highest(text: str) -> None:
    precisions = dot_precisions(text)
    assert precisions, "no dot_general: the test would prove nothing"
    assert set(precisions) == {"HIGHEST"}, sorted(set(precisions))


def test_default_precision_is_what_the_check_sees():
    """The check itself: a plain float32 product lowers with DEFAULT (TF32 on a GPU)."""
    x = jnp.ones((4, 4), jnp.float32)
    assert set(dot_precisions(jax.jit(jnp.matmul).lower(x, x).as_text())) == {"DEFAULT"}


def _si(repeat=2):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=1)
    return atoms


def test_calculator_float32_program(pot_path):
    calc = MTPCalculator(str(pot_path), species=["Si"], dtype="float32")
    ev = calc.evaluator
    seen = []
    efv = ev._efv

    def spy(*args):
        seen.append(args)
        return efv(*args)

    ev._efv = spy
    atoms = _si()
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy())
    assert_highest(efv.lower(*seen[-1]).as_text())


def test_jax_md_functions_inside_a_callers_jit(pot_path):
    """energy_fn, its gradient and the neighbour update, traced in the user's own jit."""
    atoms = _si()
    box = jnp.asarray(atoms.cell.array.T, jnp.float32)
    energy_fn = mtp_energy_fn(pot_path, dtype=jnp.float32)
    nbr = neighbor_list_fn(energy_fn.spec.max_dist, skin=0.5, fractional_coordinates=True)
    R = jnp.asarray(atoms.get_scaled_positions(), jnp.float32)
    nl = nbr.allocate(R, box)

    def user_step(R, nl):
        nl = nbr.update(R, nl, box)
        return energy_fn(R, nl, box=box), jax.grad(energy_fn)(R, nl, box=box), nl

    assert_highest(jax.jit(user_step).lower(R, nl).as_text())


def test_md_programs_float32(pot_path, monkeypatch):
    """Every program the MD runner compiles (init, chunk, observables) in float32."""
    seen = []
    wrap = md.sharded._wrap

    def spy(fn, mesh, in_specs, out_specs):
        jitted = wrap(fn, mesh, in_specs, out_specs)

        def call(*args):
            seen.append((jitted, args))
            return jitted(*args)

        return call

    monkeypatch.setattr(md.sharded, "_wrap", spy)
    monkeypatch.setattr(md.runner, "_ENGINES", {})  # fresh engine: its programs made below
    sim = Simulation(str(pot_path), _si(), timestep_fs=1.0, temperature_K=300, seed=1,
                     skin_A=1.0, chunk_steps=5, thermo_every=5, dtype="float32")
    sim.run_stage(StageConfig("nvt", "nvt", 10, 300.0, 300.0, thermostat="langevin",
                              tau_t_fs=100.0))
    assert len(seen) >= 2, "the runner's programs were not seen (engine cached?)"
    for jitted, args in {id(j): (j, a) for j, a in seen}.values():
        assert_highest(jitted.lower(*args).as_text())
    assert np.isfinite(sim.history[-1]["E_pot"])
