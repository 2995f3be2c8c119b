"""Quick look (`make eval-demo`): evaluate the shipped MTP on the shipped Si PBE test cells.

Prints energy and force errors against the DFT labels and the evaluation speed, and writes
them to ``runs/demo/errors.json``. Usage: ``python scripts/demo.py [--potential P] [--data D]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from ase.io import read
from tqdm import tqdm

from mtpjax.calculator import MTPCalculator

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--potential", default=ROOT / "data/potentials/si_L16_mlp.mtp")
    parser.add_argument("--data", default=ROOT / "data/si_mlearn/test.xyz")
    parser.add_argument("--out", default=ROOT / "runs/demo")
    args = parser.parse_args()

    frames = read(args.data, ":")
    calc = MTPCalculator(args.potential, species=["Si"])
    de, df = [], []
    n_atoms = 0
    start = time.perf_counter()
    for atoms in tqdm(frames, desc="evaluating test cells", unit="cell"):
        ref_e = atoms.info["REF_energy"]
        ref_f = atoms.arrays["REF_forces"]
        atoms.calc = calc
        de.append((atoms.get_potential_energy() - ref_e) / len(atoms))
        df.append((atoms.get_forces() - ref_f).ravel())
        n_atoms += len(atoms)
    elapsed = time.perf_counter() - start
    de, df = np.asarray(de), np.concatenate(df)
    result = {
        "potential": str(args.potential),
        "data": str(args.data),
        "configurations": len(frames),
        "atoms": n_atoms,
        "energy_mae_meV_per_atom": float(np.mean(np.abs(de)) * 1e3),
        "energy_rmse_meV_per_atom": float(np.sqrt(np.mean(de**2)) * 1e3),
        "force_mae_eV_per_A": float(np.mean(np.abs(df))),
        "force_rmse_eV_per_A": float(np.sqrt(np.mean(df**2))),
        "wall_time_s_including_compiles": elapsed,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "errors.json").write_text(json.dumps(result, indent=2))
    print(f"\nMTP {Path(args.potential).name} on {len(frames)} DFT test cells ({n_atoms} atoms):")
    print(
        f"  energy MAE  {result['energy_mae_meV_per_atom']:.2f} meV/atom "
        f"(RMSE {result['energy_rmse_meV_per_atom']:.2f})"
    )
    print(
        f"  force  RMSE {result['force_rmse_eV_per_A']:.4f} eV/Å "
        f"(MAE {result['force_mae_eV_per_A']:.4f})"
    )
    print(f"  wrote {out / 'errors.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
