"""Leave-one-out benchmark of a trained optimiser against greedy and backtracking search.

    python -m experiments.bench_loo [--folds all | loo:resnet50,loo:vit,...] [--seeds 1]
        [--first-seed 0] [--per-family 2] [--steps 512] [--backtrack-budget 1000]
        [--episodes 10] [--beams 4] [--logdir runs/loo] [-- extra experiments.train flags]
    python -m experiments.bench_loo --merge A/loo.json,B/loo.json --logdir runs/loo_all

For each fold of `systems_envs.graph.corpus` and each seed it trains a controller with
``python -m experiments.train`` on the fold's training graphs (the other seven benchmarks and
``--per-family`` generated graphs of every family; a run directory that already holds a
``summary.json`` is reused, so an interrupted benchmark resumes), then runs
`experiments.bench_plan` on the left-out benchmark: greedy, backtracking with
``--backtrack-budget`` dequeues (1000 is TASO's default), the policy alone (``--episodes``
chained episodes) and, for each width in ``--beams``, the policy guiding a beam search on the
real simulator (its test-time search). Nothing about the left-out graph is seen in training.
``--merge`` runs nothing and summarises rows measured by earlier invocations (e.g. seeds run
in parallel), refusing a (graph, seed, method) given twice.

Per fold it reports the mean over seeds of each learned method's cost reduction and seconds
next to greedy's and backtracking's, and the two targets of learned optimisation measured
here: at least backtracking's reduction (within ``TIE`` = 1e-4) and at most a tenth of its
wall time; the mean over graphs comes with a 95% interval over seeds. Writes
``LOGDIR/loo.json`` and ``LOGDIR/table.md``; prints the table and, as the last line, the JSON.
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
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    p.add_argument("--beams", default="", help="also the policy guiding a beam search of these widths (comma list)")
    p.add_argument("--backtrack-budget", type=int, default=1000)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--logdir", default="runs/loo")
    p.add_argument("--merge", default="", help="no runs: summarise the rows of these loo.json files (comma list) "
                                               "into LOGDIR's table")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.extra = extra
    if args.first_seed < 0:
        raise ValueError(f"--first-seed must be >= 0, got {args.first_seed}")
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


def method_name(row: dict) -> str:
    """A bench_plan row's method as the summary names it: ``beam K=4`` for a beam width."""
    return f"beam {row['budget']}" if row["method"] == "beam" else row["method"]


def summarise(rows: list[dict]) -> dict:
    """Per-graph means over seeds of bench_plan rows (dicts with ``graph``, ``method``
    (greedy | backtracking | policy | beam with ``budget`` K=w), ``reduction`` in [0, 1],
    ``seconds``, ``seed``) and, per learned method (the policy alone, each beam width), the
    targets: ``at_least_backtracking`` (graphs where its mean reduction is at least
    backtracking's - TIE) and ``tenth_of_time`` (its mean seconds <= backtracking's / 10).
    ``seed_means[method]``: per seed, the mean reduction over graphs; ``ci95[method]``: the
    half-width of a 95% Student-t interval of their mean (0 for one seed)."""
    from scipy import stats

    per: dict[str, dict] = {}
    for r in rows:
        d = per.setdefault(r["graph"], {}).setdefault(method_name(r), {"reduction": [], "seconds": []})
        d["reduction"].append(r["reduction"])
        d["seconds"].append(r["seconds"])
    learned = sorted({method_name(r) for r in rows} - {"greedy", "backtracking"}, key=lambda m: (m != "policy", m))
    graphs = {}
    for g, m in per.items():
        mean = {k: {x: float(np.mean(v[x])) for x in ("reduction", "seconds")} for k, v in m.items()}
        bt = mean["backtracking"]
        graphs[g] = {**mean, "seeds": len(m["policy"]["reduction"]),
                     "at_least_backtracking": {k: mean[k]["reduction"] >= bt["reduction"] - TIE
                                               for k in learned if k in mean},
                     "time_ratio": {k: mean[k]["seconds"] / max(bt["seconds"], 1e-9) for k in learned if k in mean}}
    methods = ["greedy", "backtracking", *learned]
    seed_means = {}
    for k in methods:
        by_seed: dict[int, list] = {}
        for r in rows:
            if method_name(r) == k:
                by_seed.setdefault(r.get("seed", 0), []).append(r["reduction"])
        seed_means[k] = [float(np.mean(v)) for _, v in sorted(by_seed.items())]
    ci = {k: float(stats.t.ppf(0.975, len(v) - 1) * np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
          for k, v in seed_means.items()}
    return {"graphs": graphs, "learned": learned,
            "mean_reduction": {k: float(np.mean([v[k]["reduction"] for v in graphs.values() if k in v])) for k in methods},
            "seed_means": seed_means, "ci95": ci,
            "at_least_backtracking": {k: sum(v["at_least_backtracking"].get(k, False) for v in graphs.values())
                                      for k in learned},
            "tenth_of_time": {k: sum(v["time_ratio"].get(k, np.inf) <= 0.1 for v in graphs.values()) for k in learned},
            "folds": len(graphs)}


def table(summ: dict, budget: int) -> str:
    """The markdown table of a summary: per left-out graph, greedy, backtracking and each
    learned method (reduction, seconds, seconds over backtracking's, ">= bt" when it reaches
    backtracking's reduction); then the mean over graphs (with the 95% interval over seeds)
    and the two counts per learned method."""
    learned = summ["learned"]
    head = ["left-out graph", "seeds", "greedy", f"backtracking ({budget})"] + learned
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    pct = lambda x: f"{100 * x:.2f}%"   # noqa: E731
    for g, v in summ["graphs"].items():
        cells = [g, str(v["seeds"]), pct(v["greedy"]["reduction"]),
                 f"{pct(v['backtracking']['reduction'])} ({v['backtracking']['seconds']:.2f} s)"]
        cells += [f"{pct(v[k]['reduction'])} ({v[k]['seconds']:.2f} s, x{v['time_ratio'][k]:.3f}"
                  f"{', >= bt' if v['at_least_backtracking'][k] else ''})" if k in v else "-" for k in learned]
        lines.append("| " + " | ".join(cells) + " |")
    m, ci = summ["mean_reduction"], summ["ci95"]
    mean_cell = lambda k: pct(m[k]) + (f" +- {100 * ci[k]:.2f}" if ci[k] else "")   # noqa: E731
    lines.append("| mean (95% CI over seeds) | | " + " | ".join(mean_cell(k) for k in ["greedy", "backtracking", *learned])
                 + " |")
    n = summ["folds"]
    lines.append("| >= backtracking / at most a tenth of its time | | | | " + " | ".join(
        f"{summ['at_least_backtracking'][k]} of {n} / {summ['tenth_of_time'][k]} of {n}" for k in learned) + " |")
    return "\n".join(lines)


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


def merged_rows(paths: list[str]) -> list[dict]:
    """The rows of several ``loo.json`` files (e.g. seeds run on different machines); a
    (fold, seed, method) measured twice is refused."""
    rows, seen = [], set()
    for path in paths:
        try:
            with open(path) as f:
                part = json.load(f)["rows"]
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"--merge {path}: not a readable loo.json ({e})") from None
        for r in part:
            key = (r["graph"], r.get("seed", 0), method_name(r))
            if key in seen:
                raise ValueError(f"--merge {path}: {key} is also in an earlier file")
            seen.add(key)
        rows += part
    return rows


def main(argv=None) -> dict:
    args = parse_args(argv)
    from experiments import bench_plan
    from systems_envs.graph.corpus import split

    os.makedirs(args.logdir, exist_ok=True)
    rows = merged_rows(args.merge.split(",")) if args.merge else []
    for fold in [] if args.merge else fold_list(args.folds):
        s = split(fold, per_family=args.per_family)
        (held,) = s.eval
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            run_dir = os.path.join(args.logdir, f"{fold.replace(':', '_')}_seed{seed}")
            train_run(run_dir, list(s.train), held, seed, args.steps, args.extra)
            out = bench_plan.main(["--checkpoint", run_dir, "--graphs", held, "--beams", args.beams, "--simulations", "",
                                   "--episodes", str(args.episodes), "--backtrack-budget", str(args.backtrack_budget)])
            rows += [{**r, "fold": fold, "seed": seed} for r in out["rows"]]
    summ = summarise(rows)
    text = table(summ, args.backtrack_budget)
    print("\n" + text)
    result = {"args": vars(args), "rows": rows, **summ}
    with open(os.path.join(args.logdir, "table.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.logdir, "loo.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("mean_reduction", "at_least_backtracking", "tenth_of_time", "folds")}))
    return result


if __name__ == "__main__":
    from experiments._cli import run_main

    run_main(main)
