"""Benchmark the rewrite environment and the search baselines on the built-in graphs.

    python -m experiments.bench_rewrite [--graphs squeezenet,resnet50] [--budget 1000]
        [--time-limit 60] [--env-steps 100] [--no-taso] [--no-backtrack] [--no-candidate-rewards]
        [--clock wall|cpu]

For each graph: op count, candidates at the start, the median ``GraphRewrite-v0`` step
time over a random episode (ms; the step includes the ``candidate_reward`` feature of the
next observation unless ``--no-candidate-rewards``), and greedy / backtracking cost
reduction and seconds. ``--clock cpu`` times env steps in process CPU time (less
sensitive to other jobs on a shared machine than wall time).
Prints the machine (CPU model, cores) and a markdown table; the last stdout line is the
rows as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from experiments._cli import run_main
from systems_envs.graph.measure import cpu_model


def env_step_ms(graph, rules, steps: int, seed: int = 0, candidate_rewards: bool = True,
                clock=time.perf_counter) -> float:
    """Median time (ms; wall by default, or ``clock``) of ``env.step`` over a random (masked) episode."""
    from systems_envs.rewrite.env import GraphRewriteEnv

    n_nodes = len(graph)
    env = GraphRewriteEnv(graph, rules=rules, max_nodes=max(2048, 2 * n_nodes), max_edges=max(4096, 4 * n_nodes),
                          max_candidates=1024, max_steps=steps, candidate_rewards=candidate_rewards)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(steps):
        mask = env._mask.copy()
        mask[-1] = 0  # never stop: measure rewrite steps
        legal = np.flatnonzero(mask)
        if not len(legal):
            break
        a = int(rng.choice(legal))
        t = clock()
        _, _, term, trunc, _ = env.step(a)
        times.append(clock() - t)
        if term or trunc:
            break
    return 1e3 * float(np.median(times)) if times else float("nan")


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_rewrite", description=__doc__.split("\n\n")[0])
    p.add_argument("--graphs", default=None, help="comma-separated built-in graphs (default: all)")
    p.add_argument("--budget", type=int, default=1000, help="backtracking dequeue budget")
    p.add_argument("--time-limit", type=float, default=60.0, help="backtracking time limit per graph, seconds")
    p.add_argument("--env-steps", type=int, default=100, help="steps of the random episode timing env.step")
    p.add_argument("--no-taso", action="store_true", help="hand-written rules only")
    p.add_argument("--no-backtrack", action="store_true", help="skip backtracking search")
    p.add_argument("--no-candidate-rewards", action="store_true",
                   help="time env.step without the per-candidate reward feature")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="env step timing: wall or process CPU time")
    args = p.parse_args(argv)
    from systems_envs.graph.cost import CostModel
    from systems_envs.graph.models import BUILTIN_GRAPHS, build_graph
    from systems_envs.rewrite.candidates import CandidateIndex
    from systems_envs.rewrite.ruleset import default_rules
    from systems_envs.rewrite.search import backtracking, greedy

    names = list(BUILTIN_GRAPHS) if args.graphs is None else [n.strip() for n in args.graphs.split(",") if n.strip()]
    unknown = [n for n in names if n not in BUILTIN_GRAPHS]
    if unknown:
        raise ValueError(f"unknown graph(s) {', '.join(unknown)} (known: {', '.join(BUILTIN_GRAPHS)})")
    rules = default_rules(taso=not args.no_taso)
    machine = f"{cpu_model()}, {os.cpu_count()} logical cores, Python {platform.python_version()}"
    print(f"machine: {machine}; {len(rules)} rules; cost model analytic v100", flush=True)
    rows = []
    for name in names:
        g = build_graph(name)
        t = time.perf_counter()
        n_cand = len(CandidateIndex(g.copy(), rules, CostModel()))
        match_s = time.perf_counter() - t
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        step = env_step_ms(g, rules, args.env_steps, candidate_rewards=not args.no_candidate_rewards, clock=clock)
        gr = greedy(g, rules)
        row = {"graph": name, "ops": g.num_ops(), "candidates": n_cand, "full_match_s": round(match_s, 3),
               "env_step_ms": round(step, 2), "greedy_reduction": round(gr.reduction, 4),
               "greedy_s": round(gr.seconds, 2)}
        if not args.no_backtrack:
            bt = backtracking(g, rules, budget=args.budget, time_limit=args.time_limit)
            row.update(backtrack_reduction=round(bt.reduction, 4), backtrack_s=round(bt.seconds, 2),
                       backtrack_expanded=bt.expanded)
        print(json.dumps(row), flush=True)
        rows.append(row)
    cols = list(rows[0]) if rows else []
    print()
    print(f"Machine: {machine}")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    run_main(main)
