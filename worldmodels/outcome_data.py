"""Finished real placements for the outcome model: diverse episodes of the placement envs.

`collect_outcomes(env_id, graphs, episodes_per_graph, seed, env_kwargs)` runs complete
episodes of ``DevicePlacement-v0`` or ``MemoryPlacement-v0`` on the real environment and
keeps, per episode, the actions taken and the final (only non-zero) reward. The final
observation is not stored: it is the graph's reset observation with the actions written
into its assignment columns (`worldmodels.outcome.assign`, checked against the real env by
the tests), so a store holds one observation per graph plus an int array per episode.

Behaviour policies (one drawn per episode, with its own parameter) cover the range of
placements a controller will meet, from uniform random to near the non-learned baselines:

* ``random``: uniform over the legal actions.
* ``sticky``: repeat the previous action with probability q ~ U[0.5, 0.98] (contiguous
  splits, like a human expert's), else uniform.
* ``softmax``: a heuristic's preference with a temperature tau ~ logU[0.03, 10] (low tau:
  near the heuristic; high: random). Device: prefer the least-loaded device (load = summed
  cost of the ops placed there, relative to one group's cost). Memory: prefer fast levels,
  with a per-episode bias between weights and activations.
* ``baseline``: a non-learned baseline's actions, each replaced by a uniform legal action with
  probability eps ~ U[0, 0.5]. Device: expert, METIS, m-ETF, annealing (300 iterations) and
  single device (`systems_envs.placement.baselines`; a group takes the device most of its
  ops get), devices relabelled by a random permutation (gpu presets are homogeneous).
  Memory: the compiler-like greedy mapping (`systems_envs.placement.memory.greedy_mapping`).

An action that the real mask forbids is replaced by a uniform legal one, so memory episodes
do not end early; an episode that still ends invalid keeps ``valid=False``. Duplicate
placements of a graph are dropped (`OutcomeData.dedupe`), so held-out sets never repeat a
training placement.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import gymnasium as gym
import numpy as np

import systems_envs  # noqa: F401  (registers the environments)
from worldmodels.replay import standard_obs

PLACEMENT_ENVS = ("DevicePlacement-v0", "MemoryPlacement-v0")
POLICY_NAMES = ("random", "sticky", "softmax", "baseline")


@dataclasses.dataclass
class OutcomeData:
    """Finished placements of a few graphs (E episodes, S = the longest episode's steps).

    graphs: graph names; start_obs: per graph its reset observation (`standard_obs` dict);
    graph: int64 [E] index into ``graphs``; actions: int32 [E, S] (-1 past the episode's
    end); reward: float64 [E] final reward (environment units); valid: bool [E] (not out of
    memory / over capacity); policy: int8 [E] index into `POLICY_NAMES`; layout: the
    environment's assignment layout (`worldmodels.outcome.Layout`)."""

    env_id: str
    graphs: list[str]
    start_obs: list[dict]
    graph: np.ndarray
    actions: np.ndarray
    reward: np.ndarray
    valid: np.ndarray
    policy: np.ndarray
    layout: object

    def __len__(self) -> int:
        return len(self.reward)

    def subset(self, idx) -> "OutcomeData":
        idx = np.asarray(idx, np.int64)
        return dataclasses.replace(self, graph=self.graph[idx], actions=self.actions[idx], reward=self.reward[idx],
                                   valid=self.valid[idx], policy=self.policy[idx])

    def dedupe(self) -> "OutcomeData":
        """The same store without repeated (graph, actions) episodes (first kept, order kept)."""
        keys = np.concatenate([self.graph[:, None].astype(np.int64), self.actions.astype(np.int64)], axis=1)
        _, first = np.unique(keys, axis=0, return_index=True)
        return self.subset(np.sort(first))

    def split(self, held_out: float, seed: int = 0) -> tuple["OutcomeData", "OutcomeData"]:
        """(train, held-out): per graph a random ``held_out`` fraction of its episodes."""
        if not 0.0 < held_out < 1.0:
            raise ValueError(f"held-out fraction must be in (0, 1), got {held_out}")
        rng = np.random.default_rng(seed)
        test = np.zeros(len(self), bool)
        for g in range(len(self.graphs)):
            idx = np.flatnonzero(self.graph == g)
            k = int(round(held_out * len(idx)))
            test[rng.permutation(idx)[:k]] = True
        return self.subset(np.flatnonzero(~test)), self.subset(np.flatnonzero(test))


def _device_baselines(env, rng: np.random.Generator) -> list[np.ndarray]:
    """Per-step actions [num_groups] of the device baselines (majority device per group)."""
    from systems_envs.placement.baselines import anneal, etf, expert, metis, single_device

    cg, out = env.cg, []
    for fn in (expert, metis, etf, single_device):
        out.append(fn(cg, 0))
    out.append(anneal(cg, 0, iters=300, start=out[2]))
    D = cg.num_devices
    return [np.array([np.bincount(p[m], minlength=D).argmax() for m in env.members], np.int64) for p in out]


def _memory_baselines(env) -> list[np.ndarray]:
    from systems_envs.placement.memory import greedy_mapping

    w, a = greedy_mapping(env.lg, env.acc)
    return [np.asarray(w * env.M + a, np.int64)]


class _Episode:
    """One episode's behaviour policy: ``act(step, mask) -> action``."""

    def __init__(self, env, kind: str, baselines: list[np.ndarray], rng: np.random.Generator):
        self.env, self.kind, self.rng = env, kind, rng
        self.policy = int(rng.integers(len(POLICY_NAMES)))
        name = POLICY_NAMES[self.policy]
        self.prev = None
        if name == "sticky":
            self.q = rng.uniform(0.5, 0.98)
        elif name == "softmax":
            self.tau = float(np.exp(rng.uniform(np.log(0.03), np.log(10.0))))
            if kind == "device":
                cost = env.cg.dur_ms.min(axis=1)
                self.group_cost = np.array([cost[m].sum() for m in env.members])
                self.load = np.zeros(env.cg.num_devices)
            else:
                self.bias = rng.uniform(0.0, 1.0)     # 0: weights want fast levels, 1: activations
        elif name == "baseline":
            base = baselines[int(rng.integers(len(baselines)))]
            if kind == "device":
                base = rng.permutation(env.cg.num_devices)[base]
            self.base, self.eps = base, rng.uniform(0.0, 0.5)

    def act(self, step: int, mask: np.ndarray) -> int:
        legal = np.flatnonzero(mask)
        rng, name = self.rng, POLICY_NAMES[self.policy]
        a = None
        if name == "sticky" and self.prev is not None and rng.random() < self.q:
            a = self.prev
        elif name == "softmax":
            if self.kind == "device":
                pref = -self.load / max(float(self.group_cost.mean()), 1e-12)
            else:
                m = self.env.M
                w, lv = np.divmod(np.arange(m * m), m)
                pref = -((1.0 - self.bias) * w + self.bias * lv)
            logits = np.where(mask.astype(bool), pref / self.tau, -np.inf)
            p = np.exp(logits - logits.max())
            a = int(rng.choice(len(p), p=p / p.sum()))
        elif name == "baseline" and rng.random() >= self.eps:
            a = int(self.base[step])
        if a is None or not mask[a]:
            a = int(rng.choice(legal))
        if name == "softmax" and self.kind == "device":
            self.load[a] += self.group_cost[step]
        self.prev = a
        return a


def collect_outcomes(env_id: str, graphs: Sequence[str], episodes_per_graph: int, seed: int = 0,
                     env_kwargs: Mapping | None = None, progress: bool = False) -> OutcomeData:
    """Run ``episodes_per_graph`` complete episodes per graph of ``env_id`` (see the module
    docstring) and return them deduplicated. Seeded: same arguments, same store."""
    from worldmodels.logging import progress as bar
    from worldmodels.outcome import layout_of

    if env_id not in PLACEMENT_ENVS:
        raise ValueError(f"outcome data: environment must be one of {PLACEMENT_ENVS}, got {env_id!r}")
    if episodes_per_graph < 1:
        raise ValueError(f"outcome data: episodes per graph must be >= 1, got {episodes_per_graph}")
    if not graphs:
        raise ValueError("outcome data: no graphs given")
    kind = "device" if env_id == "DevicePlacement-v0" else "memory"
    rng = np.random.default_rng(seed)
    starts, rows, layout = [], [], None
    with bar(total=episodes_per_graph * len(graphs), desc=f"collect {env_id}", enabled=progress, unit="ep") as pbar:
        for gi, name in enumerate(graphs):
            env = gym.make(env_id, graph=name, **dict(env_kwargs or {})).unwrapped
            layout = layout or layout_of(env)
            obs, _ = env.reset(seed=seed)
            starts.append(standard_obs(obs))
            baselines = _device_baselines(env, rng) if kind == "device" else _memory_baselines(env)
            for _ in range(episodes_per_graph):
                obs, _ = env.reset()
                ep = _Episode(env, kind, baselines, rng)
                acts, step = [], 0
                while True:
                    a = ep.act(step, obs["action_mask"])
                    obs, r, term, trunc, info = env.step(a)
                    acts.append(a)
                    step += 1
                    if term or trunc:
                        break
                rows.append((gi, acts, float(r), bool(info.get("valid", True)) and bool(term), ep.policy))
                pbar.update(1)
            env.close()
    width = max(len(r[1]) for r in rows)
    actions = np.full((len(rows), width), -1, np.int32)
    for i, r in enumerate(rows):
        actions[i, :len(r[1])] = r[1]
    data = OutcomeData(env_id, list(graphs), starts, np.array([r[0] for r in rows], np.int64), actions,
                       np.array([r[2] for r in rows]), np.array([r[3] for r in rows], bool),
                       np.array([r[4] for r in rows], np.int8), layout)
    return data.dedupe()
