"""Leave-one-out benchmark of a trained optimiser against greedy and backtracking search.

    python -m experiments.bench_loo [--folds all | loo:resnet50,loo:vit,...] [--seeds 1]
        [--per-family 2] [--steps 512] [--backtrack-budget 1000] [--episodes 10]
        [--logdir runs/loo] [-- extra experiments.train flags]

For each fold of `systems_envs.graph.corpus` and each seed it trains a controller with
``python -m experiments.train`` on the fold's training graphs (the other seven benchmarks and
``--per-family`` generated graphs of every family; a run directory that already holds a
``summary.json`` is reused, so an interrupted benchmark resumes), then runs
`experiments.bench_plan` on the left-out benchmark: greedy, backtracking with
``--backtrack-budget`` dequeues (1000 is TASO's default) and the policy alone (``--episodes``
chained episodes). Nothing about the left-out graph is seen in training.

Per fold it reports the mean over seeds of the policy's cost reduction and seconds next to
greedy's and backtracking's, and the two targets of learned optimisation measured here:
the policy at least backtracking's reduction (within ``TIE`` = 1e-4) and at most a tenth of
its wall time. Writes ``LOGDIR/loo.json`` and ``LOGDIR/table.md``; prints the table and, as
the last line, the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

TIE = 1e-4   # reductions closer than this are the same graph cost up to float round-off


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m experiments.bench_loo", description=__doc__.split("\n\n")[0])
    p.add_argument("--folds", default="all", help="comma-separated loo:<benchmark> folds, or all")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--per-family", type=int, default=2, help="generated training graphs per family")
    p.add_argument("--steps", type=int, default=512, help="real environment steps per training run")
    p.add_argument("--backtrack-budget", type=int, default=1000)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--logdir", default="runs/loo")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.extra = extra
    for flag in ("seeds", "steps", "backtrack_budget", "episodes"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    return args


def fold_list(text: str) -> list[str]:
    from systems_envs.graph.corpus import FOLDS, ProtocolError

    loo = [f for f in FOLDS if f.startswith("loo:")]
    folds = loo if text == "all" else [f.strip() for f in text.split(",") if f.strip()]
    for f in folds:
        if f not in loo:
            raise ProtocolError(f"--folds: unknown leave-one-out fold {f!r} (folds: {', '.join(loo)}, or all)")
    return folds


def summarise(rows: list[dict]) -> dict:
    """Per-graph means over seeds of bench_plan rows (dicts with ``graph``, ``method``
    (greedy | backtracking | policy), ``reduction`` in [0, 1], ``seconds``) and the targets:
    ``at_least_backtracking`` (graphs where the policy's mean reduction is at least
    backtracking's - TIE), ``tenth_of_time`` (policy seconds <= backtracking's / 10)."""
    per: dict[str, dict] = {}
    for r in rows:
        d = per.setdefault(r["graph"], {}).setdefault(r["method"], {"reduction": [], "seconds": []})
        d["reduction"].append(r["reduction"])
        d["seconds"].append(r["seconds"])
    graphs = {}
    for g, m in per.items():
        mean = {k: {x: float(np.mean(v[x])) for x in ("reduction", "seconds")} for k, v in m.items()}
        pol, bt = mean["policy"], mean["backtracking"]
        graphs[g] = {**mean, "seeds": len(m["policy"]["reduction"]),
                     "at_least_backtracking": pol["reduction"] >= bt["reduction"] - TIE,
                     "time_ratio": pol["seconds"] / max(bt["seconds"], 1e-9)}
    mean_of = lambda k: float(np.mean([v[k]["reduction"] for v in graphs.values()]))   # noqa: E731
    return {"graphs": graphs,
            "mean_reduction": {k: mean_of(k) for k in ("greedy", "backtracking", "policy")},
            "at_least_backtracking": sum(v["at_least_backtracking"] for v in graphs.values()),
            "tenth_of_time": sum(v["time_ratio"] <= 0.1 for v in graphs.values()),
            "folds": len(graphs)}


def train_run(run_dir: str, train: list[str], heldout: str, seed: int, steps: int, extra: list[str]) -> None:
    if os.path.exists(os.path.join(run_dir, "summary.json")):
        return
    cmd = [sys.executable, "-m", "experiments.train", "--logdir", run_dir, "--env.graph", ",".join(train),
           "--env.heldout", heldout, "--loop.total_env_steps", str(steps), "--seed", str(seed), *extra]
    print("$", " ".join(cmd[1:4]), "...", f"({len(train)} training graphs, seed {seed})", flush=True)
    # the folds' runs share their shapes (capacities follow the largest training graph), so a
    # persistent XLA cache compiles the large networks once instead of once per fold
    env = {"JAX_COMPILATION_CACHE_DIR": os.path.join(os.path.dirname(run_dir), "xla_cache"), **os.environ}
    with open(run_dir + ".log", "w") as log:
        if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode:
            raise RuntimeError(f"training run {run_dir} failed; see {log.name}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    from experiments import bench_plan
    from systems_envs.graph.corpus import split

    os.makedirs(args.logdir, exist_ok=True)
    rows = []
    for fold in fold_list(args.folds):
        s = split(fold, per_family=args.per_family)
        (held,) = s.eval
        for seed in range(args.seeds):
            run_dir = os.path.join(args.logdir, f"{fold.replace(':', '_')}_seed{seed}")
            train_run(run_dir, list(s.train), held, seed, args.steps, args.extra)
            out = bench_plan.main(["--checkpoint", run_dir, "--graphs", held, "--beams", "", "--simulations", "",
                                   "--episodes", str(args.episodes), "--backtrack-budget", str(args.backtrack_budget)])
            rows += [{**r, "fold": fold, "seed": seed} for r in out["rows"]]
    summ = summarise(rows)
    lines = [f"| left-out graph | seeds | greedy | backtracking ({args.backtrack_budget}) | policy | "
             "policy s / backtracking s | policy >= backtracking |", "|---|---:|---:|---:|---:|---|---|"]
    for g, v in summ["graphs"].items():
        lines.append(f"| {g} | {v['seeds']} | {100 * v['greedy']['reduction']:.2f}% | "
                     f"{100 * v['backtracking']['reduction']:.2f}% ({v['backtracking']['seconds']:.2f} s) | "
                     f"{100 * v['policy']['reduction']:.2f}% ({v['policy']['seconds']:.2f} s) | "
                     f"{v['time_ratio']:.3f} | {'yes' if v['at_least_backtracking'] else 'no'} |")
    m = summ["mean_reduction"]
    lines.append(f"| mean | | {100 * m['greedy']:.2f}% | {100 * m['backtracking']:.2f}% | {100 * m['policy']:.2f}% | "
                 f"{summ['tenth_of_time']} of {summ['folds']} at most 0.1 | "
                 f"{summ['at_least_backtracking']} of {summ['folds']} |")
    table = "\n".join(lines)
    print("\n" + table)
    result = {"args": vars(args), "rows": rows, **summ}
    with open(os.path.join(args.logdir, "table.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.logdir, "loo.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("mean_reduction", "at_least_backtracking", "tenth_of_time", "folds")}))
    return result


if __name__ == "__main__":
    from experiments._cli import run_main

    run_main(main)
