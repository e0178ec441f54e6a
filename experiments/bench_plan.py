"""Quality against wall time of a trained optimiser's test-time searches and the search baselines.

    python -m experiments.bench_plan --checkpoint RUN_DIR [--graphs resnet50,vit]
        [--beams 2,4] [--simulations 8,32] [--replan 1,4] [--episodes 1] [--backtrack-budget 200]
        [--cost v100|ort-cpu|...]   (default: the cost model the run trained with)

For each graph (a GRAPH as `experiments.optimize` takes it; ``held-out`` in the table when
the run did not train on it) it runs: greedy; backtracking (``--backtrack-budget``
dequeues); the run's policy alone; the policy guiding a beam search of each width in
``--beams`` on the real simulator; and, for a model-based run, MCTS in the world model with
each number of simulations in ``--simulations`` per real step, re-rooted every R real steps
for each R in ``--replan`` (R > 1 plays R steps of the tree's best path over the root's
candidate slots only: the measure of what carrying the start state's slots costs; see
`worldmodels.trained`); ``--episodes`` chains episodes as `experiments.optimize` does (default
1 here: one episode of the run's length). Each learned search is compiled first
(`TrainedRun.warm_up`), so the
seconds are search time, as the baselines' are. Reports cost reduction (``1 - after /
before``, the searches return the cheapest graph seen), seconds and real environment steps;
the table goes to stdout, the last line is a JSON object with every row.
"""
from __future__ import annotations

import argparse
import json
import time


def _ints(text: str, flag: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: give comma-separated integers") from None
    if any(v < 1 for v in vals):
        raise ValueError(f"{flag} {text!r}: every value must be >= 1")
    return vals


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from systems_envs.graph.cost import COST_MODEL_NAMES

    p = argparse.ArgumentParser(prog="python -m experiments.bench_plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="run directory of python -m experiments.train")
    p.add_argument("--graphs", default="resnet50,vit", help="comma-separated graphs")
    p.add_argument("--beams", default="2,4", help="beam widths")
    p.add_argument("--simulations", default="8,32", help="MCTS simulations per real step (model-based runs)")
    p.add_argument("--replan", default="1,4", help="MCTS: real steps played per search")
    p.add_argument("--episodes", type=int, default=1, help="episodes chained per learned search (see optimize)")
    p.add_argument("--backtrack-budget", type=int, default=200, help="backtracking dequeues")
    p.add_argument("--cost", default=None, choices=COST_MODEL_NAMES,
                   help="cost model of every method (default: the run's own, its env.cost)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from systems_envs.graph.load import load_graph
    from systems_envs.rewrite.search import backtracking, greedy
    from worldmodels.tasks import instance_list as graph_list
    from worldmodels.trained import load_run

    graphs = graph_list(args.graphs)
    if not graphs:
        raise ValueError("--graphs: give at least one graph")
    beams, sims, replans = _ints(args.beams, "--beams"), _ints(args.simulations, "--simulations"), \
        _ints(args.replan, "--replan")
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    if args.backtrack_budget < 1:
        raise ValueError(f"--backtrack-budget must be >= 1, got {args.backtrack_budget}")
    rows = []

    def add(graph, split, method, budget, result, steps):
        rows.append({"graph": graph, "split": split, "method": method, "budget": budget,
                     "reduction": round(result.reduction, 5), "seconds": round(result.seconds, 3), "steps": steps})
        print(f"  {method:<12} {str(budget):>8}: {100 * result.reduction:6.2f}% in {result.seconds:7.2f} s "
              f"({steps} real steps)", flush=True)

    for g in graphs:
        graph = load_graph(g)
        run = load_run(args.checkpoint, graph, cost=args.cost)
        split = "train" if g in graph_list(run.cfg.env.graph) else "held-out"
        print(f"{g} ({split}, {graph.num_ops()} ops), run {run.run_dir} "
              f"({'model-based' if run.model_based else 'model-free'}, step {run.step})", flush=True)
        rules, cost_model = run.env.rules, run.env.cost_model   # the baselines search what the policy does
        r = greedy(graph, rules, cost_model)
        add(g, split, "greedy", "-", r, r.expanded)
        r = backtracking(graph, rules, cost_model, budget=args.backtrack_budget)
        add(g, split, "backtracking", args.backtrack_budget, r, r.expanded)
        searches = [("policy", 1, None, 1)] + [("beam", k, None, 1) for k in beams]
        if run.model_based:
            searches += [("mcts", 1, n, rp) for n in sims for rp in replans]
        for search, width, n, rp in searches:
            run.warm_up(search, width=width, simulations=n or 1, replan=rp)
            t0 = time.perf_counter()
            r = run.optimise(search, width=width, simulations=n or 1, replan=rp, episodes=args.episodes)
            r.seconds = time.perf_counter() - t0
            budget = {"policy": "-", "beam": f"K={width}", "mcts": f"N={n},R={rp}"}[search]
            add(g, split, search, budget, r, r.expanded)
    print("\n| graph | split | method | budget | cost reduction | seconds | real steps |")
    print("|---|---|---|---|---:|---:|---:|")
    for x in rows:
        print(f"| {x['graph']} | {x['split']} | {x['method']} | {x['budget']} | {100 * x['reduction']:.2f}% | "
              f"{x['seconds']:.2f} | {x['steps']} |")
    summary = {"checkpoint": args.checkpoint, "cost": run.cost, "episodes": args.episodes, "rows": rows}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    from experiments._cli import run_main

    run_main(main)
