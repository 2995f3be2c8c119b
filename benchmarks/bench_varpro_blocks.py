"""CPU time of VarPro's two Jacobian passes per group against the atoms per energy block.

The passes of `mtpjax.fit.varpro.make_normal_eq_fns` differentiate the energies and forces of a
group (``jac_atoms`` 512 atoms) in forward mode with many tangents: ``linear_qr`` with
#linear + 1 (the linear rows of every LM trial), ``full_neq`` with #radial (the normal
equations). Inside, the site energies are evaluated in blocks of atoms
(`mtpjax.potential.map_blocks`); this script times both passes on the first ``--groups``
groups of the 214 mlearn Si training cells (setting of `benchmarks/bench_train.py`: template
``LL.mtp``, 1.5–5.0 Å, radial basis 8, weights 1 : 0.1 : 0, seed-0 start) with the block
size forced to each of ``--blocks`` ("auto" = `mtpjax.fit.varpro.jacobian_block_size`),
single-threaded XLA, process CPU time (robust to the shared machine's load), and checks that
the outputs do not depend on the block. Writes ``benchmarks/results/bench_varpro_blocks.json``
and ``.md``::

    .venv/bin/python benchmarks/bench_varpro_blocks.py --level 16 --blocks 32 16 8 4 2 auto
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def measure(level: int, blocks: list, n_groups: int, repeats: int) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.bench_train import WEIGHTS, find_data, template
    from mtpjax.fit import varpro
    from mtpjax.fit.data import load_fit_data
    from mtpjax.fit.trainer import FitConfig, Trainer

    jax.config.update("jax_enable_x64", True)
    pot = template(level)
    train, _ = load_fit_data(pot, find_data() / "train.xyz", species=["Si"],
                             energy_weight=WEIGHTS["energy"], force_weight=WEIGHTS["force"])
    cfg = FitConfig(energy_weight=WEIGHTS["energy"], force_weight=WEIGHTS["force"],
                    stress_weight=WEIGHTS["stress"], seed=0, checkpoint_every=0)
    trainer = Trainer(pot, train, None, cfg, mesh=None)
    params, _ = trainer.initial_params()
    vp = trainer._varpro()
    batch = jax.tree.map(lambda x: x[:n_groups], vp.batches[0])
    radial = jnp.asarray(params["radial_coeffs"])
    theta = jnp.concatenate([jnp.asarray(params["species_coeffs"]),
                             jnp.asarray(params["moment_coeffs"])])
    n_lin, n_rad = int(theta.size), int(radial.size)
    auto = varpro.jacobian_block_size

    def timed(fn):
        out = jax.block_until_ready(fn())  # compiles
        c0 = time.process_time()
        for _ in range(repeats):
            out = jax.block_until_ready(fn())
        return out, (time.process_time() - c0) / repeats / n_groups

    rows, ref = [], None
    for block in blocks:
        varpro.jacobian_block_size = auto if block == "auto" else (lambda t, b=block: b)
        linear_qr, full_neq = varpro.make_normal_eq_fns(vp.spec, trainer.weights)
        (R, blk), lin_cpu = timed(lambda lq=linear_qr: lq(radial, (batch,)))
        neq, neq_cpu = timed(lambda fn=full_neq, b=blk: fn(radial, theta, b, (batch,)))
        out = [np.asarray(x) for x in (blk[0], neq[0], neq[1])]
        ref = ref or out
        diff = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(out, ref,
                                                                                       strict=True))
        rows.append({"block": block, "linear_block": auto(n_lin) if block == "auto" else block,
                     "radial_block": auto(n_rad) if block == "auto" else block,
                     "linear_tangents": n_lin, "radial_tangents": n_rad,
                     "linear_pass_cpu_s_per_group": round(lin_cpu, 4),
                     "normal_eq_pass_cpu_s_per_group": round(neq_cpu, 4),
                     "max_rel_diff_to_first": diff})
        print(rows[-1], flush=True)
    varpro.jacobian_block_size = auto
    return rows, int(batch.nbr_idx.shape[1])


def render(doc: dict) -> str:
    inv = doc["invocation"]
    lines = ["# VarPro Jacobian passes: CPU seconds per group against atoms per block", "",
             "Written by `benchmarks/bench_varpro_blocks.py` (every line of this file and of "
             "`bench_varpro_blocks.json`). Setting: the 214 mlearn Si training cells, template "
             f"`LL.mtp` level {doc['level']} (1.5–5.0 Å, radial basis 8), weights 1 : 0.1 : 0, "
             f"seed-0 start, the first {doc['groups']} groups of {doc['atoms_per_group']} atoms, "
             "single-threaded XLA, process CPU time per group (mean of "
             f"{doc['repeats']} calls after compiling). `linear` = `linear_qr` (the linear rows "
             "and their QR: one per LM trial), `normal eq.` = `full_neq` (radial Jacobian and "
             "normal equations: one per iteration). `auto` = "
             "`mtpjax.fit.varpro.jacobian_block_size`.", "",
             f"- `{inv['command']}`: started {inv['started_utc']}, finished "
             f"{inv['finished_utc']} on `{inv['host']['hostname']}` "
             f"({inv['host']['cpu_model']}, {inv['host']['cpus']} CPUs); load (1/5/15 min) "
             f"{inv['load_before']} before, {inv['load_after']} after; versions: "
             + ", ".join(f"{k} {v}" for k, v in inv["versions"].items() if v), "",
             "| atoms per block | linear: block (tangents) | linear CPU (s/group) | normal eq.: "
             "block (tangents) | normal eq. CPU (s/group) | max rel. diff of outputs |",
             "|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['block']} | {r['linear_block']} ({r['linear_tangents']}) | "
                     f"{r['linear_pass_cpu_s_per_group']:.3f} | {r['radial_block']} "
                     f"({r['radial_tangents']}) | {r['normal_eq_pass_cpu_s_per_group']:.3f} | "
                     f"{r['max_rel_diff_to_first']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--level", type=int, default=16)
    p.add_argument("--blocks", nargs="+", default=["32", "16", "8", "4", "2", "auto"])
    p.add_argument("--groups", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "bench_varpro_blocks"))
    args = p.parse_args(argv)
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                       "intra_op_parallelism_threads=1")
    os.environ.setdefault("MTPJAX_COMPILE_CACHE", "off")
    sys.path.insert(0, str(ROOT))
    from benchmarks.provenance import header, load, utc

    inv = header()
    blocks = [b if b == "auto" else int(b) for b in args.blocks]
    rows, atoms = measure(args.level, blocks, args.groups, args.repeats)
    inv.update(finished_utc=utc(), load_after=load())
    doc = {"invocation": inv, "level": args.level, "groups": args.groups,
           "atoms_per_group": atoms, "repeats": args.repeats, "rows": rows}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(render(doc))


if __name__ == "__main__":
    main()
