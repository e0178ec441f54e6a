"""Calibration: how well each cost model's prediction matches measured onnxruntime latency.

    python -m experiments.bench_cost [--graphs a,b|all|none] [--zoo a,b|all|none]
        [--variants 8] [--steps 15] [--rounds 10] [--costs ort-cpu,v100] [--seed 0]

    full run: --graphs all --zoo all --variants 30 --steps 40

Graphs: the built-in ``--graphs``, the PyTorch-exported ``--zoo`` models (``torch_zoo``,
dynamo exporter, opset 18; skipped without the torch extra) and, per model, ``--variants``
rewritten versions: random rewrite prefixes (1..``--steps`` uniformly random candidates
from a seeded walk) and greedy prefixes under each cost model in ``--costs`` (half the
greedy steps, and all of them). Duplicates (same graph hash) are timed once.

Each graph is exported and timed end to end in onnxruntime on this CPU (one intra-op
thread, default optimisations: :class:`~systems_envs.graph.measure.E2ETimer`, ``--rounds``
rounds, cached on disk), and costed by each cost model. Figures per cost model:

* ``spearman``: rank correlation between predicted and measured latency over all graphs;
* ``median_rel_error``: median of ``|predicted - measured| / measured``;
* ``scaled_median_rel_error``: the same after one global factor (the median of
  measured/predicted), i.e. the shape of the prediction without its unit;
* ``within_model_spearman``: mean over models of the rank correlation among that model's
  own variants (the ranking a search relies on), models with at least 4 distinct graphs.

Prints the machine and a markdown table; the last stdout line is JSON ``{"machine",
"graphs", "figures"}`` with one record per graph (model, variant, measured ms, noise,
each model's prediction).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from experiments._cli import run_main


def variants(graph, rules, cost_models: dict, n: int, steps: int, seed: int) -> list[tuple[str, object]]:
    """``[(label, graph)]``: the original, greedy prefixes under each cost model and random walks,
    ``n`` rewritten graphs at most besides the original."""
    from systems_envs.rewrite.candidates import CandidateIndex
    from systems_envs.rewrite.search import greedy

    out = [("original", graph)]
    for name, cm in cost_models.items():
        full = greedy(graph, rules, cm, max_steps=max(steps, 1) * 10)
        k = len(full.rewrites)
        if k >= 2:
            out.append((f"greedy-{name}-{k // 2}", greedy(graph, rules, cm, max_steps=k // 2).graph))
        if k >= 1:
            out.append((f"greedy-{name}-{k}", full.graph))
    rng = np.random.default_rng(seed)
    while len(out) < n + 1:
        length = int(rng.integers(1, steps + 1))
        idx = CandidateIndex(graph.copy(), rules)
        done = 0
        while done < length and len(idx):
            idx.apply(int(rng.integers(len(idx))))
            done += 1
        out.append((f"random-{done}", idx.graph))
    return out[: n + 1]


def spearman(pred, meas) -> float:
    """Spearman rank correlation (nan when either side is constant or has < 3 points)."""
    from scipy.stats import spearmanr

    if len(pred) < 3 or np.ptp(pred) == 0 or np.ptp(meas) == 0:
        return float("nan")
    return float(spearmanr(pred, meas).statistic)


def figures(records: list[dict], costs: list[str]) -> dict[str, dict]:
    """Per cost model: spearman, median_rel_error, scaled_median_rel_error, within_model_spearman."""
    meas = np.array([r["measured_ms"] for r in records])
    out = {}
    for c in costs:
        pred = np.array([r[c] for r in records])
        scale = float(np.median(meas / pred))
        within = []
        for m in sorted({r["model"] for r in records}):
            rs = [r for r in records if r["model"] == m]
            if len(rs) >= 4:
                s = spearman([r[c] for r in rs], [r["measured_ms"] for r in rs])
                if not np.isnan(s):
                    within.append(s)
        out[c] = {"spearman": round(spearman(pred, meas), 4),
                  "median_rel_error": round(float(np.median(np.abs(pred - meas) / meas)), 4),
                  "scale": round(scale, 4),
                  "scaled_median_rel_error": round(float(np.median(np.abs(scale * pred - meas) / meas)), 4),
                  "within_model_spearman": round(float(np.mean(within)), 4) if within else float("nan"),
                  "models_within": len(within)}
    return out


def main(argv: list[str] | None = None) -> dict:
    from systems_envs.graph.cost import COST_MODEL_NAMES

    from experiments._bench_models import load_models, parse_names, zoo_names

    p = argparse.ArgumentParser(prog="python -m experiments.bench_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--graphs", default="squeezenet,nasrnn", help="built-in graphs: all, none or a comma list")
    p.add_argument("--zoo", default="resnet,mobilenetv3,squeezenet,bert", help="torch_zoo models: all, none or a list")
    p.add_argument("--variants", type=int, default=8, help="rewritten graphs per model")
    p.add_argument("--steps", type=int, default=15, help="longest random rewrite walk")
    p.add_argument("--rounds", type=int, default=10, help="end-to-end timing rounds per graph")
    p.add_argument("--costs", default="ort-cpu,v100", help="cost models to calibrate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="folder for the exported zoo models (default: a temp folder)")
    args = p.parse_args(argv)
    from systems_envs.graph.cost import make_cost_model
    from systems_envs.graph.measure import E2ETimer, cpu_model
    from systems_envs.graph.models import BUILTIN_GRAPHS
    from systems_envs.rewrite.ruleset import default_rules

    graphs = parse_names(args.graphs, list(BUILTIN_GRAPHS), "--graphs")
    zoo = parse_names(args.zoo, zoo_names(), "--zoo") if args.zoo not in ("none", "") else []
    costs = parse_names(args.costs, COST_MODEL_NAMES, "--costs")
    if "e2e" in costs:
        raise ValueError("--costs: e2e is the measurement itself")
    if args.variants < 0 or args.steps < 1 or args.rounds < 2:
        raise ValueError("--variants must be >= 0, --steps >= 1 and --rounds >= 2")
    machine = f"{cpu_model()}, {os.cpu_count()} logical cores, onnxruntime threads 1"
    print(f"machine: {machine}", flush=True)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="sysworld_bench_cost_"))
    models = load_models(graphs, zoo, workdir)
    rules = default_rules()
    cms = {c: make_cost_model(c) for c in costs}
    timer = E2ETimer(rounds=args.rounds)
    records, seen = [], set()
    for k, m in enumerate(models):
        try:
            graphs_of_m = variants(m.graph, rules, cms, args.variants, args.steps, args.seed * 1000 + k)
        except Exception as e:  # noqa: BLE001 - reported per model, the benchmark goes on
            print(f"{m.name}: skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
            continue
        for label, g in graphs_of_m:
            if g.hash() in seen:
                continue
            seen.add(g.hash())
            try:
                t = timer.timing(g)
                rec = {"model": m.name, "variant": label, "measured_ms": round(t.median_ms, 4),
                       "noise": round(t.noise, 4), **{c: round(cm.graph_cost(g), 4) for c, cm in cms.items()}}
            except Exception as e:  # noqa: BLE001 - reported per graph (type and message), the benchmark goes on
                print(f"{m.name} {label}: skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                      flush=True)
                continue
            print(json.dumps(rec), flush=True)
            records.append(rec)
    if len(records) < 3:
        raise ValueError(f"only {len(records)} graph(s) could be timed: too few to calibrate")
    figs = figures(records, costs)
    print()
    print(f"Machine: {machine}; {len(records)} graphs from {len({r['model'] for r in records})} models; "
          f"median measurement noise {100 * float(np.median([r['noise'] for r in records])):.1f}%")
    print("| cost model | spearman | median rel. error | scale | scaled median rel. error | within-model spearman |")
    print("|---|---|---|---|---|---|")
    for c, f in figs.items():
        print(f"| {c} | {f['spearman']} | {100 * f['median_rel_error']:.1f}% | {f['scale']} | "
              f"{100 * f['scaled_median_rel_error']:.1f}% | {f['within_model_spearman']} "
              f"({f['models_within']} models) |")
    out = {"machine": machine, "graphs": records, "figures": figs}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    run_main(main)
