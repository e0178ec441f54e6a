"""Train and evaluate the outcome model (`worldmodels.outcome`) of a placement environment.

    python -m experiments.train_outcome_model [--preset device_placement|memory_placement|macro_placement|tiny] \\
        --env DevicePlacement-v0 --graphs inception_v3,resnet50,nasnet_a,bert --unseen resnext50 \\
        --episodes 400 --logdir runs/outcome [--outcome.steps 1500 --outcome.rank_coef 1 ...]

Collects ``--episodes`` finished real episodes per training graph with the diverse behaviour
policies of `worldmodels.outcome_data` (random, sticky, softmax with a temperature, perturbed
baselines; for ``MacroPlacement-v0`` ``--graphs`` are netlists, ``ariane133`` or ``gen:SEED``,
and ``--episodes`` placements per netlist: episodes, annealed and perturbed placements,
`worldmodels.outcome_data.collect_macro_outcomes`), holds out ``--held_out`` of each
graph's placements (of its chains, for macro placement), collects
``--unseen_episodes`` on ``--unseen`` (a graph never trained on), trains the model
(``--outcome.*``, `worldmodels.outcome.OutcomeConfig`) and prints the fidelity table
(`worldmodels.fidelity.outcome_metrics`: MAE vs predict-the-mean, Spearman and Kendall
within each graph, top-1 regret) for the training placements, the held-out placements of
the training graphs and the unseen graph; the last line is a JSON object.

Writes under ``--logdir``: ``config.json``, ``summary.json`` and the trained model
(``outcome.json`` + ``outcome.msgpack``, `worldmodels.outcome.load_outcome`), which
``experiments.train_world_model --outcome DIR`` uses for the imagined final reward.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field

from worldmodels.config import ConfigError, parse_args, replace_path, save_config
from worldmodels.outcome import OutcomeConfig

#: fidelity targets of the issue (held-out placements of training graphs; unseen graph)
TARGETS = {"held_out_spearman": 0.9, "held_out_mae_ratio": 0.3, "unseen_spearman": 0.7}


@dataclass(frozen=True)
class OutcomeRunConfig:
    env: str = "DevicePlacement-v0"
    graphs: str = "inception_v3,resnet50,nasnet_a,bert"
    unseen: str = "resnext50"           # a graph never trained on ("" = skip)
    episodes: int = 400                 # finished episodes per training graph (before dropping duplicates)
    unseen_episodes: int = 200
    held_out: float = 0.2               # fraction of each training graph's placements held out
    devices: str = "gpu4"               # DevicePlacement: device-set preset
    groups: int = 16                    # DevicePlacement: ops per step (0 = one op per step)
    reward: str = "speedup"             # DevicePlacement: neg_runtime | neg_sqrt_runtime | speedup
    fd_steps: int = 100                 # MacroPlacement: force-directed steps per stage (episodes' soft macros)
    anneal_moves: int = 800             # MacroPlacement: most annealing proposals per annealed snapshot
    logdir: str = "runs/outcome"
    seed: int = 0
    progress: bool = True
    outcome: OutcomeConfig = field(default_factory=OutcomeConfig)


def memory_placement_config() -> OutcomeRunConfig:
    """MemoryPlacement-v0 on four graphs, inception_v3 unseen."""
    return replace_path(OutcomeRunConfig(), {"env": "MemoryPlacement-v0", "graphs": "squeezenet,resnet50,bert,nasnet_a",
                                             "unseen": "inception_v3", "episodes": 300, "unseen_episodes": 150})


def macro_placement_config() -> OutcomeRunConfig:
    """MacroPlacement-v0 on ariane133 and four generated netlists, a fifth unseen; the
    ``--episodes`` are placements per netlist (episodes and what is annealed or perturbed
    from them, `worldmodels.outcome_data.collect_macro_outcomes`); 1000 training steps
    (every placement is padded to ariane133's 1,410 objects, so a step costs ~4x a
    generated netlist's)."""
    return replace_path(OutcomeRunConfig(), {"env": "MacroPlacement-v0", "graphs": "ariane133,gen:1,gen:2,gen:3,gen:4",
                                             "unseen": "gen:5", "episodes": 150, "unseen_episodes": 100,
                                             "outcome.steps": 1000})


def tiny_config() -> OutcomeRunConfig:
    """Seconds-long smoke run (tests, CI)."""
    return replace_path(OutcomeRunConfig(), {
        "graphs": "squeezenet", "unseen": "", "episodes": 24, "progress": False,
        "outcome.width": 8, "outcome.depth": 0, "outcome.members": 2, "outcome.steps": 20, "outcome.batch_size": 8})


PRESETS = {"device_placement": OutcomeRunConfig, "memory_placement": memory_placement_config,
           "macro_placement": macro_placement_config, "tiny": tiny_config}


def env_kwargs(cfg: OutcomeRunConfig) -> dict:
    if cfg.env == "DevicePlacement-v0":
        if cfg.groups < 0:
            raise ConfigError(f"--groups must be >= 0 (0 = one op per step), got {cfg.groups}")
        return {"devices": cfg.devices, "reward": cfg.reward, "groups": cfg.groups or None}
    return {}


def _graphs(text: str) -> list[str]:
    return [g.strip() for g in text.split(",") if g.strip()]


def main(argv: list[str] | None = None) -> dict:
    from worldmodels.fidelity import outcome_metrics
    from worldmodels.logging import write_json_atomic
    from worldmodels.outcome import (OutcomeModel, capacities, fit, macro_placement_set, placement_set, predict,
                                     save_outcome)
    from worldmodels.outcome_data import MACRO_ENV, collect_macro_outcomes, collect_outcomes

    cfg = parse_args(list(sys.argv[1:] if argv is None else argv), PRESETS, base=OutcomeRunConfig())
    graphs = _graphs(cfg.graphs)
    if not graphs:
        raise ConfigError("--graphs: no training graph given")
    if cfg.unseen in graphs:
        raise ConfigError(f"--unseen {cfg.unseen!r} is also a training graph")
    for name, v in (("--outcome.steps", cfg.outcome.steps), ("--outcome.members", cfg.outcome.members),
                    ("--outcome.batch_size", cfg.outcome.batch_size), ("--outcome.width", cfg.outcome.width)):
        if v < 1:
            raise ConfigError(f"{name} must be >= 1, got {v}")
    if cfg.outcome.depth < 0 or cfg.outcome.rank_coef < 0:
        raise ConfigError("--outcome.depth and --outcome.rank_coef must be >= 0")
    macro = cfg.env == MACRO_ENV
    if macro and min(cfg.fd_steps, cfg.anneal_moves) < 1:
        raise ConfigError(f"--fd_steps and --anneal_moves must be >= 1, got {cfg.fd_steps}, {cfg.anneal_moves}")
    kw = {} if macro else env_kwargs(cfg)
    os.makedirs(cfg.logdir, exist_ok=True)
    save_config(cfg, cfg.logdir)
    t0 = time.time()

    def collect(names, n, seed):
        if macro:
            return collect_macro_outcomes(names, n, seed=seed, fd_steps=cfg.fd_steps, anneal_moves=cfg.anneal_moves,
                                          progress=cfg.progress)
        return collect_outcomes(cfg.env, names, n, seed=seed, env_kwargs=kw, progress=cfg.progress)

    data = collect(graphs, cfg.episodes, cfg.seed)
    train_data, held = data.split(cfg.held_out, seed=cfg.seed)
    unseen = collect([cfg.unseen], cfg.unseen_episodes, cfg.seed + 1) if cfg.unseen else None
    stores = [d for d in (data, unseen) if d is not None]
    node_cap, edge_cap = capacities(stores)
    to_set = macro_placement_set if macro else placement_set
    sets = {"train": to_set(train_data, node_cap, edge_cap), "held_out": to_set(held, node_cap, edge_cap)}
    if unseen is not None:
        sets["unseen"] = to_set(unseen, node_cap, edge_cap)
    t_data = time.time() - t0
    train = sets["train"]
    model = OutcomeModel(cfg.outcome, data.layout, log_target=bool((train.reward > 0).all()))
    t1 = time.time()
    params, history = fit(model, train, seed=cfg.seed, progress=cfg.progress)
    t_train = time.time() - t1
    save_outcome(cfg.logdir, model, params, node_cap, edge_cap)
    mean = float(train.reward.mean())
    metrics = {name: outcome_metrics(predict(model, params, s.placed), s.reward, s.group, mean)
               for name, s in sets.items() if len(s.reward)}
    met = {"held_out_spearman": metrics["held_out"]["spearman"] >= TARGETS["held_out_spearman"],
           "held_out_mae_ratio": metrics["held_out"]["mae_ratio"] <= TARGETS["held_out_mae_ratio"]}
    if "unseen" in metrics:
        met["unseen_spearman"] = metrics["unseen"]["spearman"] >= TARGETS["unseen_spearman"]
    summary = {
        "env": cfg.env, "graphs": graphs, "unseen_graph": cfg.unseen or None, "metrics": metrics, "targets": TARGETS,
        "targets_met": met, "episodes_kept": len(data), "invalid_episodes": int((~data.valid).sum()),
        "final_train_loss": history[-1]["loss"], "log_target": model.log_target,
        "seconds": {"data": t_data, "train": t_train, "total": time.time() - t0}, "logdir": cfg.logdir,
    }
    write_json_atomic(os.path.join(cfg.logdir, "summary.json"), summary)
    _print(summary, cfg)
    print(json.dumps({"env": cfg.env, "held_out_spearman": metrics["held_out"]["spearman"],
                      "held_out_mae_ratio": metrics["held_out"]["mae_ratio"],
                      "unseen_spearman": metrics.get("unseen", {}).get("spearman"), "targets_met": met,
                      "seconds": round(summary["seconds"]["total"], 1)}))
    return summary


def _print(s: dict, cfg: OutcomeRunConfig) -> None:
    print(f"{s['env']}: {s['episodes_kept']} distinct finished placements on {', '.join(s['graphs'])} "
          f"({s['invalid_episodes']} invalid, left out); unseen {s['unseen_graph']}; "
          f"data {s['seconds']['data']:.0f}s, training {s['seconds']['train']:.0f}s")
    print("| placements | n | MAE | mean baseline | ratio | Spearman | Kendall | Spearman pooled | top-1 regret | regret rel. |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = {"train": "training", "held_out": "held-out, training graphs", "unseen": f"unseen {s['unseen_graph']}"}
    for k, m in s["metrics"].items():
        print(f"| {names[k]} | {m['n']:.0f} | {m['mae']:.4g} | {m['mae_baseline']:.4g} | {m['mae_ratio']:.3f} | "
              f"{m['spearman']:.3f} | {m['kendall']:.3f} | {m['spearman_pooled']:.3f} | {m['regret']:.4g} | "
              f"{m['regret_rel']:.2%} |")
    print("targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in s["targets_met"].items()))


if __name__ == "__main__":
    from experiments._cli import run_main

    run_main(main)
