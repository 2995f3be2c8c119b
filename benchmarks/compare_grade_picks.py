"""Paired comparison of two `bench_grade_selection.py` results that differ in how the labels
are picked (issue #16: do the grades matter?).

    .venv/bin/python benchmarks/compare_grade_picks.py A.json B.json --arm grade_pool_rss \\
        --round 5 --tag T   # -> benchmarks/results/compare_grade_picks_T.{json,md,png}

``A`` and ``B`` must hold the same settings except ``--grade-pick`` (and seeds, tag, output)
and the settings named by ``--may-differ`` (e.g. ``--may-differ grade_level``: grades from a
level-16 student against a level-8 one); a setting an older result lacks counts as its default
(``grade_level`` 0, ``grade_pick`` "gamma"). The seeds both hold are paired. For each test set
and metric (energy MAE in meV/atom, force MAE in eV/Å) at round ``--round`` of ``--arm``: the
per-seed difference A − B, its mean, its standard deviation (ddof = 1) and standard error.
Reading (this script's rule, fixed before any comparison was run; ``--post-hoc WHY`` marks
a comparison whose round, seeds or inputs were chosen after seeing results): A is better on
a metric where the mean difference is below zero by more than two standard errors, worse where
above by more than two, otherwise "no detectable difference".
Nothing is measured here: the provenance block is this comparison's, the inputs' own are
named by their files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import provenance  # noqa: E402

METRICS = {"energy_mae_meV_per_atom": "E (meV/atom)", "force_mae_eV_per_A": "F (eV/Å)"}
#: settings that may differ between the two results
FREE = {"grade_pick", "seeds", "tag", "out", "merge", "plot_only"}
#: the values of settings that results written before the setting existed lack
DEFAULTS = {"grade_pick": "gamma", "grade_level": 0}


class CompareError(ValueError):
    """Inputs that cannot be compared (message names the file)."""


def load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CompareError(f"{path}: cannot read a result: {exc}") from None


def errors_by_seed(res: dict, path: Path, arm: str, rnd: int) -> dict[int, dict]:
    """{seed: errors} of ``arm`` at round ``rnd`` in the result ``res``."""
    rows = {r["seed"]: r["errors"] for r in res.get("rows", [])
            if r["arm"] == arm and r["round"] == rnd}
    if not rows:
        raise CompareError(f"{path}: no row of arm {arm!r} at round {rnd}")
    return rows


def _label(settings: dict) -> str:
    """How a result picks its labels: ``gamma``, ``random``, ``gamma (L16 grades)``, ..."""
    level = settings["grade_level"]
    return settings["grade_pick"] + (f" (L{level} grades)" if level else "")


def compare(a: dict, b: dict, path_a: Path, path_b: Path, arm: str, rnd: int,
            may_differ: tuple[str, ...] = ()) -> dict:
    """The paired differences A − B (see the module docstring); ``may_differ``: settings
    besides ``FREE`` that may differ."""
    sa = {**DEFAULTS, **a.get("settings", {})}
    sb = {**DEFAULTS, **b.get("settings", {})}
    free = FREE | set(may_differ)
    differ = sorted(k for k in set(sa) | set(sb) if k not in free and sa.get(k) != sb.get(k))
    if differ:
        k = differ[0]
        raise CompareError(f"{path_b}: setting {k} = {sb.get(k)!r} differs from {path_a} "
                           f"({sa.get(k)!r}): only grade_pick may differ (and what "
                           "--may-differ names)")
    ea, eb = errors_by_seed(a, path_a, arm, rnd), errors_by_seed(b, path_b, arm, rnd)
    seeds = sorted(set(ea) & set(eb))
    if len(seeds) < 2:
        raise CompareError(f"{path_b}: {len(seeds)} seed(s) in common with {path_a}; a paired "
                           "comparison needs at least 2")
    out = {}
    for test in ea[seeds[0]]:
        for m in METRICS:
            d = np.array([ea[s][test][m] - eb[s][test][m] for s in seeds])
            mean, std = float(d.mean()), float(d.std(ddof=1))
            se = std / np.sqrt(len(d))
            reading = ("A better" if mean < -2 * se else "A worse" if mean > 2 * se
                       else "no detectable difference")
            out[f"{test}/{m}"] = {
                "per_seed": dict(zip(map(str, seeds), d.tolist(), strict=True)),
                "mean_a": float(np.mean([ea[s][test][m] for s in seeds])),
                "mean_b": float(np.mean([eb[s][test][m] for s in seeds])),
                "mean_diff": mean, "std_diff": std, "se_diff": float(se), "reading": reading}
    return {"seeds": seeds, "metrics": out, "pick_a": _label(sa), "pick_b": _label(sb),
            "may_differ": sorted(may_differ)}


def render(res: dict) -> str:
    c = res["comparison"]
    lines = [f"# Paired comparison: `{c['pick_a']}` (A) vs `{c['pick_b']}` (B) picks",
             "", f"Arm `{res['arm']}`, round {res['round']}; seeds {c['seeds']} (paired). "
             f"A: `{res['a']}`; B: `{res['b']}`."
             + (f" Settings also allowed to differ: {', '.join(c['may_differ'])}."
                if c.get("may_differ") else ""), "",
             "A − B per seed; A is better where the mean difference is below zero by more "
             "than two standard errors (this script's rule, fixed before any comparison was "
             "run).", ""]
    if res.get("post_hoc"):
        lines += [f"**Not pre-registered:** {res['post_hoc']}", ""]
    lines += ["| test set / metric | mean A | mean B | mean A − B | SE | per seed A − B | "
              "reading |", "|---|---|---|---|---|---|---|"]
    for key, v in c["metrics"].items():
        test, m = key.split("/")
        lines.append(f"| {test} {METRICS[m]} | {v['mean_a']:.4g} | {v['mean_b']:.4g} | "
                     f"{v['mean_diff']:+.3g} | {v['se_diff']:.2g} | "
                     + ", ".join(f"{x:+.3g}" for x in v["per_seed"].values())
                     + f" | {v['reading']} |")
    lines += ["", f"Command: `{res['command']}`; written {res['finished_utc']} on "
              f"{res['host']['hostname']} (load {res['load_before']}); versions "
              f"{res['versions']}.", ""]
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    """One panel per test set and metric: the per-seed differences A − B (labelled by seed),
    their mean with a ± 2 SE band, and zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = res["comparison"]
    fig, axes = plt.subplots(1, len(c["metrics"]), figsize=(3.2 * len(c["metrics"]), 3.6))
    for ax, (key, v) in zip(axes, c["metrics"].items(), strict=True):
        test, m = key.split("/")
        seeds, d = list(v["per_seed"]), list(v["per_seed"].values())
        ax.axhspan(v["mean_diff"] - 2 * v["se_diff"], v["mean_diff"] + 2 * v["se_diff"],
                   color="C0", alpha=0.2, label="mean ± 2 SE")
        ax.axhline(v["mean_diff"], color="C0")
        ax.axhline(0, color="k", lw=0.8)
        ax.plot(range(len(d)), d, "o", color="C1", label="per seed")
        ax.set_xticks(range(len(d)), seeds)
        ax.set_xlabel("seed")
        ax.set_title(f"{test} {METRICS[m]}\n{v['reading']}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{c['pick_a']} − {c['pick_b']}")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Arm {res['arm']}, round {res['round']}: paired differences "
                 f"({c['pick_a']} − {c['pick_b']} picks; below 0: {c['pick_a']} better)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path, help="result JSON, picks A (e.g. gamma)")
    p.add_argument("b", type=Path, help="result JSON, picks B (e.g. random)")
    p.add_argument("--arm", default="grade_pool_rss")
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--tag", required=True, help="writes compare_grade_picks_TAG.{json,md,png}")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--may-differ", action="append", default=[], metavar="SETTING",
                   help="a setting besides grade_pick that may differ (repeatable), e.g. "
                        "grade_level")
    p.add_argument("--post-hoc", default="", metavar="WHY",
                   help="this comparison (its round, seeds or inputs) was chosen after seeing "
                        "results, not fixed in advance: WHY is printed in the result")
    args = p.parse_args(argv)
    head = provenance.header()
    try:
        comparison = compare(load(args.a), load(args.b), args.a, args.b, args.arm, args.round,
                             tuple(args.may_differ))
    except CompareError as exc:
        print(f"compare_grade_picks: error: {exc}", file=sys.stderr)
        return 2
    res = {**head, "finished_utc": provenance.utc(), "a": str(args.a), "b": str(args.b),
           "arm": args.arm, "round": args.round, "post_hoc": args.post_hoc,
           "comparison": comparison}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"compare_grade_picks_{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    stem.with_suffix(".md").write_text(render(res))
    plot(res, stem.with_suffix(".png"))
    print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
