"""Optimise a graph with a non-learned rewrite search.

    python -m experiments.optimize GRAPH --search greedy|backtrack|random [--budget N]
        [--alpha A] [--device NAME] [--seed S] [--out OUT.onnx] [--no-taso]

GRAPH is a built-in name, a TASO ``.model`` or an ``.onnx`` file. Progress goes to
stdout; the last stdout line is a JSON object with graph, ops_before, ops_after,
cost_before_ms, cost_after_ms, reduction, rewrites, seconds, expanded, search, device.
``--budget``: backtracking dequeues (default 1000), random steps (default 200), greedy
steps (default unlimited).
"""
from __future__ import annotations

import argparse
import json

from experiments._cli import run_main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.optimize", description=__doc__.split("\n\n")[0])
    p.add_argument("graph", help="built-in graph name, .model or .onnx file")
    p.add_argument("--search", choices=["greedy", "backtrack", "random"], default="greedy")
    p.add_argument("--budget", type=int, default=None, help="dequeues (backtrack) / steps (random, greedy)")
    p.add_argument("--alpha", type=float, default=1.05, help="backtracking relaxation factor")
    p.add_argument("--device", default="v100", help="device preset of the analytic cost model")
    p.add_argument("--seed", type=int, default=0, help="seed (random search; weights of .model files)")
    p.add_argument("--time-limit", type=float, default=None, help="backtracking wall-clock limit, seconds")
    p.add_argument("--out", default=None, help="write the optimised graph as ONNX to this path")
    p.add_argument("--no-taso", action="store_true", help="use only the hand-written rules")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from systems_envs.graph.cost import CostModel
    from systems_envs.graph.load import load_graph
    from systems_envs.rewrite.ruleset import default_rules
    from systems_envs.rewrite.search import SEARCHES

    if args.budget is not None and args.budget < 1:
        raise ValueError(f"--budget must be >= 1, got {args.budget}")
    if args.out is not None and not str(args.out).lower().endswith(".onnx"):
        raise ValueError(f"--out {args.out!r}: the output must be an .onnx file")
    cost_model = CostModel(args.device)
    graph = load_graph(args.graph, seed=args.seed)
    rules = default_rules(taso=not args.no_taso)
    print(f"{graph.summary()}")
    print(f"{len(rules)} rules, search {args.search}, device {cost_model.device.name}", flush=True)
    kwargs: dict = {"progress": lambda msg: print(msg, flush=True)}
    if args.search == "backtrack":
        kwargs.update(alpha=args.alpha, budget=args.budget or 1000, time_limit=args.time_limit)
    elif args.search == "random":
        kwargs.update(steps=args.budget or 200, seed=args.seed)
    elif args.budget is not None:
        kwargs.update(max_steps=args.budget)
    ops_before = graph.num_ops()
    result = SEARCHES[args.search](graph, rules, cost_model, **kwargs)
    result.graph.validate()
    print(f"cost {result.cost_before:.4f} ms -> {result.cost_after:.4f} ms "
          f"({100 * result.reduction:.2f}% lower), ops {ops_before} -> {result.graph.num_ops()}, "
          f"{len(result.rewrites)} rewrites, {result.seconds:.1f} s")
    counts: dict[str, int] = {}
    for name, _ in result.rewrites:
        counts[name] = counts.get(name, 0) + 1
    for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {n:4d} x {name}")
    if args.out is not None:
        from systems_envs.graph.onnx_io import export_onnx

        export_onnx(result.graph, args.out)
        print(f"wrote {args.out}")
    summary = {
        "graph": graph.name, "search": args.search, "device": cost_model.device.name,
        "ops_before": ops_before, "ops_after": result.graph.num_ops(),
        "cost_before_ms": result.cost_before, "cost_after_ms": result.cost_after,
        "reduction": result.reduction, "rewrites": len(result.rewrites),
        "seconds": round(result.seconds, 3), "expanded": result.expanded,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    run_main(main)
