"""Sample efficiency of model-based vs model-free training (the README's benchmark).

    python -m experiments.bench_train [--preset default] [--seeds 2] [--workers 2]
        [--logdir runs/bench_train] [--analyse-only]

Runs ``experiments.ablate --grid loop.mode=model_based,model_free`` (skipped with
``--analyse-only``), then, per run, reads the TensorBoard curve of ``real/cost_reduction``
(mean over the training graphs, against real env steps) and reports: the first real-step
count at which the controller reaches the backtracking search's cost reduction on the same
graphs (from ``summary.json``; "not reached" if never), the best and final reduction, the
held-out reduction and the wall seconds the final controller took per held-out graph.
Writes ``DIR/bench.md`` and ``DIR/bench.json``.
"""
from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np


def steps_to_reach(curve: list[tuple[int, float]], target: float, tol: float = 1e-4) -> int | None:
    """First step whose value is >= target - tol (None if never)."""
    for step, v in curve:
        if v >= target - tol:
            return step
    return None


def analyse(logdir: str) -> dict:
    from worldmodels.tb_reader import read_scalars

    runs = []
    for path in sorted(glob.glob(os.path.join(logdir, "*", "seed*", "summary.json"))):
        d = os.path.dirname(path)
        with open(path) as f:
            s = json.load(f)
        train = [g for g, m in s["per_graph"].items() if m["split"] == "train"]
        held = [g for g, m in s["per_graph"].items() if m["split"] == "heldout"]
        target = float(np.mean([s["per_graph"][g]["backtracking_cost_reduction"] for g in train]))
        greedy = float(np.mean([s["per_graph"][g]["greedy_cost_reduction"] for g in train]))
        curve = read_scalars(d).get("real/cost_reduction", [])
        runs.append({"run": os.path.relpath(d, logdir), "mode": s["mode"], "target_backtracking": target,
                     "greedy": greedy, "steps_to_backtracking": steps_to_reach(curve, target),
                     "steps_to_greedy": steps_to_reach(curve, greedy),
                     "best": max((v for _, v in curve), default=float("nan")), "final": s["real_cost_reduction"],
                     "heldout_final": s["heldout_cost_reduction"], "real_env_steps": s["real_env_steps"],
                     "wall_seconds": s["wall_seconds"],
                     "heldout_seconds": {g: s["per_graph"][g]["seconds"] for g in held}})
    lines = ["| run | mode | steps to backtracking | steps to greedy | best | final | held-out | backtracking | greedy | wall s | held-out optimise s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        hs = ", ".join(f"{g} {t:.2f}" for g, t in r["heldout_seconds"].items())
        fmt = lambda x: "not reached" if x is None else str(x)  # noqa: E731
        lines.append(f"| {r['run']} | {r['mode']} | {fmt(r['steps_to_backtracking'])} | {fmt(r['steps_to_greedy'])} | "
                     f"{r['best']:.4f} | {r['final']:.4f} | {r['heldout_final'] if r['heldout_final'] is None else round(r['heldout_final'], 4)} | "
                     f"{r['target_backtracking']:.4f} | {r['greedy']:.4f} | {r['wall_seconds']:.0f} | {hs} |")
    ratio = {}
    for key in ("steps_to_backtracking", "steps_to_greedy"):
        mb = [r[key] for r in runs if r["mode"] == "model_based"]
        mf = [r[key] for r in runs if r["mode"] == "model_free"]
        if mb and mf and all(x is not None for x in mb + mf):
            ratio[key] = float(np.mean(mb) / np.mean(mf))
        else:
            ratio[key] = None
    lines.append("")
    lines.append(f"model-based / model-free real steps to reach backtracking: {ratio['steps_to_backtracking']}; "
                 f"to reach greedy: {ratio['steps_to_greedy']} (None = not reached by every run)")
    out = {"runs": runs, "ratio": ratio}
    with open(os.path.join(logdir, "bench.json"), "w") as f:
        json.dump(out, f, indent=2)
    with open(os.path.join(logdir, "bench.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--logdir", default="runs/bench_train")
    p.add_argument("--analyse-only", action="store_true")
    args, extra = p.parse_known_args(argv)
    if not args.analyse_only:
        from experiments import ablate
        ablate.main(["--base", args.preset, "--grid", "loop.mode=model_based,model_free", "--seeds", str(args.seeds),
                     "--workers", str(args.workers), "--logdir", args.logdir, *extra])
    return analyse(args.logdir)


if __name__ == "__main__":
    from experiments._cli import run_main

    run_main(main)
