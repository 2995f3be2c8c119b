"""Model bundles for ``pair_style jax/kk`` of lammps-jax (github.com/abhijeetgangan/lammps-jax).

A bundle is one JSON file: the MTP (coefficients baked in) exported with ``jax.export`` as
portable StableHLO, run by the lammps-jax plugin through a PJRT runtime, plus the contract the
plugin checks at ``pair_coeff`` time. The contract followed here is lammps-jax's "sparse-edge"
ABI as its exporter (``python/lammps_jax/export.py``) and pair style
(``cpp/pair_jax_kokkos.cpp``) define it; docs/lammps.md describes it and what was and was not
checked against lammps-jax itself.

Inputs of every program, in this order (``max_atoms`` = N, ``max_edges`` = E, fixed sizes):

* ``positions`` float [N, 3] (Å): local atoms in rows 0…nlocal−1, then ghost atoms (periodic
  images and atoms of other ranks, at their image coordinates), then padding;
* ``species`` int32 [N]: LAMMPS type − 1 (= the MLIP type index);
* ``nlocal``, ``nghost`` int32 scalars;
* ``senders``, ``receivers`` int32 [E], ``edge_mask`` bool [E]: the LAMMPS full neighbour list
  as edges sender → receiver (pair vector x_receiver − x_sender), in any order; padding edges
  have ``edge_mask`` False (the plugin writes N there).

Outputs: ``energy`` float scalar = Σ of the site energies of the local atoms (eV);
``forces`` float [N, 3] = −∂energy/∂positions (eV/Å) on local *and* ghost rows: with
``newton on`` LAMMPS adds the ghost rows to their owners by reverse communication, and its
f·r tally over all rows gives the virial. Programs: ``energy``, ``forces``, ``energy_and_forces``.

Only edges whose sender is a local atom are used (an MTP site energy needs the full
neighbourhood of its atom, which LAMMPS gives for local atoms); they are packed into padded
rows [N, ``max_neighbors``] in the program and evaluated by
:func:`mtpjax.potential.energy_forces_virial`. A local atom with more than ``max_neighbors``
listed neighbours makes energy and forces NaN (never a silently truncated neighbourhood).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mtpjax.model import ModelSpec
from mtpjax.potential import (
    CPU_BLOCK_SIZE,
    Neighbors,
    energy_forces_virial,
    pair_vectors,
    site_energies,
)
from mtpjax.potential_data import MTPotential

#: lammps-jax's tag for bundles with ``n_hops`` > 1 (full neighbour rows, ghost rows included)
BUNDLE_FORMAT = "lammps-jax-json-distributed"
#: lammps-jax's ``n_hops``: 2 is the smallest setting under which the plugin, with newton on,
#: requests a *full* neighbour list (ghost shell 2·cutoff + skin); an MTP itself needs one hop
N_HOPS = 2
#: program inputs, in order (the plugin's fixed ABI)
INPUTS = ("positions", "species", "nlocal", "nghost", "senders", "receivers", "edge_mask")
PROGRAMS = ("energy", "forces", "energy_and_forces")
PRECISIONS = ("float64", "float32")
PLATFORMS = ("cuda", "cpu")


def rows_from_edges(senders, receivers, edge_mask, nlocal, n_atoms: int, capacity: int):
    """Padded neighbour rows of the local atoms from a sparse edge list (pure, jit-able).

    Args:
        senders, receivers: int [E] atom indices; edge_mask: bool [E] real edges.
        nlocal: int scalar; only edges with ``sender < nlocal`` are kept.
        n_atoms: N rows; capacity: J slots per row.
    Returns:
        (idx int32 [N, J] receiver of each slot (the row's own index where empty),
        mask bool [N, J], overflow bool scalar: some local atom has more than J edges).
    """
    n_edges = senders.shape[0]
    senders = senders.astype(jnp.int32)
    keep = edge_mask & (senders >= 0) & (senders < nlocal)
    key = jnp.where(keep, senders, n_atoms)  # dropped edges sort last
    order = jnp.argsort(key, stable=True)
    key_sorted = key[order]
    receivers_sorted = jnp.where(keep, receivers, 0).astype(jnp.int32)[order]
    counts = jnp.zeros(n_atoms + 1, jnp.int32).at[key].add(1)
    starts = jnp.cumsum(counts) - counts
    slot = jnp.arange(n_edges, dtype=jnp.int32) - starts[key_sorted]
    fits = (key_sorted < n_atoms) & (slot < capacity)
    row = jnp.where(fits, key_sorted, n_atoms)  # out of range: dropped by the scatter
    col = jnp.where(fits, slot, 0)
    own = jnp.broadcast_to(jnp.arange(n_atoms, dtype=jnp.int32)[:, None], (n_atoms, capacity))
    idx = own.at[row, col].set(receivers_sorted, mode="drop")
    mask = jnp.zeros((n_atoms, capacity), bool).at[row, col].set(True, mode="drop")
    return idx, mask, jnp.any(counts[:n_atoms] > capacity)


def _neighbors(positions, species, nlocal, senders, receivers, edge_mask, capacity):
    n = positions.shape[0]
    idx, mask, overflow = rows_from_edges(senders, receivers, edge_mask, nlocal, n, capacity)
    nbrs = Neighbors(idx, jnp.zeros(idx.shape + (3,), positions.dtype), mask)
    return nbrs, jnp.arange(n) < nlocal, overflow


def lammps_energy_forces(spec: ModelSpec, params, positions, species, nlocal, nghost, senders,
                         receivers, edge_mask, *, capacity: int, block_size=None):
    """(energy of the local atoms (eV), forces float [N, 3] on every row (eV/Å)) from the
    lammps-jax inputs (module docstring); NaN when a row overflows ``capacity``."""
    del nghost  # part of the ABI; ghost rows are told apart by nlocal alone
    nbrs, local, overflow = _neighbors(positions, species, nlocal, senders, receivers,
                                       edge_mask, capacity)
    cell = jnp.zeros((3, 3), positions.dtype)
    energy, forces, _ = energy_forces_virial(spec, params, positions, cell, species, nbrs,
                                             atom_mask=local, block_size=block_size)
    nan = jnp.asarray(jnp.nan, positions.dtype)
    return jnp.where(overflow, nan, energy), jnp.where(overflow, nan, forces)


def lammps_energy(spec: ModelSpec, params, positions, species, nlocal, nghost, senders,
                  receivers, edge_mask, *, capacity: int, block_size=None):
    """Energy of the local atoms (eV) alone (no reverse pass); NaN on overflow."""
    del nghost
    nbrs, local, overflow = _neighbors(positions, species, nlocal, senders, receivers,
                                       edge_mask, capacity)
    cell = jnp.zeros((3, 3), positions.dtype)
    sites = site_energies(spec, params, pair_vectors(positions, cell, nbrs), species,
                          species[nbrs.idx], nbrs.mask, block_size=block_size)
    energy = jnp.sum(jnp.where(local, sites, 0.0))
    return jnp.where(overflow, jnp.asarray(jnp.nan, positions.dtype), energy)


def abi(max_atoms: int, max_edges: int, dtype) -> tuple[jax.ShapeDtypeStruct, ...]:
    """Shapes and dtypes of the program inputs (:data:`INPUTS`)."""
    i32 = jnp.int32
    return (jax.ShapeDtypeStruct((max_atoms, 3), dtype), jax.ShapeDtypeStruct((max_atoms,), i32),
            jax.ShapeDtypeStruct((), i32), jax.ShapeDtypeStruct((), i32),
            jax.ShapeDtypeStruct((max_edges,), i32), jax.ShapeDtypeStruct((max_edges,), i32),
            jax.ShapeDtypeStruct((max_edges,), jnp.bool_))


def _program_functions(pot: MTPotential, dtype, capacity: int, block_size):
    spec = ModelSpec.from_potential(pot)
    params = {k: jnp.asarray(v, dtype) for k, v in pot.params().items()}
    both = partial(lammps_energy_forces, spec, params, capacity=capacity, block_size=block_size)
    return {
        "energy": partial(lammps_energy, spec, params, capacity=capacity, block_size=block_size),
        "forces": lambda *args: both(*args)[1],
        "energy_and_forces": both,
    }


def _strip_debug_options(options: bytes) -> bytes:
    """Serialized ``CompileOptions`` without ``executable_build_options.debug_options`` (field
    3 in field 3): shipped debug options would override the XLA flags of the runtime."""

    def varint(buf, i):
        value, shift = 0, 0
        while True:
            byte = buf[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, i

    def fields(buf):
        i = 0
        while i < len(buf):
            start = i
            tag, i = varint(buf, i)
            wire, payload = tag & 7, b""
            if wire == 0:
                _, i = varint(buf, i)
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            elif wire == 2:
                length, i = varint(buf, i)
                payload = buf[i:i + length]
                i += length
            else:
                raise ValueError(f"unexpected protobuf wire type {wire}")
            yield tag >> 3, wire, buf[start:i], payload

    def encode(number, payload):
        out = bytearray()
        for value in (number << 3 | 2, len(payload)):
            while value > 0x7F:
                out.append(value & 0x7F | 0x80)
                value >>= 7
            out.append(value)
        return bytes(out) + payload

    result = bytearray()
    for number, wire, raw, payload in fields(options):
        if number == 3 and wire == 2:
            result += encode(3, b"".join(r for n, _, r, _ in fields(payload) if n != 3))
        else:
            result += raw
    return bytes(result)


def _compile_options() -> str:
    from jaxlib import xla_client

    options = xla_client.CompileOptions()
    options.num_replicas = 1
    options.num_partitions = 1
    options.compile_portable_executable = True  # run on the plugin's device, not device 0
    return base64.b64encode(_strip_debug_options(options.SerializeAsString())).decode("ascii")


def export_bundle(pot: MTPotential, *, max_atoms: int, max_edges: int | None = None,
                  max_neighbors: int = 96, precision: str = "float64",
                  platform: str = "cuda", block_size: int | None | str = "platform") -> dict:
    """The lammps-jax bundle (a JSON-able dict) of a trained potential.

    Args:
        max_atoms: per-rank capacity, local + ghost atoms (LAMMPS stops when exceeded).
        max_edges: per-rank edge capacity (default ``max_atoms · max_neighbors``).
        max_neighbors: slots per local atom for the listed neighbours within cutoff + skin.
        precision: ``"float64"`` or ``"float32"`` (positions, energy, forces).
        platform: ``"cuda"`` (what ``pair_style jax/kk`` runs) or ``"cpu"``.
        block_size: atoms per block of the reverse pass; ``"platform"``: one block on a GPU,
            :data:`~mtpjax.potential.CPU_BLOCK_SIZE` on a CPU.
    """
    if not pot.is_trained:
        raise ValueError("the potential has no coefficients (an untrained template?)")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {PLATFORMS}, got {platform!r}")
    if max_atoms < 1 or max_neighbors < 1:
        raise ValueError("max_atoms and max_neighbors must be ≥ 1")
    max_edges = int(max_atoms * max_neighbors if max_edges is None else max_edges)
    if max_edges < 1:
        raise ValueError("max_edges must be ≥ 1")
    if block_size == "platform":
        block_size = CPU_BLOCK_SIZE if platform == "cpu" else None
    programs = {}
    with jax.enable_x64(precision == "float64"), jax.default_matmul_precision("highest"):
        dtype = jnp.float64 if precision == "float64" else jnp.float32
        functions = _program_functions(pot, dtype, int(max_neighbors), block_size)
        for name in PROGRAMS:
            exported = jax.export.export(jax.jit(functions[name], keep_unused=True),
                                         platforms=(platform,))(*abi(max_atoms, max_edges, dtype))
            programs[f"{name}_mlir_b64"] = base64.b64encode(
                exported.mlir_module_serialized).decode("ascii")
    programs["force_mlir_b64"] = programs.pop("forces_mlir_b64")
    import jaxlib

    from mtpjax import __version__

    return {
        "format": BUNDLE_FORMAT,
        "programs": programs,
        "compile_options_b64": _compile_options(),
        "contract": {
            "input_layout": "sparse-edge",
            "max_atoms": int(max_atoms),
            "max_edges": max_edges,
            "cutoff": float(pot.max_dist),
            "unit_style": "metal",
            "precision": precision,
            "force_output": "atom-force",
            "newton": "on",
            "n_hops": N_HOPS,
            "edge_pairing": "full",
            "comm_widths": [],
            "custom_call_targets": [],
            "uses_box": False,
            "n_species": int(pot.species_count),
        },
        "export_info": {
            "jax_version": jax.__version__,
            "jaxlib_version": jaxlib.__version__,
            "platform": platform,
        },
        # numbers and fixed words only, so that lammps-jax's first-match key lookup cannot
        # mistake a value here for a key
        "mtpjax": {"version": __version__, "max_neighbors": int(max_neighbors)},
    }


def write_bundle(path, bundle: dict) -> None:
    """Write ``bundle`` as JSON with sorted keys (lammps-jax reads it by first key match)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(bundle, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def load_bundle(bundle: dict | str | os.PathLike) -> dict:
    """The programs of a bundle as JAX callables over the :data:`INPUTS` (numpy or jax arrays):
    ``{"energy": f, "forces": f, "energy_and_forces": f}``.

    Each runs the very bytes stored in the bundle (the StableHLO the lammps-jax plugin
    compiles), wrapped as a :class:`jax.export.Exported` whose calling convention is rebuilt
    from the contract; a ``cuda`` bundle also runs on a CPU (the platform check is waived).
    Float64 bundles need ``jax_enable_x64``.
    """
    if not isinstance(bundle, dict):
        bundle = json.loads(Path(bundle).read_text(encoding="utf-8"))
    contract = bundle["contract"]
    dtype = jnp.float64 if contract["precision"] == "float64" else jnp.float32
    shapes = abi(contract["max_atoms"], contract["max_edges"], dtype)
    n = contract["max_atoms"]
    outputs = {"energy": lambda *a: jnp.zeros((), dtype),
               "forces": lambda *a: jnp.zeros((n, 3), dtype),
               "energy_and_forces": lambda *a: (jnp.zeros((), dtype), jnp.zeros((n, 3), dtype))}
    keys = {"energy": "energy_mlir_b64", "forces": "force_mlir_b64",
            "energy_and_forces": "energy_and_forces_mlir_b64"}
    platform = bundle.get("export_info", {}).get("platform", "cuda")
    calls = {}
    for name, key in keys.items():
        # an Exported with the right calling convention, then the bundle's module in it
        template = jax.export.export(jax.jit(outputs[name], keep_unused=True),
                                     platforms=(platform,))(*shapes)
        exported = dataclasses.replace(
            template, fun_name=name,
            mlir_module_serialized=base64.b64decode(bundle["programs"][key]),
            disabled_safety_checks=(jax.export.DisabledSafetyCheck.platform(),))
        calls[name] = jax.jit(exported.call)  # compiled once per input shapes
    return calls


def pad_inputs(bundle_contract: dict, positions, species, nlocal: int, senders, receivers):
    """The program inputs (:data:`INPUTS`, numpy) of ``nlocal`` local + ghost atoms and an
    edge list, padded as the lammps-jax plugin pads them (padding edges point at row N)."""
    n, e = bundle_contract["max_atoms"], bundle_contract["max_edges"]
    positions = np.asarray(positions)
    if len(positions) > n or len(senders) > e:
        raise ValueError(f"{len(positions)} atoms / {len(senders)} edges exceed the bundle's "
                         f"capacity of {n} atoms / {e} edges")
    dtype = np.float64 if bundle_contract["precision"] == "float64" else np.float32
    x = np.zeros((n, 3), dtype)
    x[:len(positions)] = positions
    t = np.zeros(n, np.int32)
    t[:len(species)] = species
    s = np.full(e, n, np.int32)
    r = np.full(e, n, np.int32)
    m = np.zeros(e, bool)
    s[:len(senders)], r[:len(receivers)], m[:len(senders)] = senders, receivers, True
    return (x, t, np.int32(nlocal), np.int32(len(positions) - nlocal), s, r, m)
