"""Macro-placement benchmark on ariane133: parser, cost evaluation, force-directed and
baseline figures in one run.

    python -m experiments.bench_macro [--anneal-seconds S] [--workers W] [--repeats R]
                                      [--moves M] [--seed N] [--skip-protobuf]

Measures: netlist parse time (hand parser, and protobuf ``text_format`` unless
``--skip-protobuf``); full proxy-cost evaluation (all caches rebuilt from the placement;
median of ``--repeats``); incremental move (one random hard macro to a random position,
cost read back; median over ``--moves``); force-directed soft-macro placement (default
schedule, from the canvas centre); then each baseline's proxy cost (weights 1, 0.5,
0.5), split into wirelength / density / congestion, against its wall time: the shipped
``initial.plc`` as given, its legalised version, random legal, greedy, and annealing
for ``--anneal-seconds`` from the legalised ``initial.plc`` (on ``--workers`` processes:
1 = :func:`~systems_envs.chip.baselines.anneal`, more = hard- and soft-macro workers of
:func:`~systems_envs.chip.parallel_anneal.anneal_parallel`). Prints a markdown table; the
1-minute load average is printed since timings depend on what else runs. The last stdout
line is a JSON object with all figures.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from experiments._cli import run_main
from systems_envs.chip import baselines
from systems_envs.chip.cost import PlacementCost
from systems_envs.chip.env import DATA_DIR
from systems_envs.chip.force_directed import ForceDirected
from systems_envs.chip.legality import is_legal, legalize
from systems_envs.chip.netlist import read_netlist, read_netlist_protobuf
from systems_envs.chip.parallel_anneal import anneal_parallel
from systems_envs.chip.plc import read_plc


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_macro", description=__doc__.splitlines()[0])
    p.add_argument("--anneal-seconds", type=float, default=120.0)
    p.add_argument("--workers", type=int, default=1, help="annealing processes (1: the serial annealer)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--moves", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-protobuf", action="store_true", help="do not time the protobuf text_format reader")
    args = p.parse_args(argv)
    for name in ("workers", "repeats", "moves"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.anneal_seconds <= 0:
        raise ValueError(f"--anneal-seconds must be > 0, got {args.anneal_seconds}")
    load0 = os.getloadavg()[0]
    d = os.path.join(DATA_DIR, "ariane133")
    path = os.path.join(d, "netlist.pb.txt.gz")
    nl, t_hand = _timed(lambda: read_netlist(path))
    t_pb = None if args.skip_protobuf else _timed(lambda: read_netlist_protobuf(path))[1]
    header, pl = read_plc(os.path.join(d, "initial.plc"), nl)
    header = header.settings()

    pc = PlacementCost(nl, header, pl)
    full = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        pc.set_placement(pl)
        pc.costs()
        full.append(time.perf_counter() - t)
    rng = np.random.default_rng(args.seed)
    hard = nl.hard
    moves = []
    for _ in range(args.moves):
        m = int(rng.choice(hard))
        x, y = rng.uniform(0, header.width), rng.uniform(0, header.height)
        t = time.perf_counter()
        pc.move(m, x, y)
        pc.costs()
        moves.append(time.perf_counter() - t)
    fd = ForceDirected(nl, header)
    _, t_fd = _timed(lambda: fd.place(pl))

    rows = []

    def add(name, res, seconds=None):
        c = res.costs
        rows.append({"method": name, "proxy_cost": c.proxy_cost, "wirelength_cost": c.wirelength_cost,
                     "density_cost": c.density_cost, "congestion_cost": c.congestion_cost,
                     "legal": bool(is_legal(nl, header, res.placement)),
                     "seconds": round(res.seconds if seconds is None else seconds, 2)})

    add("initial.plc (as given)", baselines.initial(nl, header, pl))
    legal, t_leg = _timed(lambda: legalize(nl, header, pl))
    add("initial.plc legalised", baselines.initial(nl, header, legal), t_leg)
    add("random legal + FD", baselines.random_legal(nl, header, pl, seed=args.seed, fd=fd))
    add("greedy + FD", baselines.greedy(nl, header, pl, fd=fd))
    if args.workers == 1:
        ann = baselines.anneal(nl, header, legal, time_limit=args.anneal_seconds, seed=args.seed, fd=fd)
    else:
        ann = anneal_parallel(nl, header, legal, time_limit=args.anneal_seconds, seed=args.seed,
                              workers=args.workers, fd=fd)
    workers = "" if args.workers == 1 else f", {args.workers} workers"
    add(f"anneal {args.anneal_seconds:g} s from legalised{workers}", ann, ann.seconds + t_leg)
    load1 = os.getloadavg()[0]

    print(f"ariane133: {len(nl.hard)} hard, {len(nl.soft)} soft macros, {len(nl.ports)} ports, "
          f"{nl.num_nets} nets; load average {load0:.1f} -> {load1:.1f} (2-core machine: timings are noisy)")
    print(f"parse: hand {t_hand:.2f} s" + ("" if t_pb is None else f", protobuf text_format {t_pb:.2f} s"))
    print(f"full evaluation {np.median(full) * 1e3:.1f} ms (median of {args.repeats}); incremental move "
          f"{np.median(moves) * 1e3:.2f} ms (median of {args.moves}); force-directed {t_fd:.2f} s")
    print()
    print("| method | proxy | wirelength | density | congestion | legal | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['proxy_cost']:.4f} | {r['wirelength_cost']:.4f} | {r['density_cost']:.4f} | "
              f"{r['congestion_cost']:.4f} | {'yes' if r['legal'] else 'no'} | {r['seconds']} |")
    out = {"parse_hand_s": round(t_hand, 3), "parse_protobuf_s": None if t_pb is None else round(t_pb, 3),
           "full_eval_ms": round(float(np.median(full)) * 1e3, 3),
           "full_eval_ms_minmax": [round(min(full) * 1e3, 3), round(max(full) * 1e3, 3)],
           "incremental_move_ms": round(float(np.median(moves)) * 1e3, 4),
           "incremental_move_ms_p90": round(float(np.percentile(moves, 90)) * 1e3, 4),
           "force_directed_s": round(t_fd, 3), "baselines": rows,
           "anneal_trace": [[round(t, 1), round(v, 5)] for t, v in ann.trace[:: max(1, len(ann.trace) // 40)]],
           "anneal_moves": ann.moves, "load_average": [round(load0, 2), round(load1, 2)], "seed": args.seed,
           "workers": args.workers}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    run_main(main)
