"""The outcome model trained inside the loop, on the completed real episodes of its replay.

Placement episodes pay one reward, at the end; in model-based mode the imagined env pays it
from `worldmodels.outcome.OutcomeModel` (`worldmodels.dream.DreamEnv`). Each iteration the
loop refits it for a few Adam steps on every finished, valid episode in the replay: the
episode's final state (the graph with the whole assignment as node features) and its final
reward. The target statistics are set once, from the episodes seen at initialisation, with
a floor on the spread (standardised targets stay of order one however few there were).

State (checkpointed with the loop): ``{"params": {"net", "norm"}, "opt": optax state}``.
"""
from __future__ import annotations

import numpy as np
import jax
import optax

from worldmodels.outcome import OutcomeConfig, OutcomeModel, PlacedGraph, PlacementSet, pad_observation

MIN_TARGET_STD = 0.1   # floor of the target spread (log-reward units)


def final_placements(replay, node_cap: int, edge_cap: int) -> PlacementSet:
    """The replay's terminated episodes with a positive final reward (valid placements):
    final states as `PlacedGraph`s [E] and their final rewards (float32 [E])."""
    ends = np.cumsum(replay.episode_len) - 1                    # last transition of each episode
    final_state = replay.episode_start + replay.episode_len
    keep = np.flatnonzero(replay.terminated[ends] & (replay.reward[ends] > 0))
    if len(keep) == 0:
        return PlacementSet(None, np.zeros(0, np.float32), np.zeros(0, np.int32))
    rows = [pad_observation(replay.state_obs(int(final_state[k])), node_cap, edge_cap) for k in keep]
    placed = PlacedGraph(*(np.stack(x) for x in zip(*rows)))
    return PlacementSet(placed, replay.reward[ends][keep].astype(np.float32),
                        replay.episode_graph[keep].astype(np.int32))


def measured_mappings(replay) -> dict[str, dict[tuple[int, ...], float]]:
    """The replay's terminated episodes as ``{graph name: {action sequence: final reward}}``:
    the whole mappings the real environment has measured (a deterministic environment gives
    a mapping the same reward every time)."""
    out: dict[str, dict[tuple[int, ...], float]] = {}
    ends = np.cumsum(replay.episode_len)
    for k in np.flatnonzero(replay.terminated[ends - 1]):
        acts = tuple(int(a) for a in replay.action[ends[k] - replay.episode_len[k]:ends[k]])
        out.setdefault(replay.meta["graphs"][int(replay.episode_graph[k])], {})[acts] = float(replay.reward[ends[k] - 1])
    return out


class OnlineOutcome:
    """An `OutcomeModel` of ``layout`` refit on the loop's replay (module docstring)."""

    def __init__(self, layout, cfg: OutcomeConfig, node_cap: int, edge_cap: int):
        self.model = OutcomeModel(cfg, layout)
        self.cfg, self.node_cap, self.edge_cap = cfg, node_cap, edge_cap
        self.tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(cfg.lr))
        model, tx = self.model, self.tx

        def step(state, pg, reward, group):
            params = state["params"]

            def f(net):
                return model.loss({"net": net, "norm": params["norm"]}, pg, reward, group)
            (loss, m), grads = jax.value_and_grad(f, has_aux=True)(params["net"])
            updates, opt = tx.update(grads, state["opt"], params["net"])
            return {"params": {"net": optax.apply_updates(params["net"], updates), "norm": params["norm"]},
                    "opt": opt}, dict(m, loss=loss)
        self._step = jax.jit(step)

    def init(self, key, example: PlacedGraph, rewards: np.ndarray) -> dict:
        """Fresh state built on ``example`` (a batch [B]); target statistics from ``rewards``
        (the valid final rewards so far; none: mean 0)."""
        r = rewards if len(rewards) else np.ones(1, np.float32)
        params = self.model.init(key, example, r)
        y = np.log(np.maximum(r.astype(np.float64), 1e-9))
        params["norm"] = {"mean": np.float32(y.mean()), "std": np.float32(max(y.std(), MIN_TARGET_STD))}
        params = jax.tree.map(jax.numpy.asarray, params)
        return {"params": params, "opt": self.tx.init(params["net"])}

    def train(self, state: dict, data: PlacementSet, steps: int, rng: np.random.Generator) -> tuple[dict, dict]:
        """``steps`` Adam steps on random batches of ``data``; mean metrics (``outcome/*``)."""
        n = len(data.reward)
        if n < 2 or steps <= 0:
            return state, {}
        b = self.cfg.batch_size          # one batch shape (one compile): with replacement while n < b
        ms = []
        for _ in range(steps):
            idx = rng.choice(n, b, replace=n < b)
            state, m = self._step(state, jax.tree.map(lambda x: x[idx], data.placed), data.reward[idx],
                                  data.group[idx])
            ms.append(m)
        return state, {f"outcome/{k}": float(np.mean([float(m[k]) for m in ms])) for k in ("loss", "mse")} | {
            "outcome/episodes": float(n)}
