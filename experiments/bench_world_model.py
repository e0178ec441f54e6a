"""Benchmark: imagined vs real transitions per second, training steps per second, peak memory.

    python -m experiments.bench_world_model [--graphs squeezenet,resnet50,bert] [--batch 4096] ...

Per graph, in one run: (1) real environment transitions/s of a random legal policy in the
simulator (reset time included in the episode loop, as a collector sees it); (2) collect a
few episodes, build a world model (untrained: speed does not depend on the weights) and
time batched imagined rollouts (``batch`` rollouts x ``horizon`` steps in one jitted
``lax.scan``, random legal actions, after compile); (3) world-model train steps/s on the
collected data (after compile). Peak memory = the process's peak resident set size
(``ru_maxrss``) after that graph. Prints a markdown table; ``--out`` writes JSON too.

The environment's arguments and the collection policy are ``train_world_model``'s
``--data.*`` section (``--data.max_candidates``, ``--data.devices``, ``--data.policy``...;
``--data.val_fraction`` does not apply, ``--data.load`` is refused); the world model is the
``--model.*`` section. The real-rate measurement always steps a random legal policy.
"""
from __future__ import annotations

import dataclasses
import json
import resource
import time
from dataclasses import dataclass, field

import gymnasium as gym
import jax
import numpy as np

from experiments.train_world_model import DataConfig, behaviour_policy, env_kwargs
from worldmodels.config import MODEL_ALIASES, ConfigError, WorldModelConfig, parse_args


@dataclass(frozen=True)
class BenchConfig:
    env: str = "GraphRewrite-v0"
    graphs: str = "squeezenet,resnet50,bert"
    real_seconds: float = 3.0       # wall time spent stepping the real env per graph
    episodes: int = 4               # episodes collected for the start states / training data
    batch: int = 4096               # imagined rollouts in parallel
    horizon: int = 20               # imagined steps per rollout
    repeats: int = 3                # timed repetitions of the imagined scan (best kept)
    train_steps: int = 5            # timed train steps (after one compile step)
    seed: int = 0
    out: str = ""                   # optional JSON output path
    data: DataConfig = field(default_factory=DataConfig)   # env arguments (--data.*, as in train_world_model)
    model: WorldModelConfig = field(default_factory=WorldModelConfig)


def real_rate(env_id: str, graph: str, kw: dict, seconds: float, seed: int) -> float:
    from worldmodels.replay import random_policy

    env = gym.make(env_id, graph=graph, **kw)
    pol, rng = random_policy(), np.random.default_rng(seed)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        done = False
        while not done:
            obs, _, term, trunc, _ = env.step(pol(env, obs, rng))
            n += 1
            done = term or trunc
    return n / (time.perf_counter() - t0)


def bench_graph(cfg: BenchConfig, graph: str) -> dict:
    from worldmodels.imagined_env import ImaginedEnv, encode_starts, rollout
    from worldmodels.replay import collect
    from worldmodels.world_model import Trainer, WorldModel, make_train_batch, sample_starts, train_buckets

    kw = env_kwargs(cfg.env, cfg.data)
    real = real_rate(cfg.env, graph, kw, cfg.real_seconds, cfg.seed)
    store = collect(cfg.env, [graph], cfg.episodes, behaviour_policy(cfg.data), seed=cfg.seed, env_kwargs=kw,
                    horizon=cfg.data.horizon)
    wm = WorldModel.for_replay(cfg.model, store)
    params = wm.init(jax.random.key(cfg.seed), store)
    starts = encode_starts(wm, params, store, store.state_of)
    idx = np.arange(cfg.batch) % len(store.state_of)
    starts = jax.tree.map(lambda x: x[idx], starts)
    env = ImaginedEnv(wm, max_steps=cfg.horizon)
    run = jax.jit(lambda p, k, s: rollout(env, p, k, s, cfg.horizon))
    jax.block_until_ready(run(params, jax.random.key(0), starts))
    best = float("inf")
    for r in range(cfg.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run(params, jax.random.key(r + 1), starts))
        best = min(best, time.perf_counter() - t0)
    imagined = cfg.batch * cfg.horizon / best
    trainer = Trainer(wm)
    state = trainer.init(params)
    rng = np.random.default_rng(cfg.seed)
    buckets = train_buckets(store, cfg.model)
    batches = [make_train_batch(store, sample_starts(store, cfg.model.batch_size, rng), cfg.model.seq_len, buckets)
               for _ in range(cfg.train_steps + 1)]
    state, m = trainer.step(state, batches[0], jax.random.key(0))
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i, b in enumerate(batches[1:]):
        state, m = trainer.step(state, b, jax.random.key(i + 1))
    jax.block_until_ready(m)
    train_rate = cfg.train_steps / (time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"graph": graph, "real_tps": real, "imagined_tps": imagined, "ratio": imagined / real,
            "train_steps_per_s": train_rate, "peak_rss_mb": peak_mb}


def main(argv: list[str] | None = None) -> list[dict]:
    cfg = parse_args(argv, {"default": BenchConfig}, base=BenchConfig(),
                     aliases=MODEL_ALIASES)
    if cfg.data.load:
        raise ConfigError("bench_world_model collects its own episodes per graph; --data.load does not apply")
    rows = [bench_graph(cfg, g.strip()) for g in cfg.graphs.split(",") if g.strip()]
    print(f"env {cfg.env}, encoder {cfg.model.encoder}, dynamics {cfg.model.dynamics}, {cfg.batch} imagined rollouts x "
          f"{cfg.horizon} steps, devices {jax.devices()}")
    print("| graph | real transitions/s | imagined transitions/s | ratio | train steps/s | peak memory (MB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['graph']} | {r['real_tps']:.1f} | {r['imagined_tps']:.0f} | {r['ratio']:.0f}x | "
              f"{r['train_steps_per_s']:.2f} | {r['peak_rss_mb']:.0f} |")
    if cfg.out:
        with open(cfg.out, "w") as f:
            json.dump({"config": dataclasses.asdict(cfg), "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    from experiments._cli import run_main

    run_main(main)
