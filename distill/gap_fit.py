"""Fit the demo GAP teacher with QUIP's `gap_fit`, and measure its accuracy.

The settings default to SPEC §1 (`distance_2b` + SOAP, 800 CUR sparse points, labels read from
`REF_energy` / `REF_forces`). A fit is cached: `fit_gap` does nothing when the output directory
holds a stamp whose key (sha256 of the training file, the settings and the `gap_fit` command
line) matches and whose model files are unchanged.

Units: energies eV, forces eV/Å, cutoffs and widths Å; reported errors meV/atom and eV/Å.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from distill.hashing import file_sha256, json_sha256

MODEL_NAME = "gap.xml"
STAMP_NAME = "fit_stamp.json"
REPORT_JSON = "accuracy.json"
REPORT_TXT = "accuracy.txt"


@dataclasses.dataclass(frozen=True)
class GapSettings:
    """`gap_fit` hyper-parameters (SPEC §1 defaults). Lengths in Å, sigmas in eV and eV/Å."""

    cutoff: float = 5.0
    two_body_delta: float = 2.0
    two_body_theta_uniform: float = 0.5
    two_body_sparse: int = 20
    l_max: int = 6
    n_max: int = 8
    atom_sigma: float = 0.5
    cutoff_transition_width: float = 1.0
    soap_delta: float = 0.2
    zeta: int = 4
    soap_sparse: int = 800
    default_sigma: tuple[float, float, float, float] = (0.002, 0.1, 0.0, 0.0)
    sparse_jitter: float = 1e-8
    seed: int = 1

    def gap_string(self) -> str:
        """The `gap={...}` descriptor string for `gap_fit`."""
        two_body = (
            f"distance_2b cutoff={self.cutoff} covariance_type=ard_se delta={self.two_body_delta}"
            f" theta_uniform={self.two_body_theta_uniform} sparse_method=uniform"
            f" n_sparse={self.two_body_sparse}"
        )
        soap = (
            f"soap l_max={self.l_max} n_max={self.n_max} atom_sigma={self.atom_sigma}"
            f" cutoff={self.cutoff} cutoff_transition_width={self.cutoff_transition_width}"
            f" delta={self.soap_delta} covariance_type=dot_product zeta={self.zeta}"
            f" n_sparse={self.soap_sparse} sparse_method=cur_points"
        )
        return "{" + two_body + " : " + soap + "}"


def gap_fit_args(train: Path, settings: GapSettings, model: Path) -> list[str]:
    """The `gap_fit` command line fitting `train` (extxyz) into `model` (XML)."""
    sigma = " ".join(str(s) for s in settings.default_sigma)
    return [
        _gap_fit_executable(),
        f"at_file={train}",
        f"gap={settings.gap_string()}",
        f"default_sigma={{{sigma}}}",
        "e0_method=average",
        f"sparse_jitter={settings.sparse_jitter}",
        "energy_parameter_name=REF_energy",
        "force_parameter_name=REF_forces",
        "do_copy_at_file=F",
        "sparse_separate_file=T",
        f"rnd_seed={settings.seed}",
        f"gp_file={model}",
    ]


def _gap_fit_executable() -> str:
    """`gap_fit` next to the running interpreter (the venv), else from PATH."""
    local = Path(sys.executable).parent / "gap_fit"
    found = str(local) if local.exists() else shutil.which("gap_fit")
    if found is None:
        raise FileNotFoundError("gap_fit not found: install quippy-ase (pip install quippy-ase)")
    return found


def model_files(out_dir: Path) -> list[Path]:
    """The XML model and the sparse-point files `gap_fit` writes next to it, sorted."""
    return sorted(Path(out_dir).glob(MODEL_NAME + "*"))


def cache_key(train: Path, settings: GapSettings) -> str:
    """sha256 of the training data, the settings and the command line (paths left out)."""
    args = gap_fit_args(Path("TRAIN"), settings, Path("MODEL"))[1:]
    return json_sha256(
        {"train": file_sha256(train), "settings": dataclasses.asdict(settings), "args": args}
    )


def is_up_to_date(out_dir: Path, key: str) -> bool:
    """True when `out_dir` holds a fit made with `key` whose model files are unchanged."""
    stamp_path = Path(out_dir) / STAMP_NAME
    if not stamp_path.exists():
        return False
    stamp = json.loads(stamp_path.read_text())
    files = {p.name: file_sha256(p) for p in model_files(out_dir)}
    return stamp.get("key") == key and stamp.get("model_files") == files and bool(files)


def fit_gap(
    train: Path,
    out_dir: Path,
    settings: GapSettings = GapSettings(),
    threads: int = 1,
    force: bool = False,
) -> dict:
    """Fit a GAP on `train` into `out_dir/gap.xml`; return the stamp (with `fit_seconds`).

    Skipped (the old stamp is returned, with ``"cached": True``) when up to date. The fit runs
    in a scratch directory and is moved into place only when `gap_fit` succeeds, so an
    interrupted fit never looks up to date. `threads` sets OMP_NUM_THREADS for `gap_fit`.
    """
    train, out_dir = Path(train).resolve(), Path(out_dir).resolve()  # gap_fit runs elsewhere
    if not train.is_file():
        raise FileNotFoundError(f"training data not found: {train}")
    key = cache_key(train, settings)
    if not force and is_up_to_date(out_dir, key):
        return {**json.loads((out_dir / STAMP_NAME).read_text()), "cached": True}
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".fit-") as scratch:
        scratch = Path(scratch)
        args = gap_fit_args(train.resolve(), settings, scratch / MODEL_NAME)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        with open(scratch / "gap_fit.log", "w") as log:
            proc = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=scratch)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            tail = (scratch / "gap_fit.log").read_text()[-2000:]
            raise RuntimeError(f"gap_fit failed (exit {proc.returncode}):\n{tail}")
        for old in model_files(out_dir):
            old.unlink()
        for new in scratch.iterdir():
            shutil.move(str(new), out_dir / new.name)
    stamp = {
        "key": key,
        "train": str(train),
        "settings": dataclasses.asdict(settings),
        "command": " ".join(args),
        "threads": threads,
        "fit_seconds": round(seconds, 2),
        "model_files": {p.name: file_sha256(p) for p in model_files(out_dir)},
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out_dir / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n")
    return {**stamp, "cached": False}


def accuracy(model: Path, test: Path) -> dict:
    """Energy MAE (meV/atom) and force RMSE (eV/Å) of a GAP on the labelled cells of `test`.

    Also returns the evaluation speed in atom-evaluations per second (energy + forces, this
    process, OMP threads as set in the environment).
    """
    import ase.io
    from quippy.potential import Potential

    pot = Potential(param_filename=str(model))
    cells = ase.io.read(test, index=":")
    de, df, n_atoms = [], [], 0
    start = time.perf_counter()
    for atoms in cells:
        ref_e, ref_f = atoms.info["REF_energy"], atoms.arrays["REF_forces"]
        atoms.calc = pot
        de.append((atoms.get_potential_energy() - ref_e) / len(atoms))
        df.append(atoms.get_forces() - ref_f)
        n_atoms += len(atoms)
    seconds = time.perf_counter() - start
    df = np.concatenate(df)
    return {
        "test_file": str(test),
        "n_cells": len(cells),
        "n_atoms": n_atoms,
        "energy_mae_mev_per_atom": float(np.mean(np.abs(de)) * 1e3),
        "force_rmse_ev_per_a": float(np.sqrt(np.mean(df**2))),
        "eval_atoms_per_s": float(n_atoms / seconds),
    }


def write_report(out_dir: Path, stamp: dict, acc: dict) -> str:
    """Write accuracy.json and accuracy.txt into `out_dir`; return the text."""
    report = {"fit": {k: v for k, v in stamp.items() if k != "cached"}, "accuracy": acc}
    (Path(out_dir) / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    text = (
        f"GAP teacher {Path(out_dir) / MODEL_NAME}\n"
        f"  fit: {stamp['settings']['soap_sparse']} SOAP sparse points, "
        f"{stamp['fit_seconds']:.1f} s on {stamp['threads']} thread(s)\n"
        f"  test ({acc['n_cells']} cells, {acc['n_atoms']} atoms): "
        f"energy MAE {acc['energy_mae_mev_per_atom']:.2f} meV/atom, "
        f"force RMSE {acc['force_rmse_ev_per_a']:.3f} eV/Å\n"
        f"  evaluation: {acc['eval_atoms_per_s']:.0f} atoms/s (energy+forces, 1 process)\n"
    )
    (Path(out_dir) / REPORT_TXT).write_text(text)
    return text
