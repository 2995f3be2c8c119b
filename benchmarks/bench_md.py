"""MD throughput: atom-steps/s and ns/day vs atom count and vs (host) device count.

Rattled diamond Si at 300 K, NVE, 1 fs, float64, one compiled chunk per measurement (compile
and neighbour-list allocation excluded: a warm-up chunk runs first). Device scaling runs each
device count in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=D``
(host "devices" share the machine's cores, so on CPU this measures the sharding overhead, not
a speed-up; on GPUs pass ``--devices`` up to the GPU count).

Usage::

    python benchmarks/bench_md.py                       # sizes 1e3, 1e4, 1e5; devices 1, 2, 4
    python benchmarks/bench_md.py --sizes 1000 1000000 --potential tests/data/parity/si_L16/pot.mtp

Writes ``benchmarks/results/bench_md.json`` and ``bench_md.md`` (with the command, machine
load and versions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POT = ROOT / "tests" / "data" / "parity" / "si_L08" / "pot.mtp"
#: largest system for the single-device core reference evaluation (global [N, J] list)
CORE_MAX_ATOMS = 200_000


def measure(potential: str, n_target: int, steps: int, devices: int) -> dict:
    """One measurement in this process (jax must already see ``devices`` devices)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from ase.build import bulk

    from md.config import StageConfig
    from md.runner import Simulation

    rep = max(1, round((n_target / 8) ** (1 / 3)))
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((rep,) * 3)
    atoms.rattle(0.03, seed=0)
    t0 = time.perf_counter()
    sim = Simulation(potential, atoms, timestep_fs=1.0, temperature_K=300, skin_A=1.0,
                     devices=devices, chunk_steps=steps, thermo_every=10**9)
    setup = time.perf_counter() - t0
    stage = StageConfig("nve", "nve", 1, 300.0, 300.0)
    t0 = time.perf_counter()
    sim.run_stage(stage)  # compile + one step
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim.run_stage(StageConfig("nve", "nve", steps, 300.0, 300.0))
    wall = time.perf_counter() - t0
    n = len(atoms)
    rate = steps / wall
    md_rss = _peak_rss_gib()
    # the reference evaluation needs the core's global [N, J] list: only up to CORE_MAX_ATOMS
    core = _core_eval_seconds(sim, max(2, min(steps, 10))) if n <= CORE_MAX_ATOMS else None
    return {
        "n_atoms": n, "devices": devices, "steps": steps, "wall_s": wall,
        "atom_steps_per_s": rate * n, "ns_per_day": rate * 1.0e-6 * 86400,
        "s_per_step": wall / steps, "setup_s": setup, "compile_s": compile_s,
        "neighbor_capacity": sim.nl.capacity, "rebuilds": sim.stats["rebuilds"],
        "core_efv_s": core, "md_step_over_core_efv": None if core is None else
        (wall / steps) / core, "peak_rss_gib_md": md_rss, "peak_rss_gib": _peak_rss_gib(),
    }


def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _core_eval_seconds(sim, repeats: int) -> float:
    """Seconds per call of the core's jitted ``energy_forces_virial`` on the same system
    (single device), measured right after the MD steps: the MD overhead reference under the
    same machine load."""
    import jax
    import jax.numpy as jnp

    from mtpjax.neighbors import allocate
    from mtpjax.potential import energy_forces_virial

    spec = sim.spec
    f = jax.jit(lambda p, x, c, t, nb: energy_forces_virial(spec, p, x, c, t, nb))
    with jax.enable_x64(True):
        pos = sim._wrap(sim.positions(), sim.cell())
        nl = allocate(pos, sim.cell(), True, spec.max_dist, sim.skin)
        args = (sim.params, jnp.asarray(pos), jnp.asarray(sim.cell()),
                jnp.asarray(sim.types), nl.neighbors)
        jax.block_until_ready(f(*args))
        t0 = time.perf_counter()
        for _ in range(repeats):
            jax.block_until_ready(f(*args))
    return (time.perf_counter() - t0) / repeats


def _subprocess(potential: str, n: int, steps: int, devices: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    cmd = [sys.executable, __file__, "--_one", str(n), str(steps), str(devices),
           "--potential", potential]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        return {"n_atoms": n, "devices": devices, "error": proc.stderr.strip()[-500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _steps_for(n: int) -> int:
    return 200 if n <= 2000 else 20 if n <= 20000 else 3 if n <= 200_000 else 2


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--potential", default=str(DEFAULT_POT))
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--devices", type=int, nargs="*", default=[1, 2, 4])
    p.add_argument("--device-atoms", type=int, default=4096,
                   help="atom count of the device-scaling runs")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_md"))
    p.add_argument("--_one", nargs=3, type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._one:
        print(json.dumps(measure(args.potential, *args._one)))
        return 0

    from tqdm import tqdm

    runs = [("size", n, _steps_for(n), 1) for n in args.sizes]
    runs += [("devices", args.device_atoms, _steps_for(args.device_atoms), d)
             for d in args.devices]
    results = []
    for kind, n, steps, d in tqdm(runs, desc="bench_md"):
        load0 = os.getloadavg()[0]
        r = _subprocess(args.potential, n, steps, d)
        r.update(scan=kind, loadavg_1min=[load0, os.getloadavg()[0]])
        results.append(r)
        tqdm.write(json.dumps(r))
    import jax

    meta = {
        "command": "python benchmarks/bench_md.py " + " ".join(argv or sys.argv[1:]),
        "potential": os.path.relpath(args.potential, ROOT),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "jax": jax.__version__, "dtype": "float64", "ensemble": "NVE, 1 fs, 300 K",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results},
                                                   indent=1))
    lines = [f"# bench_md ({meta['date']})", "", f"Command: `{meta['command']}`  ",
             f"Potential: `{meta['potential']}`; {meta['ensemble']}; {meta['dtype']}; "
             f"jax {meta['jax']}; {meta['machine']} (shared: see load averages).", "",
             "`core efv s`: the core's jitted energy_forces_virial on the same system right "
             "after (single device): MD step / core evaluation shows the MD overhead under "
             "the same load.", "",
             "`setup s`: neighbour rows (host, per shard), placement and the first force "
             "evaluation (with its compilation); `compile s`: compiling the MD chunk plus one "
             "step; `peak RSS`: "
             "the process's peak resident memory after the MD steps (before the core "
             "reference, which is skipped above 200,000 atoms).", "",
             "| scan | atoms | devices | steps | s/step | atom-steps/s | ns/day | core efv s "
             "| step/core | setup s | compile s | peak RSS GiB | load (1 min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(x, spec):
        return "–" if x is None else format(x, spec)

    for r in results:
        if "error" in r:
            lines.append(f"| {r['scan']} | {r['n_atoms']} | {r['devices']} | error: "
                         f"{r['error'][-120:]} | | | | | | | | | |")
            continue
        lines.append(
            f"| {r['scan']} | {r['n_atoms']} | {r['devices']} | {r['steps']} | "
            f"{r['s_per_step']:.3g} | {r['atom_steps_per_s']:.3g} | {r['ns_per_day']:.3g} | "
            f"{fmt(r['core_efv_s'], '.3g')} | {fmt(r['md_step_over_core_efv'], '.2f')} | "
            f"{r['setup_s']:.1f} | {r['compile_s']:.1f} | {fmt(r.get('peak_rss_gib_md'), '.2f')} | "
            f"{r['loadavg_1min'][0]:.1f}–{r['loadavg_1min'][1]:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
