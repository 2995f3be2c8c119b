"""A scaling model of domain-decomposed MD from measured numbers (a model, not a measurement).

Reads the 10⁶-atom device run of ``benchmarks/bench_md.py`` (``--devices 1 8 --sizes 1000000
--out bench_md_devices_1M``: per-device resident bytes, halo size, bytes sent per step, rebuild
share, neighbour-list shape) and projects, for liquid Si with the same cutoff and skin:

* the resident bytes per device of N atoms on D domains: b_own·N/D·(1 + spare) +
  b_halo·halo, with b_own, b_halo per slot from the measured 8-device run (they do not
  depend on the MTP level: positions, rows [J] and ids are the same at level 8 and 16),
  halo = ρ·(halo volume of the grid ``md.domain.choose_grid`` picks for a cube of side
  L = (N/ρ)^⅓: the domain grown by reach on both sides of each cut vector, less the domain),
  plus the bin table of a build (a transient of n_bins·B·(4 + 3·8) bytes, B measured; on
  domains only the bins of the domain and its halo, ``md.domain.window_bins``) and an
  assumed per-device evaluation workspace;
* the number of 80 GB GPUs (H100 SXM) that N atoms need at level 16 (memory only, with the
  usable fraction below), and the largest slab count (slabs ≥ 1.05·reach thick);
* steps/s on 8 H100s over NVLink: t_step = N/(D·A)·(1 + rebuild share) + bytes/BW +
  4·(cut vectors)·latency, bytes = 2·halo·3·8 (rebuild share: the measured one of the
  10⁶-atom liquid, ``bench_md_1M.json``).

Assumptions (module constants, stated in the output): A = per-GPU level-16 throughput in
atom-steps/s (the project's GPU target for level-16 energy + forces, *not measured*: no GPU
has been lent), NVLink bandwidth and latency per ``ppermute``, usable memory fraction and
workspace. Change them with the flags.

Usage::

    python benchmarks/md_scaling_model.py   # writes benchmarks/results/md_scaling_model.*
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def load_run(name: str, devices: int, n_atoms: int | None = None) -> dict:
    """The last successful ``devices``-device run of ``name`` (with several grids: the
    runner's own choice, ``--grids auto``)."""
    data = json.loads((RESULTS / f"{name}.json").read_text())
    rows = [r for r in data["results"] if r.get("devices") == devices and "error" not in r
            and (n_atoms is None or r["n_atoms"] == n_atoms)
            and r.get("grid_asked", "auto") == "auto"]
    if not rows:
        raise SystemExit(f"{name}.json has no successful {devices}-device run")
    return rows[-1] | {"_meta": data["meta"]}


def measured_rebuild_share(name: str = "bench_md_1M") -> float:
    """Rebuild share of the wall time of the timed 10⁶-atom liquid run (single device)."""
    data = json.loads((RESULTS / f"{name}.json").read_text())
    rows = [r for r in data["results"] if r.get("scenario") == "liquid" and "error" not in r]
    return float(rows[-1]["rebuild_share"])


def model(multi: dict, single: dict, args) -> dict:
    n0, d0 = multi["n_atoms"], multi["devices"]
    rebuild_share = measured_rebuild_share()
    c, h = multi["owned_slots"], multi["halo_slots"]
    h = sum(h) if isinstance(h, list) else h  # per side, summed over the stages
    j = multi["neighbor_capacity"]
    item = 8  # float64
    # per-slot bytes of the measured domain run: owned slot (state + rows + ids) and halo slot
    b_halo = 2 * 4 + 4  # send index + ok flag (int32/bool, both sides) and received species
    b_own = (multi["device_bytes"] - 2 * h * b_halo) / c
    # the benchmark's cells: k³ cubic 8-atom diamond cells of 5.43 Å (benchmarks/systems.py)
    sys.path.insert(0, str(ROOT))
    from benchmarks.systems import repeats
    from md.domain import choose_grid, halo_volume, window_bins
    from mtpjax import cell_list
    from mtpjax.io.mtp_file import read_mtp

    k = repeats(n0)[0]
    assert 8 * k**3 == n0, (n0, k)
    length0 = 5.43 * k
    density = n0 / length0**3
    level = multi.get("level", 8)
    cutoff = read_mtp(ROOT / f"tests/data/parity/si_L{level:02d}/pot.mtp").max_dist
    reach = cutoff + multi["_meta"]["skin_A"]
    spare = c / (n0 / d0) - 1.0
    # whole-cell bin table of a build: n_bins × B × (int32 index + 3 float64 positions)
    nb, _ = cell_list._bins_for(np.full(3, length0), reach, n0, 0.05)
    bins_per_atom = int(np.prod(nb)) * multi["bin_capacity"] * (4 + 3 * item) / n0

    def bin_table(n, grid):
        """Bytes of one device's bin table: the bins of its domain and halo (all on 1)."""
        length = (n / density) ** (1 / 3)
        nb, m = cell_list._bins_for(np.full(3, length), reach, n, 0.05)
        return bins_per_atom * n * np.prod(window_bins(nb, m, grid)) / np.prod(nb)

    def grid_for(n, d):
        """The grid md.domain picks for a cube of n atoms on d devices (None: too thin)."""
        length = (n / density) ** (1 / 3)
        return choose_grid(np.eye(3) * length, d, reach)[0] if d > 1 else (1, 1, 1)

    def per_device(n, d):
        length = (n / density) ** (1 / 3)
        grid = grid_for(n, d)
        # halo atoms of one domain, 10 % spare as allocated
        halo = density * halo_volume(grid, [length] * 3, reach) * 1.1
        resident = b_own * n / d * (1 + spare) + b_halo * halo
        return resident, bin_table(n, grid), halo, grid

    def gpus_needed(n):
        usable = args.gpu_gib * 2**30 * args.usable - args.workspace_gib * 2**30
        length = (n / density) ** (1 / 3)
        max_slabs = int(length / (1.05 * reach))
        for d in range(1, 4097):
            if d > 1 and grid_for(n, d) is None:
                continue
            resident, bins, _, _ = per_device(n, d)
            if resident + bins <= usable:
                return d, max_slabs, resident, bins
        return None, max_slabs, None, None

    def steps_per_s(n, d):
        resident, bins, halo, grid = per_device(n, d)
        compute = n / (d * args.throughput) * (1 + rebuild_share)
        sent = 2 * halo * 3 * item  # positions forward + gradients back (the whole halo)
        stages = sum(p > 1 for p in grid)  # 4 ppermutes per stage (2 forward, 2 back)
        comm = sent / (args.nvlink_gbs * 1e9) + 4 * stages * args.latency_us * 1e-6
        return 1.0 / (compute + comm), sent, compute, comm, grid, bins

    rows = []
    for n in (10**6, 10**7, 10**8):
        need, max_slabs, resident, bins = gpus_needed(n)
        rate, sent, compute, comm, grid, bins8 = steps_per_s(n, 8)
        rows.append({"n_atoms": n, "gpus_for_memory": need, "max_slabs": max_slabs,
                     "resident_gib_per_device_at_need": None if resident is None
                     else resident / 2**30,
                     "bin_table_gib_per_device": bins / 2**30 if bins is not None else None,
                     "bin_table_gib_per_device_8": bins8 / 2**30,
                     "steps_per_s_8_h100": rate, "bytes_sent_per_step_8": sent,
                     "compute_s_8": compute, "comm_s_8": comm, "grid_8": list(grid)})
    return {"rebuild_share": rebuild_share, "b_own_per_slot": b_own,
            "b_halo_per_slot": b_halo, "owned_spare": spare,
            "bins_per_atom": bins_per_atom, "density_per_A3": density, "reach_A": reach,
            "J": j, "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="bench_md_devices_1M")
    p.add_argument("--throughput", type=float, default=2e7,
                   help="ASSUMED level-16 atom-steps/s per H100 (project target, unmeasured)")
    p.add_argument("--nvlink-gbs", type=float, default=450.0,
                   help="ASSUMED NVLink bandwidth per GPU and direction (GB/s)")
    p.add_argument("--latency-us", type=float, default=10.0,
                   help="ASSUMED latency of one ppermute (µs)")
    p.add_argument("--gpu-gib", type=float, default=80.0)
    p.add_argument("--usable", type=float, default=0.8, help="usable fraction of GPU memory")
    p.add_argument("--workspace-gib", type=float, default=8.0,
                   help="ASSUMED level-16 evaluation workspace per device (65,536-atom chunks)")
    args = p.parse_args(argv)
    multi = load_run(args.run, 8)
    single = load_run(args.run, 1, multi["n_atoms"])
    sys.path.insert(0, str(ROOT))
    from benchmarks.provenance import load, versions

    m = model(multi, single, args)
    meta = {"command": "python benchmarks/md_scaling_model.py " + " ".join(
        sys.argv[1:] if argv is None else argv), "inputs": f"benchmarks/results/{args.run}.json",
        "measured_on": multi["_meta"]["machine"], "measured_date": multi["_meta"]["date"],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "versions": versions(), "load": load(),
        "assumptions": {k: getattr(args, k) for k in ("throughput", "nvlink_gbs", "latency_us",
                                                      "gpu_gib", "usable", "workspace_gib")}}
    out = RESULTS / "md_scaling_model"
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "model": m}, indent=1))
    a = meta["assumptions"]
    lines = [f"# MD scaling model ({meta['date']}) — a MODEL, not a measurement", "",
             f"Command: `{meta['command']}`; measured inputs: `{meta['inputs']}` "
             f"({meta['measured_date']}, {meta['measured_on']}). Written by "
             "`benchmarks/md_scaling_model.py` (its docstring gives the formulas).", "",
             f"Measured: {m['b_own_per_slot']:.0f} B per owned slot (state, rows of J = "
             f"{m['J']}, ids), {m['owned_spare']:.1%} spare owned slots, "
             f"{m['bins_per_atom']:.1f} B/atom of whole-cell bin table during a build (on "
             "domains only the bins of the domain and its halo: `md.domain.window_bins`), "
             f"reach {m['reach_A']} Å, {m['density_per_A3']:.4f} atoms/Å³; rebuilds "
             f"{m['rebuild_share']:.1%} of the wall time (10⁶-atom liquid, "
             "`bench_md_1M.json`).", "",
             f"Assumed: {a['throughput']:.3g} level-16 atom-steps/s per H100 (the project's "
             f"GPU target, unmeasured), NVLink {a['nvlink_gbs']} GB/s per direction, "
             f"{a['latency_us']} µs per ppermute (4 per cut lattice vector per step), "
             f"{a['gpu_gib']} GB GPUs of which {a['usable']:.0%} usable, "
             f"{a['workspace_gib']} GB evaluation workspace per device; a cubic cell on the "
             "grid `md.domain.choose_grid` picks (smallest halo volume; bricks from 8 "
             "devices).", "",
             "| atoms | GPUs needed (memory) | most slabs (≥ 1.05·reach) | resident GiB/device "
             "there | bin table GiB/device there | grid on 8 | bin table GiB/device on 8 | "
             "steps/s on 8 H100 | bytes sent/step/device (8) | compute s | comm s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in m["rows"]:
        def f(x, spec):
            return "–" if x is None else format(x, spec)

        lines.append(f"| {r['n_atoms']:.0e} | {f(r['gpus_for_memory'], 'd')} | "
                     f"{r['max_slabs']} | {f(r['resident_gib_per_device_at_need'], '.2f')} | "
                     f"{f(r['bin_table_gib_per_device'], '.2f')} | "
                     f"{'×'.join(str(p) for p in r['grid_8'])} | "
                     f"{r['bin_table_gib_per_device_8']:.3f} | "
                     f"{r['steps_per_s_8_h100']:.3g} | {r['bytes_sent_per_step_8']:.3g} | "
                     f"{r['compute_s_8']:.3g} | {r['comm_s_8']:.2g} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
