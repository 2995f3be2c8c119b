"""Benchmark of the structural analysis (coordination, bond angles, S(Q)) on a 100,000-atom frame.

The frame is a diamond Si supercell (23 × 23 × 24 conventional cells, 101,568 atoms) with
Gaussian displacements of 0.15 Å per component, a stand-in for an amorphous/thermal frame of
the paper's 100k-atom simulations. Timings are wall-clock seconds of single calls.

Usage:
    .venv/bin/python benchmarks/bench_analysis.py [--million] [--out FILE]

``--million`` adds coordination numbers and bond angles of a 10^6-atom frame.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from md.analysis import (
    AnalysisOptions,
    angle_distribution,
    bond_angles,
    bond_list,
    build_crystal,
    coordination_fractions,
    coordination_numbers,
    first_sharp_diffraction_peak,
    radial_distribution,
    structure_factor_from_gr,
    structure_metrics,
)
from md.analysis.structure_factor import default_q

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.provenance import header, load  # noqa: E402


def _frame(reps: tuple[int, int, int], sigma: float = 0.15, seed: int = 0):
    atoms = build_crystal("diamond").repeat(reps)
    atoms.positions += np.random.default_rng(seed).normal(0.0, sigma, atoms.positions.shape)
    return atoms


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def bench_frame(atoms, r_max: float = 12.0) -> dict:
    """Time each analysis step on ``atoms``; returns a JSON-ready dict of seconds and sizes."""
    out: dict = {"n_atoms": len(atoms)}
    bonds, out["bond_list_s"] = _timed(bond_list, atoms)
    cn, out["coordination_s"] = _timed(coordination_numbers, bonds)
    out["fractions_percent"] = coordination_fractions(cn)
    angles, out["bond_angles_s"] = _timed(bond_angles, bonds)
    dist, out["angle_histogram_s"] = _timed(angle_distribution, angles)
    _, out["bond_angles_N5_s"] = _timed(bond_angles, bonds, cn == 5)
    out.update(n_bonds=int(bonds.i.size), n_angles=int(angles.size),
               theta_mean_deg=dist.mean, theta_std_deg=dist.std)
    rdf, out["gr_s"] = _timed(radial_distribution, atoms, r_max, 0.01)
    (q, s), out["sq_transform_s"] = _timed(structure_factor_from_gr, rdf, default_q(12.0, 0.01))
    peak = first_sharp_diffraction_peak(q, s)
    out.update(gr_r_max_A=rdf.r_max, fsdp_q_invA=peak.q, fsdp_height=peak.height)
    out["coordination_angles_sq_total_s"] = sum(
        out[k] for k in ("bond_list_s", "coordination_s", "bond_angles_s", "angle_histogram_s",
                         "gr_s", "sq_transform_s"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--million", action="store_true", help="also time a 10^6-atom frame")
    parser.add_argument("--out", default="benchmarks/results/bench_analysis.json")
    args = parser.parse_args(argv)

    atoms = _frame((23, 23, 24))
    result = {
        **header(),
        "frame": "diamond Si 23x23x24 conventional cells, rattled sigma=0.15 A",
        "frame_100k": bench_frame(atoms),
    }
    _, result["frame_100k"]["structure_metrics_cli_path_s"] = _timed(
        structure_metrics, atoms, AnalysisOptions())
    if args.million:
        big = _frame((50, 50, 50))
        m: dict = {"n_atoms": len(big)}
        bonds, m["bond_list_s"] = _timed(bond_list, big)
        cn, m["coordination_s"] = _timed(coordination_numbers, bonds)
        angles, m["bond_angles_s"] = _timed(bond_angles, bonds)
        m.update(fractions_percent=coordination_fractions(cn), n_angles=int(angles.size))
        result["frame_1M_coordination_angles"] = m
    result["load_after"] = load()
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    total = result["frame_100k"]["coordination_angles_sq_total_s"]
    print(f"100k-atom frame: coordination + angles + S(Q) in {total:.2f} s (target < 60 s)")
    return 0 if total < 60.0 else 1


if __name__ == "__main__":
    sys.exit(main())
