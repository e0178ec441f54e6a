"""Run a grid of training runs over seeds and aggregate them.

    python -m experiments.ablate --base PRESET --grid section.field=v1,v2 [--grid ...] \\
        --seeds K [--workers N | --ray ADDRESS] [--logdir DIR] [--metric NAME] [-- --extra.flag v ...]

Each cell (one value per grid flag) x seed runs ``python -m experiments.train --preset
PRESET --flag value ... --seed s --logdir DIR/<cell>/seed<s>`` (locally in N parallel
processes; on a Ray cluster with ``--ray``; rerunning resumes/reuses finished runs).
Writes ``DIR/results.csv`` (one row per run), ``DIR/table.md`` and ``DIR/table.csv`` (per
cell: mean and 95% bootstrap interval over seeds of the final metric on the training
instances - ``real_score``, the environment's own metric (rewriting: cost reduction;
placement: speedup; macro: -proxy cost) -, the held-out one and real env steps) and
``DIR/curves.png`` (mean ``real/score`` against real env steps per cell, shaded min-max
over seeds). ``table.md`` ends with, for each ordered pair of cells (a, b), the first real
step at which a's mean ``real/score`` curve reaches b's final mean, and its ratio to b's last
step (e.g. model-based steps to model-free's final result / model-free's steps). Extra flags
after ``--`` go to every run (e.g. ``-- --env.name MemoryPlacement-v0``).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from worldmodels.config import ConfigError, Config, leaf_types, parse_value, _unknown_message


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m experiments.ablate", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="tiny", help="preset the cells start from")
    p.add_argument("--grid", action="append", default=[], help="section.field=v1,v2 (repeatable)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="parallel local processes")
    p.add_argument("--ray", default=None, help="Ray cluster address (runs each job as a Ray task)")
    p.add_argument("--logdir", default="runs/ablate")
    p.add_argument("--metric", default="real_score", help="summary.json key of the table")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    args, extra = p.parse_known_args(argv)
    if extra and extra[0] == "--":
        extra = extra[1:]
    if args.seeds < 1 or args.workers < 1:
        raise ValueError("--seeds and --workers must be >= 1")
    types = leaf_types(Config)
    grid = []
    for g in args.grid:
        name, eq, vals = g.partition("=")
        name = name.strip().lstrip("-")
        if not eq or not vals:
            raise ConfigError(f"--grid {g!r}: expected section.field=v1,v2")
        if name not in types:
            raise ConfigError(_unknown_message(name, list(types)).replace("unknown flag", "unknown grid field"))
        values = [v.strip() for v in vals.split(",") if v.strip()]
        for v in values:
            parse_value(v, types[name], name)  # fail early on a bad value
        grid.append((name, values))
    return args, grid, extra


def cell_name(cell) -> str:
    return ",".join(f"{k}={v}" for k, v in cell) or "base"


def run_job(job) -> int:
    cmd, logdir = job
    os.makedirs(logdir, exist_ok=True)
    with open(os.path.join(logdir, "stdout.txt"), "w") as out:
        return subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)


def run_jobs(jobs, workers: int, ray_address: str | None) -> list[int]:
    if ray_address:
        try:
            import ray
        except ImportError:
            raise ValueError("--ray needs the 'ray' package, which is not installed (pip install ray)") from None
        ray.init(address=ray_address)
        remote = ray.remote(run_job)
        return ray.get([remote.remote(j) for j in jobs])
    with ThreadPoolExecutor(max_workers=workers) as ex:  # each job is its own process
        return list(ex.map(run_job, jobs))


def bootstrap_ci(x, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): 95% percentile bootstrap interval of the mean."""
    x = np.asarray([v for v in x if v is not None and np.isfinite(v)], float)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(x, (n, len(x)), replace=True).mean(1)
    return float(x.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def mean_curve(per_seed: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) over seeds of per-seed ``[(real step, score), ...]`` curves, on
    the union of their steps (a seed without a step is left out of that step's statistics)."""
    steps = sorted({s for c in per_seed for s, _ in c})
    if not steps:
        e = np.zeros(0)
        return e, e, e, e
    vals = np.array([[dict(c).get(s, np.nan) for s in steps] for c in per_seed], float)
    return np.array(steps), np.nanmean(vals, 0), np.nanmin(vals, 0), np.nanmax(vals, 0)


def reach_rows(curves: dict[str, list[list[tuple[int, float]]]]) -> list[dict]:
    """For each ordered pair of cells (a, b) with curves: b's final mean score (``target``, the
    mean curve's last value), b's last step, the first step at which a's mean curve reaches
    ``target`` (None if never) and ``ratio`` = that step / b's last step (None if never)."""
    from experiments.bench_train import steps_to_reach

    means = {cn: mean_curve(per_seed)[:2] for cn, per_seed in curves.items()}
    means = {cn: (st, m) for cn, (st, m) in means.items() if len(st)}
    rows = []
    for a, (sa, ma) in means.items():
        for b, (sb, mb) in means.items():
            if a == b:
                continue
            reach = steps_to_reach(list(zip(sa.tolist(), ma.tolist())), float(mb[-1]))
            rows.append({"cell": a, "reference": b, "target": float(mb[-1]), "reference_steps": int(sb[-1]),
                         "steps_to_reach": reach, "ratio": None if reach is None else reach / int(sb[-1])})
    return rows


def main(argv=None) -> dict:
    args, grid, extra = parse(argv)
    names = [n for n, _ in grid]
    cells = [tuple(zip(names, vals)) for vals in itertools.product(*[v for _, v in grid])]
    jobs, runs = [], []
    for cell in cells:
        for s in range(args.seeds):
            d = os.path.join(args.logdir, cell_name(cell).replace("/", "_"), f"seed{s}")
            cmd = [sys.executable, "-m", "experiments.train", "--preset", args.base, "--seed", str(s),
                   "--logdir", d, "--log.progress", "false", *[f"--{k}={v}" for k, v in cell], *extra]
            jobs.append((cmd, d))
            runs.append((cell, s, d))
    print(f"{len(cells)} cells x {args.seeds} seeds = {len(jobs)} runs", flush=True)
    codes = run_jobs(jobs, args.workers, args.ray)
    from worldmodels.tb_reader import read_scalars

    rows, curves = [], {}
    for (cell, s, d), code in zip(runs, codes):
        path = os.path.join(d, "summary.json")
        if code != 0 or not os.path.exists(path):
            tail = open(os.path.join(d, "stdout.txt")).read().strip().splitlines()[-1:] if os.path.exists(os.path.join(d, "stdout.txt")) else []
            raise RuntimeError(f"run {d} failed (exit {code}): {tail[0] if tail else 'no output'}")
        with open(path) as f:
            sm = json.load(f)
        rows.append({"cell": cell_name(cell), "seed": s, args.metric: sm.get(args.metric),
                     "heldout_score": sm.get("heldout_score"),
                     "real_env_steps": sm["real_env_steps"], "wall_seconds": sm["wall_seconds"], "logdir": d})
        curves.setdefault(cell_name(cell), []).append(read_scalars(d).get("real/score", []))
    os.makedirs(args.logdir, exist_ok=True)
    with open(os.path.join(args.logdir, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    table = []
    for cell in cells:
        cn = cell_name(cell)
        rs = [r for r in rows if r["cell"] == cn]
        m, lo, hi = bootstrap_ci([r[args.metric] for r in rs], args.bootstrap)
        hm, hlo, hhi = bootstrap_ci([r["heldout_score"] for r in rs if r["heldout_score"] is not None], args.bootstrap)
        table.append({"cell": cn, "seeds": len(rs), "mean": m, "ci_low": lo, "ci_high": hi,
                      "heldout_mean": hm, "heldout_ci_low": hlo, "heldout_ci_high": hhi,
                      "real_env_steps": float(np.mean([r["real_env_steps"] for r in rs]))})
    with open(os.path.join(args.logdir, "table.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    md = [f"| cell | seeds | {args.metric} (mean [95% CI]) | held-out (mean [95% CI]) | real env steps |",
          "|---|---|---|---|---|"]
    for t in table:
        md.append(f"| {t['cell']} | {t['seeds']} | {t['mean']:.4f} [{t['ci_low']:.4f}, {t['ci_high']:.4f}] | "
                  f"{t['heldout_mean']:.4f} [{t['heldout_ci_low']:.4f}, {t['heldout_ci_high']:.4f}] | {t['real_env_steps']:.0f} |")
    reach = reach_rows(curves)
    if reach:
        md += ["", "| cell | reaches the final mean real/score of | target | at real step | reference's steps | ratio |",
               "|---|---|---|---|---|---|"]
        for r in reach:
            at = "never" if r["steps_to_reach"] is None else str(r["steps_to_reach"])
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
            md.append(f"| {r['cell']} | {r['reference']} | {r['target']:.4f} | {at} | {r['reference_steps']} | {ratio} |")
    with open(os.path.join(args.logdir, "table.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    plot_curves(curves, os.path.join(args.logdir, "curves.png"))
    print("\n".join(md))
    return {"rows": rows, "table": table, "reach": reach}


def plot_curves(curves: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for cn, per_seed in curves.items():
        steps, mean, lo, hi = mean_curve(per_seed)
        if not len(steps):
            continue
        ax.plot(steps, mean, marker="o", label=cn)
        ax.fill_between(steps, lo, hi, alpha=0.2)
    ax.set_xlabel("real environment steps")
    ax.set_ylabel("real score (the environment's metric)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    from experiments._cli import run_main

    run_main(main)
