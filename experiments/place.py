"""Place a graph on a device set with one baseline and simulate it.

    python -m experiments.place GRAPH --devices PRESET --method single|round_robin|expert|metis|etf|anneal [--seed S]

GRAPH is a built-in name, a placement graph (``transformer_l32_d4096``), a TASO
``.model`` or an ``.onnx`` file. The last stdout line is a JSON object with ``graph``,
``devices``, ``method``, ``step_time_ms`` (null when out of memory),
``single_device_ms`` (best single device, ignoring memory), ``single_device_fits``,
``speedup``, ``peak_memory_mb`` (per device), ``valid``, ``transferred_mb``, ``busy_ms``
and ``ops``.
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np

from experiments._cli import run_main
from systems_envs.placement.baselines import BASELINES, run_baseline, single_device
from systems_envs.placement.devices import PRESETS
from systems_envs.placement.graphs import load_placement_graph
from systems_envs.placement.simulator import compile_graph, step_time


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.place", description=__doc__.splitlines()[0])
    p.add_argument("graph", help="built-in name, placement graph name, .model or .onnx file")
    p.add_argument("--devices", default="gpu4", choices=list(PRESETS), help="device-set preset")
    p.add_argument("--method", default="etf", choices=list(BASELINES), help="placement baseline")
    p.add_argument("--seed", type=int, default=0, help="seed (metis, anneal)")
    p.add_argument("--iters", type=int, default=2000, help="annealing iterations")
    args = p.parse_args(argv)
    if args.iters < 0:
        raise ValueError(f"--iters must be >= 0, got {args.iters}")

    graph = load_placement_graph(args.graph)
    cg = compile_graph(graph, args.devices)
    kw = {"iters": args.iters} if args.method == "anneal" else {}
    placement, res = run_baseline(cg, args.method, args.seed, **kw)
    single_ms = float(cg.serial_ms().min())
    single_fits = math.isfinite(step_time(cg, single_device(cg)))
    out = {
        "graph": graph.name, "devices": args.devices, "method": args.method, "seed": args.seed,
        "ops": cg.n,
        "step_time_ms": res.step_time_ms if res.valid else None,
        "single_device_ms": single_ms, "single_device_fits": single_fits,
        "speedup": single_ms / res.step_time_ms if res.valid else 0.0,
        "peak_memory_mb": [round(b / 2**20, 3) for b in res.peak_memory_bytes],
        "valid": res.valid, "oom_devices": res.oom_devices,
        "transferred_mb": res.transferred_bytes / 2**20,
        "busy_ms": [round(float(b), 6) for b in res.busy_ms],
        "ops_per_device": np.bincount(placement, minlength=cg.num_devices).tolist(),
    }
    status = f"{res.step_time_ms:.4f} ms" if res.valid else f"OUT OF MEMORY on devices {res.oom_devices}"
    print(f"{graph.name} on {args.devices} by {args.method}: {status} (single device {single_ms:.4f} ms"
          f"{'' if single_fits else ', does not fit'})")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    run_main(main)
