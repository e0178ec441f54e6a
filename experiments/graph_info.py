"""Print a graph's operator table and cost.

    python -m experiments.graph_info GRAPH [--device NAME] [--cost analytic|measured] [--export OUT.onnx]

GRAPH is a built-in name (e.g. ``bert``, ``resnet50``, ``squeezenet``), a TASO ``.model``
file or an ``.onnx`` file. The last stdout line is a JSON object with at least
``graph``, ``ops``, ``op_counts`` and ``cost_ms``.
"""
from __future__ import annotations

import argparse
import json

from experiments._cli import run_main
from systems_envs.graph.cost import DEVICES, CostModel
from systems_envs.graph.load import load_graph


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.graph_info", description=__doc__.splitlines()[0])
    p.add_argument("graph", help="built-in name, .model file or .onnx file")
    p.add_argument("--device", default="v100", choices=sorted(DEVICES), help="device spec of the analytic cost model")
    p.add_argument("--cost", default="analytic", choices=["analytic", "measured"], help="cost model mode")
    p.add_argument("--export", metavar="OUT.onnx", help="also write the graph as ONNX")
    args = p.parse_args(argv)

    graph = load_graph(args.graph)
    graph.validate()
    model = CostModel(args.device, mode=args.cost)
    rows = model.op_table(graph)
    total = sum(r["cost_ms"] for r in rows)
    print(graph.summary())
    print(f"{'op':<16}{'count':>7}{'cost ms':>12}{'share':>8}{'GFLOP':>10}{'MB moved':>11}")
    for r in rows:
        share = r["cost_ms"] / total if total else 0.0
        print(f"{r['op']:<16}{r['count']:>7}{r['cost_ms']:>12.4f}{share:>8.1%}{r['gflops']:>10.3f}{r['mbytes']:>11.2f}")
    print(f"{'total':<16}{graph.num_ops():>7}{total:>12.4f}   ({args.cost}, {model.device.name if args.cost == 'analytic' else 'this CPU'})")
    if args.export:
        from systems_envs.graph.onnx_io import export_onnx

        export_onnx(graph, args.export)
        print(f"wrote {args.export}")
    result = {
        "graph": args.graph,
        "ops": graph.num_ops(),
        "op_counts": graph.op_counts(),
        "cost_ms": round(total, 6),
        "device": args.device,
        "cost_mode": args.cost,
        "hash": graph.hash(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run_main(main)
