"""Place the macros of a circuit_training netlist with one baseline, or evaluate a .plc.

    python -m experiments.macro_place NETLIST [--plc PLC] --method evaluate|random|greedy|anneal
        [--weights 1,0.5,0.5] [--time-limit S] [--anneal-start plc|greedy] [--workers W]
        [--seed N] [--out OUT.plc] [--plot OUT.png]

NETLIST is a ``.pb.txt`` / ``.pb.txt.gz`` file or a shipped name (``ariane133``, whose
``initial.plc`` is then the default ``--plc``). The ``.plc`` gives the canvas, grid and
routing settings (its header) and the starting placement. ``evaluate`` computes the cost
of that placement as it is (no soft-macro re-placement); ``random`` and ``greedy`` place
the hard macros on grid cells then the soft macros by force-directed placement;
``anneal`` runs simulated annealing for ``--time-limit`` seconds from the legalised
``.plc`` placement (or the greedy one), on ``--workers`` processes (1: the serial
annealer; more: the parallel one with hard- and soft-macro workers). The last stdout line is a JSON object with
``wirelength_cost``, ``density_cost``, ``congestion_cost``, ``proxy_cost``,
``wirelength`` (um), ``grid`` [cols, rows], ``num_hard_macros``, ``num_soft_macros``,
``legal``, ``seconds`` and the run's settings.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from experiments._cli import run_main
from systems_envs.chip import baselines
from systems_envs.chip.cost import PlacementCost
from systems_envs.chip.env import SHIPPED, load_shipped
from systems_envs.chip.legality import illegal_macros, legalize
from systems_envs.chip.netlist import read_netlist
from systems_envs.chip.parallel_anneal import anneal_parallel
from systems_envs.chip.plc import read_plc, write_plc

METHODS = ("evaluate", "random", "greedy", "anneal")


def parse_weights(text: str) -> tuple[float, float, float]:
    try:
        w = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--weights: expected three numbers like 1,0.5,0.5, got {text!r}") from None
    if len(w) != 3 or min(w) < 0:
        raise ValueError(f"--weights: expected three non-negative numbers like 1,0.5,0.5, got {text!r}")
    return w


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.macro_place", description=__doc__.splitlines()[0])
    p.add_argument("netlist", help=f"netlist .pb.txt(.gz) or shipped name ({', '.join(SHIPPED)})")
    p.add_argument("--plc", help="placement file (header settings + start placement)")
    p.add_argument("--method", default="evaluate", choices=METHODS)
    p.add_argument("--weights", default="1,0.5,0.5", help="wirelength,density,congestion weights")
    p.add_argument("--time-limit", type=float, default=60.0, help="annealing time budget, seconds")
    p.add_argument("--anneal-start", default="plc", choices=("plc", "greedy"), help="annealing start")
    p.add_argument("--workers", type=int, default=1, help="annealing processes (1: the serial annealer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the placement as a .plc file")
    p.add_argument("--plot", help="draw the placement and its congestion map to a PNG")
    args = p.parse_args(argv)
    weights = parse_weights(args.weights)
    if args.time_limit <= 0:
        raise ValueError(f"--time-limit must be > 0, got {args.time_limit}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    for flag, path, ext in (("--out", args.out, ".plc"), ("--plot", args.plot, ".png")):
        if path and os.path.dirname(path) and not os.path.isdir(os.path.dirname(path)):
            raise FileNotFoundError(f"{flag}: folder {os.path.dirname(path)!r} does not exist")

    if args.netlist in SHIPPED and not os.path.exists(args.netlist):
        nl, header, pl = load_shipped(args.netlist)
        source = args.netlist
        if args.plc:
            header, pl = read_plc(args.plc, nl)
            header = header.settings()
    else:
        if not args.plc:
            raise ValueError(f"{args.netlist}: give --plc (its header sets the canvas, grid and routing)")
        nl = read_netlist(args.netlist)
        header, pl = read_plc(args.plc, nl)
        header = header.settings()
        source = args.netlist

    t0 = time.perf_counter()
    if args.method == "evaluate":
        res = baselines.initial(nl, header, pl, weights)
    elif args.method == "random":
        res = baselines.random_legal(nl, header, pl, seed=args.seed, weights=weights)
    elif args.method == "greedy":
        res = baselines.greedy(nl, header, pl, weights=weights)
    else:
        start = (legalize(nl, header, pl) if args.anneal_start == "plc"
                 else baselines.greedy(nl, header, pl, weights=weights).placement)
        if args.workers == 1:
            res = baselines.anneal(nl, header, start, time_limit=args.time_limit, seed=args.seed, weights=weights)
        else:
            res = anneal_parallel(nl, header, start, time_limit=args.time_limit, seed=args.seed, weights=weights,
                                  workers=args.workers)
    seconds = time.perf_counter() - t0
    c = res.costs
    n_bad = len(illegal_macros(nl, header, res.placement))
    out = {**c.as_dict(), "grid": [header.columns, header.rows], "canvas": [header.width, header.height],
           "num_hard_macros": int(len(nl.hard)), "num_soft_macros": int(len(nl.soft)),
           "num_ports": int(len(nl.ports)), "legal": n_bad == 0, "illegal_macros": n_bad,
           "seconds": round(seconds, 3), "method": args.method, "netlist": nl.name, "weights": list(weights),
           "seed": args.seed}
    if args.method == "anneal":
        out["time_limit"] = args.time_limit
        out["anneal_start"] = args.anneal_start
        out["workers"] = args.workers
        out["trace"] = [[round(t, 2), round(v, 6)] for t, v in res.trace[:: max(1, len(res.trace) // 50)]]
        out["moves"] = res.moves
    if args.out:
        write_plc(args.out, nl, res.placement, header, costs=c.as_dict(), source=source,
                  comments=(f"sysworld experiments.macro_place --method {args.method} --seed {args.seed}",))
        out["out"] = args.out
    if args.plot:
        from systems_envs.chip.viewer import plot_placement

        plot_placement(args.plot, nl, header, res.placement, cost=PlacementCost(nl, header, res.placement, weights))
        out["plot"] = args.plot
    print(f"{nl.name} ({len(nl.hard)} hard, {len(nl.soft)} soft macros, {header.columns}x{header.rows} grid) "
          f"by {args.method}: proxy {c.proxy_cost:.4f} = {weights[0]:g} x wirelength {c.wirelength_cost:.4f} "
          f"+ {weights[1]:g} x density {c.density_cost:.4f} + {weights[2]:g} x congestion {c.congestion_cost:.4f}; "
          f"{'legal' if n_bad == 0 else f'{n_bad} hard macros outside the canvas or overlapping'}; {seconds:.1f} s")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    run_main(main)
