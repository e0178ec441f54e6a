"""Claimed cost reduction next to the speed-up onnxruntime measures, per model.

    python -m experiments.bench_runtime [--graphs all|a,b|none] [--zoo all|a,b|none]
        [--costs ort-cpu,v100] [--rounds 30] [--threads 1] [--max-steps N] [--min-gain F]
        [--guard] [--workdir DIR]

For every built-in graph and every PyTorch-exported zoo model (``torch_zoo``, dynamo
exporter, opset 18; skipped without the torch extra), and for each cost model in
``--costs``: greedy search under that cost model (no step predicted to gain less than
``--min-gain`` of the cost; default: the cost model's resolution), then the original and
the optimised model timed side by side in onnxruntime on this CPU with default session
options (``ORT_ENABLE_ALL``) on ``--threads`` intra-op threads: ``--rounds`` interleaved rounds
with a second session of the original as a noise control
(:func:`~systems_envs.graph.measure.compare_models`). The original is the unchanged
export of a built-in graph, or the file PyTorch wrote for a zoo model.

``--guard`` reports what ``optimize --verify`` writes instead of greedy's raw result: a
first comparison chooses (:func:`~systems_envs.graph.measure.keep_if_faster`: the optimised
model if faster beyond noise, else the original: the unchanged export of a built-in graph,
PyTorch's file for a zoo model), and a second, independent comparison of the chosen model
against the original gives the row's figures, so that the noise which picked a winner does
not also inflate its reported speed-up. Rows gain ``written`` (optimized / original) and
the choosing comparison's ``select_speedup`` and ``select_verdict``.

Each row: model, cost model, ops, rewrites (the most frequent rule), claimed cost
reduction, measured ms before/after, speed-up with its spread, the noise control, the
runs per round of which the fastest counts (``inner``: more for sub-millisecond models), the
greedy search's seconds (``search_s``), the verdict (faster / same / slower beyond noise)
and a note saying why nothing was gained where nothing was. Prints the machine, a markdown
table and a summary per cost model (models measurably slower; models at least 5% faster); the last stdout line is JSON
``{"machine", "rows", "errors", "summary"}`` (a model whose optimised export onnxruntime
rejects is an error row, not a crash).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from collections import Counter
from pathlib import Path

from experiments._cli import run_main


def note_for(row: dict) -> str:
    """Why a row gained what it gained, in a few words."""
    if row.get("written") == "original":
        return (f"original written: not faster when chosen (x{row['select_speedup']:.3f}, "
                f"{row['select_verdict']})")
    if row["rewrites"] == 0:
        if row["verdict"] == "faster":
            return "no rewrite; the re-export alone runs faster than the source file"
        return "no rewrite predicted to gain more than --min-gain (default: the resolution)"
    if row["verdict"] == "slower":
        return "slower: the cost model mispredicts these rewrites"
    if row["verdict"] == "same":
        if row["top_rule"].startswith("fuse_"):
            return "mostly fusions onnxruntime applies by itself"
        return "the gain onnxruntime sees is within noise"
    return ""


def main(argv: list[str] | None = None) -> dict:
    from systems_envs.graph.cost import COST_MODEL_NAMES

    from experiments._bench_models import load_models, parse_names, zoo_names

    p = argparse.ArgumentParser(prog="python -m experiments.bench_runtime", description=__doc__.split("\n\n")[0])
    p.add_argument("--graphs", default="all", help="built-in graphs: all, none or a comma list")
    p.add_argument("--zoo", default="all", help="torch_zoo models: all, none or a comma list")
    p.add_argument("--costs", default="ort-cpu,v100", help="cost models the greedy search minimises")
    p.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds per model")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument("--max-steps", type=int, default=10_000, help="greedy step limit")
    p.add_argument("--min-gain", type=float, default=None,
                   help="greedy: smallest predicted gain taken, a fraction of the cost "
                        "(default: the cost model's resolution)")
    p.add_argument("--guard", action="store_true",
                   help="report what optimize --verify writes: the optimised model only if a first "
                        "comparison finds it faster, timed again against the original")
    p.add_argument("--workdir", default=None, help="folder for the exported zoo models (default: a temp folder)")
    args = p.parse_args(argv)
    from systems_envs.graph.measure import compare_models, cpu_model, export_for_timing, keep_if_faster
    from systems_envs.graph.models import BUILTIN_GRAPHS
    from systems_envs.rewrite.ruleset import default_rules
    from systems_envs.rewrite.search import greedy

    graphs = parse_names(args.graphs, list(BUILTIN_GRAPHS), "--graphs")
    zoo = parse_names(args.zoo, zoo_names(), "--zoo") if args.zoo not in ("none", "") else []
    costs = parse_names(args.costs, COST_MODEL_NAMES, "--costs")
    if "e2e" in costs:
        raise ValueError("--costs: e2e is too slow for a greedy search over every model; use ort-cpu")
    if args.rounds < 3 or args.threads < 1 or args.max_steps < 1:
        raise ValueError("--rounds must be >= 3, --threads and --max-steps >= 1")
    if args.min_gain is not None and not args.min_gain >= 0.0:
        raise ValueError(f"--min-gain must be >= 0, got {args.min_gain}")
    from systems_envs.graph.cost import make_cost_model

    machine = f"{cpu_model()}, {os.cpu_count()} logical cores, onnxruntime threads {args.threads}"
    print(f"machine: {machine}", flush=True)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="sysworld_bench_runtime_"))
    models = load_models(graphs, zoo, workdir)
    rules = default_rules()
    cost_models = {c: make_cost_model(c) for c in costs}
    rows, errors = [], []
    for m in models:
        for c, cm in cost_models.items():
            try:
                res = greedy(m.graph, rules, cm, max_steps=args.max_steps,
                             min_gain=args.min_gain)
                optimised = export_for_timing(res.graph)
                timing = {"threads": args.threads, "rounds": args.rounds}
                if args.guard:
                    written, chose = keep_if_faster(m.original, optimised, **timing)
                    cmp = compare_models(m.original, optimised if written == "optimized" else m.original, **timing)
                else:
                    cmp = compare_models(m.original, optimised, **timing)
            except Exception as e:  # noqa: BLE001 - reported per model (type and message), the benchmark goes on
                first = str(e).splitlines()[0] if str(e) else ""
                row = {"model": m.name, "cost": c, "error": f"{type(e).__name__}: {first}"}
                print(json.dumps(row), flush=True)
                errors.append(row)
                continue
            top = Counter(name for name, _ in res.rewrites).most_common(1)
            row = {"model": m.name, "cost": c, "ops": m.graph.num_ops(), "rewrites": len(res.rewrites),
                   "top_rule": f"{top[0][0]} x{top[0][1]}" if top else "",
                   "claimed": round(res.reduction, 4), "ms_before": round(cmp.before_ms, 3),
                   "ms_after": round(cmp.after_ms, 3), "speedup": round(cmp.speedup, 3),
                   "spread": round(cmp.spread, 3), "noise": round(cmp.noise, 3), "inner": cmp.inner,
                   "verdict": cmp.verdict, "search_s": round(res.seconds, 1)}
            if args.guard:
                row.update(written=written, select_speedup=round(chose.speedup, 3), select_verdict=chose.verdict)
            row["note"] = note_for(row)
            print(json.dumps(row), flush=True)
            rows.append(row)
    summary = {}
    for c in costs:
        rs = [r for r in rows if r["cost"] == c]
        summary[c] = {"models": len(rs), "slower": sum(r["verdict"] == "slower" for r in rs),
                      "faster_5pct": sum(r["verdict"] == "faster" and r["speedup"] >= 1.05 for r in rs)}
        if args.guard:
            summary[c]["written_optimized"] = sum(r["written"] == "optimized" for r in rs)
    cols = ["model", "cost", "ops", "rewrites", "top_rule", "claimed", "ms_before", "ms_after", "speedup", "spread",
            "noise", "verdict", "note"]
    if args.guard:
        cols[-1:-1] = ["select_speedup", "written"]
    print()
    print(f"Machine: {machine}; Python {platform.python_version()}")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{100 * r[k]:.1f}%" if k == "claimed" else str(r[k]) for k in cols) + " |")
    for c, s in summary.items():
        print(f"{c}: {s['models']} models, {s['slower']} measurably slower, "
              f"{s['faster_5pct']} at least 5% faster beyond noise"
              + (f"; the optimised model written for {s['written_optimized']}" if args.guard else ""))
    for e in errors:
        print(f"{e['model']} ({e['cost']}): error: {e['error']}")
    out = {"machine": machine, "rows": rows, "errors": errors, "summary": summary}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    run_main(main)
