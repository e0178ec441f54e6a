"""Print a graph's operator table and cost.

    python -m experiments.graph_info GRAPH [--device NAME] [--cost analytic|measured] [--export OUT.onnx]

GRAPH is a built-in name (e.g. ``bert``, ``resnet50``, ``squeezenet``), a TASO ``.model``
file or an ``.onnx`` file. The last stdout line is a JSON object with at least
``graph``, ``ops``, ``op_counts``, ``cost_ms`` and ``opaque`` (ONNX op type -> number of
nodes the IR does not model and carries through unchanged; rewrites cannot see into them).
``--export`` writes the graph back at its source opset with its source interface.
"""
from __future__ import annotations

import argparse
import json

from experiments._cli import run_main
from systems_envs.graph.cost import DEVICES, CostModel
from systems_envs.graph.load import load_graph


def opaque_op_types(graph) -> dict[str, int]:
    """ONNX op type -> number of opaque nodes of that type, most frequent first."""
    counts: dict[str, int] = {}
    for n in graph.compute_nodes():
        if n.op == "opaque":
            counts[n.attrs["op_type"]] = counts.get(n.attrs["op_type"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


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
    opaque = opaque_op_types(graph)
    if opaque:
        n_opq = sum(opaque.values())
        print(f"opaque (ONNX ops the IR does not model): {n_opq} of {graph.num_ops()} nodes: "
              + ", ".join(f"{k} x{v}" for k, v in opaque.items()))
    else:
        print("opaque: none (every node is an IR op)")
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
        "opaque": opaque,
        "opaque_nodes": sum(opaque.values()),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run_main(main)
