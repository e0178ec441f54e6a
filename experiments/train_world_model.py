"""Collect (or load) real trajectories, train a world model, validate it against the simulator.

    python -m experiments.train_world_model --env GraphRewrite-v0 --graphs squeezenet,resnet50,bert \\
        --episodes 48 --encoder gn --dynamics mdnrnn --logdir runs/wm [--model.seq_len 4 ...]

Flags follow the project's config system (`worldmodels.config` parser): top-level fields
(``--env``, ``--graphs``, ``--episodes``, ``--logdir``, ``--seed``, ``--unseen``...) and
sections ``--data.*``, ``--model.*`` (`worldmodels.config.WorldModelConfig`, the same section
as ``experiments.train``'s), ``--train.*``; ``--encoder`` / ``--dynamics`` stand for
``--model.encoder`` / ``--model.dynamics``; ``--preset tiny`` for a smoke run; ``--config
DIR`` reloads a saved run config.

Placement environments (``--env DevicePlacement-v0`` / ``MemoryPlacement-v0``) work the same
way; ``--data.devices``, ``--data.groups`` and ``--data.reward`` configure DevicePlacement.

``--outcome DIR`` (placement): the imagined env pays the final reward from the outcome model
trained by ``experiments.train_outcome_model`` into DIR (`worldmodels.outcome`) instead of the
dynamics' reward head; the fidelity then adds its rank metrics (``final_reward_spearman_k*``...).

Writes under ``--logdir``: ``config.json``, ``replay.npz`` (train + validation episodes,
reusable with ``--data.load``), TensorBoard scalars ``model/*`` (losses, per train step) and
``validation/*`` (every fidelity metric and baseline, `worldmodels.fidelity`), ``unseen/*``
(the same on a graph never trained on), ``checkpoints/`` (orbax) and ``summary.json``. A
rerun with the same logdir restores the final checkpoint instead of training again.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import jax

from worldmodels.config import (MODEL_ALIASES, ConfigError, WorldModelConfig, from_dict, parse_args, replace_path,
                                save_config)


@dataclass(frozen=True)
class DataConfig:
    policy: str = "random"          # random | greedy | epsilon_greedy (behaviour policy)
    epsilon: float = 0.3            # exploration rate of epsilon_greedy
    max_steps: int = 20             # rewrite: episode step limit
    max_candidates: int = 64        # rewrite: candidate slots A
    devices: str = "gpu4"           # DevicePlacement: device-set preset (A = its devices)
    groups: int = 16                # DevicePlacement: ops placed per step (0 = one op per step)
    reward: str = "speedup"         # DevicePlacement: neg_runtime | neg_sqrt_runtime | speedup
    val_fraction: float = 0.2       # validation episodes (split by episode)
    horizon: int = 10               # mask-target horizon (>= the largest fidelity k)
    load: str = ""                  # path of a saved replay.npz to use instead of collecting


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000               # optimisation steps
    log_every: int = 10             # train steps between model/* scalars
    eval_windows: int = 256         # fidelity windows per evaluation (0 = all)
    ks: tuple[int, ...] = (1, 5, 10)


@dataclass(frozen=True)
class RunConfig:
    env: str = "GraphRewrite-v0"
    graphs: str = "squeezenet,resnet50,bert"
    episodes: int = 48
    unseen: str = "resnext50"       # a graph never seen in training ("" = skip)
    unseen_episodes: int = 6
    logdir: str = "runs/world_model"
    seed: int = 0
    progress: bool = True
    outcome: str = ""               # placement: dir of a trained outcome model for the imagined final reward ("" = none)
    data: DataConfig = field(default_factory=DataConfig)
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def tiny_config() -> RunConfig:
    """Seconds-long smoke run (CI)."""
    return replace_path(RunConfig(), {
        "graphs": "squeezenet", "episodes": 3, "unseen": "", "progress": False,
        "data.max_steps": 6, "data.max_candidates": 32, "data.horizon": 10,
        "model.width": 8, "model.depth": 1, "model.latent_dim": 8, "model.hidden": 16, "model.slot_width": 8,
        "model.batch_size": 2, "model.seq_len": 2, "train.steps": 3, "train.log_every": 1, "train.eval_windows": 8,
    })


def device_placement_config() -> RunConfig:
    """DevicePlacement-v0 on gpu4, 16 ops per step (11-24 steps per episode), speedup reward."""
    return replace_path(RunConfig(), {"env": "DevicePlacement-v0", "graphs": "inception_v3,resnet50,nasnet_a",
                                      "episodes": 48})


def memory_placement_config() -> RunConfig:
    """MemoryPlacement-v0: one layer per step (64-174 steps per episode), 9 (weight, activation) levels."""
    return replace_path(RunConfig(), {"env": "MemoryPlacement-v0", "graphs": "squeezenet,resnet50",
                                      "episodes": 16, "unseen": "inception_v3", "unseen_episodes": 3,
                                      "train.steps": 1500})


PRESETS = {"default": RunConfig, "tiny": tiny_config, "device_placement": device_placement_config,
           "memory_placement": memory_placement_config}

#: config fields that may change between the run that wrote a checkpoint and one restoring it
COMPAT_EXCLUDE = ("logdir", "progress", "data.load", "train.steps", "train.log_every", "train.eval_windows",
                  "train.ks", "unseen", "unseen_episodes", "outcome")


def parse(argv: list[str] | None) -> RunConfig:
    """Parse flags; ``--config PATH`` (a saved config.json or run dir) is the base."""
    argv = list(sys.argv[1:] if argv is None else argv)
    base = RunConfig()
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("flag --config needs a value")
        path = argv[i + 1]
        del argv[i:i + 2]
        import json
        path = os.path.join(path, "config.json") if os.path.isdir(path) else path
        try:
            with open(path) as f:
                base = from_dict(json.load(f), RunConfig)
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"config file {path}: unreadable ({e})") from None
    return parse_args(argv, PRESETS, base=base, aliases=MODEL_ALIASES)


def _graphs(text: str) -> list[str]:
    return [g.strip() for g in text.split(",") if g.strip()]


def env_kwargs(env: str, d: DataConfig) -> dict:
    """Constructor arguments of environment ``env`` from the ``--data.*`` fields that apply
    to it (MemoryPlacement-v0 and other environments take none)."""
    if env == "GraphRewrite-v0":
        return {"max_steps": d.max_steps, "max_candidates": d.max_candidates}
    if env == "DevicePlacement-v0":
        if d.groups < 0:
            raise ConfigError(f"--data.groups must be >= 0 (0 = one op per step), got {d.groups}")
        return {"devices": d.devices, "reward": d.reward, "groups": d.groups or None}
    return {}


def behaviour_policy(d: DataConfig):
    """The collection policy named by ``--data.policy`` (and ``--data.epsilon``)."""
    from worldmodels.replay import epsilon_policy, greedy_policy, make_policy

    return epsilon_policy(greedy_policy(), d.epsilon) if d.policy == "epsilon_greedy" else make_policy(d.policy)


def get_data(cfg: RunConfig, kw: dict):
    """(train, validation, unseen-or-None) replay stores; ``kw``: the env's `env_kwargs`."""
    from worldmodels.replay import Replay, collect

    policy = behaviour_policy(cfg.data)
    if cfg.data.load:
        store = Replay.load(cfg.data.load)
    else:
        store = collect(cfg.env, _graphs(cfg.graphs), cfg.episodes, policy, seed=cfg.seed, env_kwargs=kw,
                        horizon=cfg.data.horizon, progress=cfg.progress)
        store.save(os.path.join(cfg.logdir, "replay.npz"))
    train, val = store.split_by_episode(cfg.data.val_fraction, seed=cfg.seed)
    unseen = None
    if cfg.unseen:
        unseen = collect(cfg.env, [cfg.unseen], cfg.unseen_episodes, policy, seed=cfg.seed + 1, env_kwargs=kw,
                         horizon=store.horizon, progress=cfg.progress)
    return train, val, unseen


def load_outcome_for(cfg: RunConfig, kw: dict):
    """(OutcomeModel, params) from ``--outcome`` checked against the environment, or None."""
    if not cfg.outcome:
        return None
    import gymnasium as gym

    from worldmodels.outcome import layout_of, load_outcome

    if cfg.env == "GraphRewrite-v0":
        raise ConfigError("--outcome: an outcome model scores placements; --env is GraphRewrite-v0")
    model, params, _, _ = load_outcome(cfg.outcome)
    graphs = _graphs(cfg.graphs)
    env = gym.make(cfg.env, **({"graph": graphs[0]} if graphs else {}), **kw)
    if layout_of(env).to_json() != model.layout.to_json():
        raise ConfigError(f"--outcome {cfg.outcome}: trained for another environment layout than {cfg.env} "
                          "with these --data.* options")
    return model, params


def main(argv: list[str] | None = None) -> dict:
    from worldmodels import fidelity
    from worldmodels.checkpoint import Checkpointer
    from worldmodels.logging import RunLogger
    from worldmodels.world_model import Trainer, WorldModel, restore_world_model, save_world_model, train

    cfg = parse(argv)
    if cfg.episodes < 2 and cfg.data.val_fraction > 0 and not cfg.data.load:
        raise ValueError(f"--episodes must be >= 2 to split train/validation episodes, got {cfg.episodes}")
    if max(cfg.train.ks) > cfg.data.horizon:
        raise ValueError(f"--train.ks {cfg.train.ks} exceed --data.horizon {cfg.data.horizon}")
    kw = env_kwargs(cfg.env, cfg.data)
    outcome = load_outcome_for(cfg, kw)
    os.makedirs(cfg.logdir, exist_ok=True)
    save_config(cfg, cfg.logdir)
    t0 = time.time()
    train_store, val_store, unseen_store = get_data(cfg, kw)
    if val_store.num_transitions == 0:
        raise ValueError("no validation transitions: raise --episodes or --data.val_fraction")
    t_data = time.time() - t0
    wm = WorldModel.for_replay(cfg.model, train_store)
    key = jax.random.key(cfg.seed)
    params = wm.init(key, train_store)
    ckdir = os.path.join(cfg.logdir, "checkpoints")
    log = RunLogger(cfg.logdir)
    like = Trainer(wm).init(params)
    t1 = time.time()
    latest = Checkpointer(ckdir, config=cfg, compat_exclude=COMPAT_EXCLUDE).latest_step() if os.path.isdir(ckdir) else None
    if latest is not None and latest >= cfg.train.steps:
        state = restore_world_model(ckdir, like, cfg, latest, COMPAT_EXCLUDE)
        history = []
    else:
        def cb(i, m):
            if (i + 1) % cfg.train.log_every == 0 or i + 1 == cfg.train.steps:
                log.scalars(m, step=i + 1, prefix="model/")
        state, history = train(wm, params, train_store, cfg.train.steps, seed=cfg.seed, callback=cb,
                               progress=cfg.progress, state=like)
        save_world_model(ckdir, state, cfg, compat_exclude=COMPAT_EXCLUDE)
    t_train = time.time() - t1
    metrics = fidelity.evaluate(wm, state.params, val_store, cfg.train.ks, seed=cfg.seed,
                                max_windows=cfg.train.eval_windows, reference=train_store, outcome=outcome)
    step = int(state.step)
    log.scalars(metrics, step=step, prefix="validation/")
    unseen = None
    if unseen_store is not None:
        unseen = fidelity.evaluate(wm, state.params, unseen_store, cfg.train.ks, seed=cfg.seed,
                                   max_windows=cfg.train.eval_windows, reference=train_store, outcome=outcome)
        log.scalars(unseen, step=step, prefix="unseen/")
    summary = {
        "mask_f1": metrics["mask_f1_k1"], "mask_f1_baseline": metrics["mask_f1_baseline_k1"],
        "mask_f1_conflict_baseline": metrics.get("mask_f1_conflict_baseline_k1"),
        "reward_mae": metrics["reward_mae_k1"], "reward_mae_baseline": metrics["reward_mae_baseline_k1"],
        "return_error_k10": metrics.get("return_error_k10", float("nan")),
        "return_error_k10_baseline": metrics.get("return_error_baseline_k10", float("nan")),
        "final_reward_mae": metrics.get("final_reward_mae_k1"),
        "final_reward_mae_baseline": metrics.get("final_reward_mae_baseline_k1"),
        "final_reward_spearman": metrics.get(f"final_reward_spearman_k{max(cfg.train.ks)}"),
        "outcome_model": cfg.outcome or None,
        "train_transitions": train_store.num_transitions, "validation_transitions": val_store.num_transitions,
        "train_episodes": train_store.num_episodes, "validation_episodes": val_store.num_episodes,
        "validation": metrics, "unseen_graph": cfg.unseen or None, "unseen": unseen,
        "final_train_loss": history[-1]["loss"] if history else None, "train_steps": step,
        "seconds": {"data": t_data, "train": t_train, "total": time.time() - t0},
        "env": cfg.env, "graphs": _graphs(cfg.graphs), "encoder": cfg.model.encoder, "dynamics": cfg.model.dynamics,
    }
    log.write_summary(summary)
    log.close()
    _print(summary)
    return summary


def _print(s: dict) -> None:
    print(f"train transitions {s['train_transitions']}, validation {s['validation_transitions']}; "
          f"{s['seconds']['total']:.0f}s")
    rows = [("held-out episodes (train graphs)", s["validation"])]
    if s["unseen"]:
        rows.append((f"unseen graph {s['unseen_graph']}", s["unseen"]))
    nan = float("nan")
    print("| data | reward MAE (k=1) | mean baseline | return err k=10 | baseline | mask F1 (k=1) | unchanged baseline "
          "| conflict baseline | mask F1 k=10 | unchanged | conflict | term acc k=1 | majority baseline |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, m in rows:
        print(f"| {name} | {m['reward_mae_k1']:.4g} | {m['reward_mae_baseline_k1']:.4g} | "
              f"{m.get('return_error_k10', nan):.4g} | {m.get('return_error_baseline_k10', nan):.4g} | "
              f"{m['mask_f1_k1']:.3f} | {m['mask_f1_baseline_k1']:.3f} | {m.get('mask_f1_conflict_baseline_k1', nan):.3f} | "
              f"{m.get('mask_f1_k10', nan):.3f} | {m.get('mask_f1_baseline_k10', nan):.3f} | "
              f"{m.get('mask_f1_conflict_baseline_k10', nan):.3f} | "
              f"{m['terminated_acc_k1']:.3f} | {m['terminated_acc_baseline_k1']:.3f} |")
    for name, m in rows:
        if s["env"] != "GraphRewrite-v0" and "final_reward_mae_k1" in m:  # placement: the only non-zero reward
            k = max(int(key.rsplit("_k", 1)[1]) for key in m if key.startswith("final_reward_mae_k"))
            rank = (f"; Spearman {m[f'final_reward_spearman_k{k}']:.3f}, Kendall {m[f'final_reward_kendall_k{k}']:.3f}"
                    f" (k={k}, outcome model {s['outcome_model']})" if f"final_reward_spearman_k{k}" in m else "")
            print(f"{name}: reward at the final step MAE {m['final_reward_mae_k1']:.4g} "
                  f"(baseline: mean final reward {m['final_reward_mae_baseline_k1']:.4g}){rank}")


if __name__ == "__main__":
    from experiments._cli import run_main

    run_main(main)  # ConfigError and CheckpointError are ValueErrors: one-line "error: ..." and exit 2
