"""Optimise a graph with a non-learned rewrite search, and optionally measure the result.

    python -m experiments.optimize GRAPH --search greedy|backtrack|random [--budget N]
        [--alpha A] [--cost NAME] [--min-gain F] [--seed S] [--out OUT.onnx] [--no-taso]
        [--verify [--rounds R] [--threads T] [--write-optimized]]
    python -m experiments.optimize GRAPH --search policy --checkpoint RUN_DIR
        [--beam K | --simulations N [--replan R]] [--episodes E] [--out OUT.onnx] ...

GRAPH is a built-in name, a TASO ``.model`` or an ``.onnx`` file. ``--cost`` names the
cost model the search minimises (``v100`` analytic roofline by default, and for ``--search
policy`` the cost model its run trained with; ``ort-cpu``: onnxruntime on this CPU,
fusion-aware; ``e2e``: whole graphs timed in onnxruntime, slow; ``--device`` is an alias).
``--budget``: backtracking dequeues (default 1000), random steps (default 200), greedy steps
(default unlimited). ``--min-gain F``: greedy takes no step
predicted to gain less than F of the cost (default: the cost model's resolution, e.g.
about 2% for ``ort-cpu`` on this shared machine; 0 for the analytic models).

``--search policy`` applies the controller trained by ``python -m experiments.train
--logdir RUN_DIR`` (its latest checkpoint; `worldmodels.trained`): alone (its most probable
rewrite until it stops), guiding a beam search of width ``--beam K`` on the real simulator,
or choosing each rewrite by ``--simulations N`` MCTS simulations in the run's world model
(model-based runs; the search is re-rooted every ``--replan R`` real steps, default 1).
An episode lasts the run's ``env.max_steps`` rewrites; ``--episodes E`` (default 10) chains up
to E episodes, each from the previous one's best graph, while they lower the cost.
``--beam`` and ``--simulations`` are the test-time budget: more is slower and finds at least
as much in the search (`experiments.bench_plan` measures it). It always runs on the
hand-written + TASO rules the run trained with (``--no-taso`` does not apply). The optimised
graph is checked equivalent to the input: both are run by the reference executor on the same
random inputs and weights, and an output that differs beyond float32 round-off is an error
(summary field ``max_error``, relative to each output's largest magnitude). A run that is
missing, corrupt, not a ppo run, or trained with a rule this code no longer has or another
feature width is a one-line error; a run trained before rules were added is applied with
the rules it was trained with (in its id order; the new ones are not offered).

``--verify`` times the original and the optimised model side by side in onnxruntime on
this CPU (default session optimisations, ``--threads`` intra-op threads, default 1):
``--rounds`` interleaved rounds (default 30) of three sessions, the original, the
optimised model and a second session of the original as a noise control, and prints the
measured speed-up with its spread. The original is the GRAPH file itself for ``.onnx``
input, else the graph exported unchanged. Unless the optimised model is faster beyond
the noise, ``--out`` receives the original (the measured-safe choice; say so with
``written: "original"``); ``--write-optimized`` writes the optimised model regardless.

Progress goes to stdout; the last stdout line is a JSON object with graph, ops_before,
ops_after, cost_before_ms, cost_after_ms, reduction, rewrites, seconds, expanded, search,
cost (and device, the same name); with ``--verify`` also measured_ms_before,
measured_ms_after, measured_speedup, measured_spread, measured_noise, verdict
(faster|same|slower) and written (optimized|original).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments._cli import run_main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from systems_envs.graph.cost import COST_MODEL_NAMES

    p = argparse.ArgumentParser(prog="python -m experiments.optimize", description=__doc__.split("\n\n")[0])
    p.add_argument("graph", help="built-in graph name, .model or .onnx file")
    p.add_argument("--search", choices=["greedy", "backtrack", "random", "policy"], default="greedy")
    p.add_argument("--checkpoint", default=None, help="--search policy: run directory of python -m experiments.train")
    p.add_argument("--beam", type=int, default=None, help="--search policy: beam width K on the real simulator")
    p.add_argument("--simulations", type=int, default=None,
                   help="--search policy: MCTS simulations per real step in the world model")
    p.add_argument("--replan", type=int, default=1, help="--simulations: real steps played per search")
    p.add_argument("--episodes", type=int, default=10,
                   help="--search policy: episodes chained from the previous best graph while the cost drops")
    p.add_argument("--budget", type=int, default=None, help="dequeues (backtrack) / steps (random, greedy)")
    p.add_argument("--alpha", type=float, default=1.05, help="backtracking relaxation factor")
    p.add_argument("--cost", "--device", dest="cost", default=None, choices=COST_MODEL_NAMES,
                   help="cost model the search minimises (--device is an alias; default v100, or for "
                        "--search policy the one its run trained with)")
    p.add_argument("--min-gain", type=float, default=None,
                   help="greedy: smallest predicted gain taken, a fraction of the cost "
                        "(default: the cost model's resolution)")
    p.add_argument("--seed", type=int, default=0, help="seed (random search; weights of .model files)")
    p.add_argument("--time-limit", type=float, default=None, help="backtracking wall-clock limit, seconds")
    p.add_argument("--out", default=None, help="write the optimised graph as ONNX to this path")
    p.add_argument("--no-taso", action="store_true", help="use only the hand-written rules")
    p.add_argument("--verify", action="store_true", help="time original and optimised side by side in onnxruntime")
    p.add_argument("--rounds", type=int, default=30, help="--verify: interleaved timing rounds")
    p.add_argument("--threads", type=int, default=1, help="--verify: onnxruntime intra-op threads")
    p.add_argument("--write-optimized", action="store_true",
                   help="--verify: write the optimised model even if it is not measurably faster")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from systems_envs.graph.cost import make_cost_model
    from systems_envs.graph.load import load_graph
    from systems_envs.rewrite.ruleset import default_rules
    from systems_envs.rewrite.search import SEARCHES

    if args.budget is not None and args.budget < 1:
        raise ValueError(f"--budget must be >= 1, got {args.budget}")
    if args.out is not None and not str(args.out).lower().endswith(".onnx"):
        raise ValueError(f"--out {args.out!r}: the output must be an .onnx file")
    if args.rounds < 3 or args.threads < 1:
        raise ValueError(f"--rounds must be >= 3 and --threads >= 1, got {args.rounds} and {args.threads}")
    if args.min_gain is not None and (args.search != "greedy" or not args.min_gain >= 0.0):
        raise ValueError(f"--min-gain applies only to --search greedy and must be >= 0, got {args.min_gain}")
    if args.write_optimized and not args.verify:
        raise ValueError("--write-optimized only applies with --verify")
    policy_flags = [f for f, v in (("--checkpoint", args.checkpoint), ("--beam", args.beam),
                                   ("--simulations", args.simulations)) if v is not None]
    if args.search != "policy" and policy_flags:
        raise ValueError(f"{', '.join(policy_flags)} only apply with --search policy")
    if args.search == "policy":
        if args.checkpoint is None:
            raise ValueError("--search policy needs --checkpoint RUN_DIR (a run of python -m experiments.train)")
        if args.beam is not None and args.simulations is not None:
            raise ValueError("give --beam K or --simulations N, not both")
        if (args.beam is not None and args.beam < 1) or (args.simulations is not None and args.simulations < 1):
            raise ValueError("--beam and --simulations must be >= 1")
        if args.replan < 1 or args.episodes < 1:
            raise ValueError(f"--replan and --episodes must be >= 1, got {args.replan} and {args.episodes}")
        if args.no_taso:
            raise ValueError("--no-taso does not apply to --search policy (it uses the rules its run trained with)")
        if args.budget is not None:
            raise ValueError("--budget does not apply to --search policy (its budget is --beam K or --simulations N)")
    graph = load_graph(args.graph, seed=args.seed)
    if args.search == "policy":
        return _policy_main(args, graph)
    cost_model = make_cost_model(args.cost or "v100")
    rules = default_rules(taso=not args.no_taso)
    print(f"{graph.summary()}")
    print(f"{len(rules)} rules, search {args.search}, cost model {cost_model.name}", flush=True)
    kwargs: dict = {"progress": lambda msg: print(msg, flush=True)}
    if args.search == "backtrack":
        kwargs.update(alpha=args.alpha, budget=args.budget or 1000, time_limit=args.time_limit)
    elif args.search == "random":
        kwargs.update(steps=args.budget or 200, seed=args.seed)
    else:
        kwargs.update(min_gain=args.min_gain)
        if args.budget is not None:
            kwargs.update(max_steps=args.budget)
    ops_before = graph.num_ops()
    result = SEARCHES[args.search](graph, rules, cost_model, **kwargs)
    return _report(args, graph, cost_model, ops_before, result, {})


def _policy_main(args, graph) -> dict:
    """``--search policy``: the trained controller of ``--checkpoint`` (see the module docstring),
    on ``--cost`` or else the cost model its run trained with."""
    from worldmodels.trained import load_run

    run = load_run(args.checkpoint, graph, cost=args.cost)
    cost_model = run.env.cost_model
    kind = "model-based" if run.model_based else "model-free"
    if args.simulations is not None:
        search, how = "mcts", f"MCTS, {args.simulations} simulations per real step, replan every {args.replan}"
    elif args.beam is not None:
        search, how = "beam", f"beam search of width {args.beam} on the real simulator"
    else:
        search, how = "policy", "the policy alone"
    print(f"{graph.summary()}")
    print(f"{kind} ppo from {run.run_dir} (checkpoint at real step {run.step}), {len(run.env.rules)} rules, "
          f"{how}, cost model {cost_model.name}", flush=True)
    ops_before = graph.num_ops()
    result = run.optimise(search, width=args.beam or 1, simulations=args.simulations or 1, replan=args.replan,
                          episodes=args.episodes, seed=args.seed, progress=lambda msg: print(msg, flush=True))
    err = _check_equivalent(graph, result.graph, seed=args.seed)
    print(f"equivalent to the input: largest output difference {err:.2e} of the output's magnitude")
    extra = {"checkpoint": run.run_dir, "checkpoint_step": run.step, "policy_search": search,
             "beam": args.beam, "simulations": args.simulations, "max_error": err}
    return _report(args, graph, cost_model, ops_before, result, extra)


def _check_equivalent(original, optimised, seed: int = 0, rtol: float = 1e-3) -> float:
    """Run both graphs with the reference executor (float32, the same random inputs and
    weights); the largest output difference relative to that output's largest magnitude
    (at least 1). Raises GraphError if it exceeds ``rtol``."""
    import numpy as np

    from systems_envs.graph.executor import execute
    from systems_envs.graph.ir import GraphError

    a = execute(original, seed=seed)
    b = execute(optimised, seed=seed)
    if len(a) != len(b):
        raise GraphError(f"optimised graph has {len(b)} outputs, the input {len(a)}")
    err = 0.0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            raise GraphError(f"optimised graph changed an output shape {x.shape} -> {y.shape}")
        scale = max(1.0, float(np.abs(x).max()) if x.size else 1.0)
        err = max(err, float(np.abs(x.astype(np.float64) - y).max()) / scale if x.size else 0.0)
    if not err <= rtol:
        raise GraphError(f"the optimised graph is not equivalent to the input: outputs differ by {err:.2e} "
                         f"of their magnitude (> {rtol})")
    return err


def _report(args, graph, cost_model, ops_before, result, extra: dict) -> dict:
    """Print the search result, export / verify / write it; returns the JSON summary."""
    result.graph.validate()
    print(f"cost {result.cost_before:.4f} ms -> {result.cost_after:.4f} ms "
          f"({100 * result.reduction:.2f}% lower), ops {ops_before} -> {result.graph.num_ops()}, "
          f"{len(result.rewrites)} rewrites, {result.seconds:.1f} s")
    counts: dict[str, int] = {}
    for name, _ in result.rewrites:
        counts[name] = counts.get(name, 0) + 1
    for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {n:4d} x {name}")
    summary = {
        "graph": graph.name, "search": args.search, "cost": cost_model.name, "device": cost_model.name,
        "ops_before": ops_before, "ops_after": result.graph.num_ops(),
        "cost_before_ms": result.cost_before, "cost_after_ms": result.cost_after,
        "reduction": result.reduction, "rewrites": len(result.rewrites),
        "seconds": round(result.seconds, 3), "expanded": result.expanded, **extra,
    }
    from systems_envs.graph.onnx_io import export_onnx

    optimised = export_onnx(result.graph)
    to_write = optimised
    if args.verify:
        from systems_envs.graph.measure import keep_if_faster

        is_onnx = str(args.graph).lower().endswith(".onnx")
        original = Path(args.graph).read_bytes() if is_onnx else export_onnx(graph).SerializeToString()
        print(f"timing original and optimised in onnxruntime: {args.rounds} interleaved rounds, "
              f"{args.threads} thread(s), a second session of the original as noise control", flush=True)
        written, cmp = keep_if_faster(original, optimised, args.write_optimized, threads=args.threads,
                                      rounds=args.rounds, seed=args.seed)
        print(f"measured {cmp.before_ms:.3f} ms -> {cmp.after_ms:.3f} ms: speed-up x{cmp.speedup:.3f} "
              f"+- {cmp.spread:.3f} (noise control +- {cmp.noise:.3f}): {cmp.verdict}")
        if cmp.verdict != "faster":
            print("the optimised model is not faster beyond noise"
                  + ("; writing the original" if written == "original" and args.out else ""))
        if written == "original":
            import onnx

            to_write = onnx.load_from_string(original)
        summary.update(measured_ms_before=round(cmp.before_ms, 4), measured_ms_after=round(cmp.after_ms, 4),
                       measured_speedup=round(cmp.speedup, 4), measured_spread=round(cmp.spread, 4),
                       measured_noise=round(cmp.noise, 4), verdict=cmp.verdict, written=written)
    if args.out is not None:
        import onnx

        onnx.save(to_write, args.out)
        print(f"wrote {args.out}" + (" (the original)" if summary.get("written") == "original" else ""))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    run_main(main)
