"""Placement benchmark: baselines x graphs x device presets, and simulator throughput.

    python -m experiments.bench_place [--graphs a,b] [--devices p,q] [--methods m,n]
                                      [--anneal-iters N] [--seed S] [--evals N]

Prints a markdown table of step times (ms; OOM = out of memory) per graph, preset and
method with the best method's speedup over the best single device that fits (computed
ignoring memory when none fits), then a table of simulator throughput (full-graph
placement evaluations per second, one process) on random and on near-ETF placements.
The last stdout line is a JSON object with all figures.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from experiments._cli import run_main
from systems_envs.placement.baselines import BASELINES, etf, run_baseline
from systems_envs.placement.devices import PRESETS
from systems_envs.placement.graphs import load_placement_graph
from systems_envs.placement.simulator import compile_graph, simulate

GRAPHS = ["inception_v3", "nasnet_a", "nasrnn", "bert", "transformer_l32_d4096"]


def throughput(cg, placements: np.ndarray) -> float:
    """Full simulations (schedule + memory) per second over ``placements`` [N, n]."""
    t = time.perf_counter()
    for p in placements:
        simulate(cg, p, check=False)
    return len(placements) / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_place", description=__doc__.splitlines()[0])
    p.add_argument("--graphs", default=",".join(GRAPHS))
    p.add_argument("--devices", default=",".join(PRESETS))
    p.add_argument("--methods", default=",".join(BASELINES))
    p.add_argument("--anneal-iters", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evals", type=int, default=300, help="placements per throughput measurement")
    args = p.parse_args(argv)
    graphs = [g for g in args.graphs.split(",") if g]
    presets = [d for d in args.devices.split(",") if d]
    methods = [m for m in args.methods.split(",") if m]
    for d in presets:
        if d not in PRESETS:
            raise ValueError(f"--devices: unknown preset {d!r} (known: {', '.join(PRESETS)})")
    for m in methods:
        if m not in BASELINES:
            raise ValueError(f"--methods: unknown method {m!r} (known: {', '.join(BASELINES)})")

    rows, speed_rows = [], []
    print("| graph | ops | devices | " + " | ".join(methods) + " | best | speedup |")
    print("|---|---:|---|" + "---:|" * len(methods) + "---|---:|")
    for gname in graphs:
        graph = load_placement_graph(gname)
        for preset in presets:
            cg = compile_graph(graph, preset)
            single_ms = float(cg.serial_ms().min())
            row = {"graph": gname, "ops": cg.n, "devices": preset, "single_device_ms": single_ms, "ms": {}, "s": {}}
            for m in methods:
                t = time.perf_counter()
                kw = {"iters": args.anneal_iters} if m == "anneal" else {}
                _, res = run_baseline(cg, m, args.seed, **kw)
                row["ms"][m] = res.step_time_ms if res.valid else None
                row["s"][m] = time.perf_counter() - t
            valid = {m: v for m, v in row["ms"].items() if v is not None}
            best = min(valid, key=valid.get) if valid else None
            row["best"] = best
            row["speedup"] = single_ms / valid[best] if best else 0.0
            rows.append(row)
            cells = [f"{v:.3f}" if v is not None else "OOM" for v in row["ms"].values()]
            print(f"| {gname} | {cg.n} | {preset} | " + " | ".join(cells) +
                  f" | {best or '-'} | {row['speedup']:.2f}x |", flush=True)

    print()
    print("| graph | ops | devices | random placements / s | near-ETF placements / s |")
    print("|---|---:|---|---:|---:|")
    rng = np.random.default_rng(args.seed)
    for gname in graphs:
        cg = compile_graph(load_placement_graph(gname), "gpu4")
        rand = rng.integers(0, cg.num_devices, (args.evals, cg.n))
        near = np.repeat(etf(cg)[None], args.evals, axis=0)
        flip = rng.random(near.shape) < 0.02
        near[flip] = rng.integers(0, cg.num_devices, int(flip.sum()))
        r = {"graph": gname, "ops": cg.n, "devices": "gpu4", "random_per_s": throughput(cg, rand),
             "near_etf_per_s": throughput(cg, near)}
        speed_rows.append(r)
        print(f"| {gname} | {cg.n} | gpu4 | {r['random_per_s']:.0f} | {r['near_etf_per_s']:.0f} |", flush=True)
    out = {"table": rows, "throughput": speed_rows}
    print(json.dumps(out, default=lambda x: None if isinstance(x, float) and not math.isfinite(x) else x))
    return out


if __name__ == "__main__":
    run_main(main)
