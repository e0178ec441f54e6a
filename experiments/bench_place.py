"""Placement benchmark: baselines x graphs x device presets, and simulator throughput.

    python -m experiments.bench_place [--graphs a,b] [--devices p,q] [--methods m,n]
                                      [--anneal-iters N] [--seed S] [--evals N]
                                      [--throughput-graphs a,b] [--repeats R] [--batch B]
                                      [--no-table]

Prints a markdown table of step times (ms; OOM = out of memory) per graph, preset and
method with the best method's speedup over the best single device that fits (computed
ignoring memory when none fits), then a table of simulator throughput (full-graph
placement evaluations per second, schedule + memory, one process, ``gpu4``) on random
and on near-ETF placements, one placement at a time (``simulate``) and batched
(``evaluate_many``, ``--batch`` rows per call). Each figure is the median of
``--repeats`` runs (min and max in the JSON); the 1-minute load average is printed
before and after, since the figures depend on what else runs on the machine. The last
stdout line is a JSON object with all figures.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

from experiments._cli import run_main
from systems_envs.placement.baselines import BASELINES, etf, run_baseline
from systems_envs.placement.devices import PRESETS
from systems_envs.placement.graphs import load_placement_graph
from systems_envs.placement.simulator import compile_graph, evaluate_many, simulate

GRAPHS = ["inception_v3", "nasnet_a", "nasrnn", "bert", "transformer_l32_d4096", "transformer_l17_d256"]


def throughput(cg, placements: np.ndarray) -> float:
    """Full simulations (schedule + memory) per second over ``placements`` [N, n], one at a time."""
    t = time.perf_counter()
    for p in placements:
        simulate(cg, p, check=False)
    return len(placements) / (time.perf_counter() - t)


def batch_throughput(cg, placements: np.ndarray, batch: int) -> float:
    """Full simulations per second over ``placements`` [N, n] with evaluate_many, ``batch`` rows a call."""
    t = time.perf_counter()
    for lo in range(0, len(placements), batch):
        evaluate_many(cg, placements[lo:lo + batch], check=False, chunk=batch)
    return len(placements) / (time.perf_counter() - t)


def _stats(xs: list[float]) -> dict:
    return {"median": float(np.median(xs)), "min": float(min(xs)), "max": float(max(xs)), "runs": xs}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_place", description=__doc__.splitlines()[0])
    p.add_argument("--graphs", default=",".join(GRAPHS))
    p.add_argument("--devices", default=",".join(PRESETS))
    p.add_argument("--methods", default=",".join(BASELINES))
    p.add_argument("--anneal-iters", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evals", type=int, default=512, help="placements per throughput measurement")
    p.add_argument("--throughput-graphs", default="",
                   help="graphs of the throughput table (default: those of --graphs)")
    p.add_argument("--repeats", type=int, default=3, help="throughput measurements per figure (median reported)")
    p.add_argument("--batch", type=int, default=256, help="placements per evaluate_many call")
    p.add_argument("--no-table", action="store_true", help="skip the baselines table (throughput only)")
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
    for flag, v in (("--evals", args.evals), ("--repeats", args.repeats), ("--batch", args.batch)):
        if v < 1:
            raise ValueError(f"{flag} must be >= 1, got {v}")
    speed_graphs = [g for g in args.throughput_graphs.split(",") if g] or graphs

    rows, speed_rows = [], []
    if not args.no_table:
        print("| graph | ops | devices | " + " | ".join(methods) + " | best | speedup |")
        print("|---|---:|---|" + "---:|" * len(methods) + "---|---:|")
    for gname in [] if args.no_table else graphs:
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

    load_before = os.getloadavg()
    print()
    print(f"simulator throughput (placements/s, median of {args.repeats}; "
          f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"{os.cpu_count()} cpus)")
    print("| graph | ops | devices | random, single | random, batched | near-ETF, single | near-ETF, batched |")
    print("|---|---:|---|---:|---:|---:|---:|")
    rng = np.random.default_rng(args.seed)
    for gname in speed_graphs:
        cg = compile_graph(load_placement_graph(gname), "gpu4")
        rand = rng.integers(0, cg.num_devices, (args.evals, cg.n))
        near = np.repeat(etf(cg)[None], args.evals, axis=0)
        flip = rng.random(near.shape) < 0.02
        near[flip] = rng.integers(0, cg.num_devices, int(flip.sum()))
        runs = {k: [] for k in ("random", "random_batch", "near_etf", "near_etf_batch")}
        for _ in range(args.repeats):
            runs["random"].append(throughput(cg, rand))
            runs["random_batch"].append(batch_throughput(cg, rand, args.batch))
            runs["near_etf"].append(throughput(cg, near))
            runs["near_etf_batch"].append(batch_throughput(cg, near, args.batch))
        r = {"graph": gname, "ops": cg.n, "devices": "gpu4", "evals": args.evals, "batch": args.batch}
        for k, xs in runs.items():
            r[f"{k}_per_s"] = float(np.median(xs))
            r[f"{k}_stats"] = _stats(xs)
        speed_rows.append(r)
        print(f"| {gname} | {cg.n} | gpu4 | {r['random_per_s']:.0f} | {r['random_batch_per_s']:.0f} | "
              f"{r['near_etf_per_s']:.0f} | {r['near_etf_batch_per_s']:.0f} |", flush=True)
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    out = {"table": rows, "throughput": speed_rows, "loadavg_before": list(load_before),
           "loadavg_after": list(load_after), "cpus": os.cpu_count()}
    print(json.dumps(out, default=lambda x: None if isinstance(x, float) and not math.isfinite(x) else x))
    return out


if __name__ == "__main__":
    run_main(main)
