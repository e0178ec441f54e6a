"""Compare EGRL with PPO and CMA-ES on MemoryPlacement-v0 against the non-learned mappings.

    python -m experiments.compare_memory --graphs bert,resnet50 --seeds 3 \\
        --controllers egrl,egrl_model,ppo,cmaes --budget 300 [--out DIR]

Every learner gets the same real budget: ``--budget`` finished mappings measured in the real
environment (EGRL: one per new mapping; ``egrl_model``: EGRL with the outcome model as
fitness, its training episodes and real validations counted; PPO / CMA-ES: one per
episode). Reported per run: the best speedup (over the all-in-DRAM mapping) measured within
the budget. Non-learned mappings (`systems_envs.placement.memory_baselines`): the compiler
default, the gain-density greedy and simulated annealing with ``--budget`` evaluations.

Table: per graph and method the mean over seeds with a 95% percentile-bootstrap interval,
and the gain over the compiler default; an aggregate row gives each learner's interquartile
mean (IQM) over all (graph, seed) runs of speedup / compiler speedup, with a stratified
bootstrap interval (rliable's recipe, by hand). The last line is a JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from experiments._cli import run_main
from experiments.stats import iqm, stratified_bootstrap_ci

LEARNERS = ("egrl", "egrl_model", "ppo", "cmaes")
BASELINES = ("compiler", "gain_density", "anneal")


def _names(text: str, what: str, known=None) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise ValueError(f"--{what}: empty list")
    bad = [n for n in names if known is not None and n not in known]
    if bad:
        raise ValueError(f"--{what}: unknown {bad[0]!r} (known: {', '.join(known)})")
    return names


def run_learner(name: str, graph: str, seed: int, budget: int, args, agents: dict) -> dict:
    """One learner run: {"best": best real speedup, "episodes", "seconds"}. ``agents``: a
    cache of agents per (learner, graph), reused across seeds so each compiles once."""
    import gymnasium as gym
    import jax

    import systems_envs  # noqa: F401
    from controllers.egrl import EGRL, EGRLRunConfig, train_egrl
    from controllers.mapping import MappingProblem
    from controllers.memory_step import MemoryCMAES, MemoryPPO, train_cmaes, train_ppo

    key = jax.random.key(seed)
    t0 = time.time()
    env = gym.make("MemoryPlacement-v0", graph=graph).unwrapped
    env_fn = lambda: gym.make("MemoryPlacement-v0", graph=graph)  # noqa: E731

    def agent(kind: str, make):
        if (kind, graph) not in agents:
            agents[(kind, graph)] = make()
        return agents[(kind, graph)]

    if name in ("egrl", "egrl_model"):
        egrl = agent("egrl", lambda: EGRL(MappingProblem.from_env(env), pop_size=args.egrl_pop))
        run = EGRLRunConfig(fitness="model" if name == "egrl_model" else "real", budget=budget,
                            model_episodes=max(budget // 3, 8), max_generations=args.max_generations)
        res = train_egrl(env, egrl, key, run, seed=seed)
    elif name == "ppo":
        res = train_ppo(env_fn, key, budget, num_envs=8, seed=seed,
                        ppo=agent("ppo", lambda: MemoryPPO(env.action_space.n, env._next)))
    else:
        cm = agent("cmaes", MemoryCMAES)
        res = train_cmaes(env_fn, key, budget, cm=cm)
    return {"best": float(res["best_reward"]), "episodes": int(res["episodes"]), "seconds": time.time() - t0}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.compare_memory", description=__doc__.splitlines()[0])
    p.add_argument("--graphs", default="bert,resnet50", help="comma-separated graph names")
    p.add_argument("--seeds", type=int, default=3, help="seeds per learner and graph")
    p.add_argument("--controllers", default=",".join(LEARNERS), help=f"comma-separated, of {', '.join(LEARNERS)}")
    p.add_argument("--budget", type=int, default=300, help="real episodes (finished mappings) per run")
    p.add_argument("--egrl-pop", type=int, default=16, help="EGRL population size")
    p.add_argument("--max-generations", type=int, default=400, help="EGRL generation cap (0 = none)")
    p.add_argument("--out", default="", help="directory for summary.json (optional)")
    args = p.parse_args(argv)
    from systems_envs.placement.graphs import load_placement_graph

    graphs = _names(args.graphs, "graphs")
    learners = _names(args.controllers, "controllers", LEARNERS)
    if args.seeds < 1 or args.budget < 2:
        raise ValueError(f"--seeds must be >= 1 and --budget >= 2, got {args.seeds} and {args.budget}")
    for g in graphs:
        load_placement_graph(g)                                   # a bad name fails here, before any run

    import gymnasium as gym

    import systems_envs  # noqa: F401
    from systems_envs.placement.memory_baselines import run_memory_baseline

    results: dict = {}
    for g in graphs:
        env = gym.make("MemoryPlacement-v0", graph=g).unwrapped
        ref = env.baseline.throughput
        base = {}
        for b in BASELINES:
            kw = {"iters": args.budget} if b == "anneal" else {}
            base[b] = [run_memory_baseline(env.lg, env.acc, b, s, **kw)[1].throughput / ref
                       for s in (range(args.seeds) if b == "anneal" else [0])]
        agents: dict = {}
        runs: dict = {name: [] for name in learners}
        for name in learners:
            for s in range(args.seeds):
                r = run_learner(name, g, s, args.budget, args, agents)
                runs[name].append(r)
                print(f"{g} {name} seed {s}: best speedup {r['best']:.4f} in {r['episodes']} real episodes "
                      f"({r['seconds']:.0f} s)", flush=True)
        results[g] = {"layers": len(env.lg), "baselines": base, "runs": runs}

    summary = _summarise(results, learners, args)
    _print(summary, learners)
    if args.out:
        from worldmodels.logging import write_json_atomic
        os.makedirs(args.out, exist_ok=True)
        write_json_atomic(os.path.join(args.out, "summary.json"), {"results": results, "summary": summary})
    print(json.dumps(summary))
    return summary


def _summarise(results: dict, learners: list[str], args) -> dict:
    out = {"budget": args.budget, "seeds": args.seeds, "graphs": {}, "aggregate": {}}
    ratios: dict[str, list[np.ndarray]] = {n: [] for n in learners}
    for g, r in results.items():
        comp = r["baselines"]["compiler"][0]
        best_nl = max(float(np.mean(v)) for v in r["baselines"].values())
        row = {"layers": r["layers"], "compiler": comp, "best_non_learned": best_nl,
               **{b: float(np.mean(v)) for b, v in r["baselines"].items()}}
        for n in learners:
            x = np.array([run["best"] for run in r["runs"][n]])
            lo, hi = stratified_bootstrap_ci([x], np.mean, seed=1)
            row[n] = {"mean": float(x.mean()), "ci95": [lo, hi], "vs_compiler": float(x.mean() / comp - 1),
                      "vs_best_non_learned": float(x.mean() / best_nl - 1), "runs": x.tolist()}
            ratios[n].append(x / comp)
        out["graphs"][g] = row
    for n in learners:
        lo, hi = stratified_bootstrap_ci(ratios[n], iqm, seed=2)
        out["aggregate"][n] = {"iqm_vs_compiler": iqm(np.concatenate(ratios[n])), "ci95": [lo, hi]}
    return out


def _print(s: dict, learners: list[str]) -> None:
    print(f"\nMemoryPlacement-v0: best speedup over all-in-DRAM within {s['budget']} real episodes, "
          f"mean of {s['seeds']} seeds [95% bootstrap CI], (gain over the compiler default)")
    head = ["graph", "layers", "compiler", "gain_density", "anneal", *learners]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for g, r in s["graphs"].items():
        cells = [g, str(r["layers"]), f"{r['compiler']:.3f}", f"{r['gain_density']:.3f}", f"{r['anneal']:.3f}"]
        for n in learners:
            c = r[n]
            cells.append(f"{c['mean']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}] ({c['vs_compiler']:+.1%})")
        print("| " + " | ".join(cells) + " |")
    agg = ["IQM of speedup / compiler's", "", "1", "", ""] + [
        f"{s['aggregate'][n]['iqm_vs_compiler']:.3f} [{s['aggregate'][n]['ci95'][0]:.3f}, "
        f"{s['aggregate'][n]['ci95'][1]:.3f}]" for n in learners]
    print("| " + " | ".join(agg) + " |")


if __name__ == "__main__":
    run_main(main)
