"""``MemoryPlacement-v0``: EGRL-style mapping of weights and activations to a memory
hierarchy of a *modelled* accelerator (see :mod:`systems_envs.placement.memory`; no
figure here is measured on hardware).

Episode: one step per layer, in topological order. Action ``w * M + a`` maps the layer's
weights to level ``w`` and its activation to level ``a`` (M levels, fastest first).
``action_mask`` [M*M] marks the pairs that keep every level within capacity given the
layers mapped so far. An action that breaks a capacity ends the episode at once with
``invalid_reward`` (-1). After the last layer the reward is the speedup of the mapping's
modelled throughput over the all-in-slowest-memory mapping; every other reward is 0.

Observation: ``nodes`` [L, K + 3 + 2(M+1) + 1] float32 (op type one-hot, log1p MFLOP,
log1p weight MB, log1p activation MB, weight level one-hot + unmapped, activation level
one-hot + unmapped, is-next), ``senders``/``receivers`` [E] int64 (layer data edges),
``action_mask`` [M*M] int8.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from systems_envs.graph.ir import Graph
from systems_envs.placement.env import OP_TYPES
from systems_envs.placement.memory import Accelerator, LayerGraph, evaluate_mapping, layer_graph


class MemoryPlacementEnv(gym.Env):
    """Args: graph (Graph or name), accelerator (an :class:`Accelerator`), invalid_reward."""

    metadata = {"render_modes": []}

    def __init__(self, graph: Graph | str = "resnet50", accelerator: Accelerator | None = None,
                 invalid_reward: float = -1.0):
        if isinstance(graph, str):
            from systems_envs.placement.graphs import load_placement_graph

            graph = load_placement_graph(graph)
        self.lg: LayerGraph = layer_graph(graph)
        self.acc = accelerator or Accelerator()
        self.invalid_reward = float(invalid_reward)
        L, M = len(self.lg), len(self.acc.levels)
        self.M = M
        self.caps = np.array([lv.capacity for lv in self.acc.levels])
        slow = np.full(L, M - 1)
        self.baseline = evaluate_mapping(self.lg, self.acc, slow, slow)
        k = len(OP_TYPES)
        self._base = np.zeros((L, k + 3 + 2 * (M + 1) + 1), dtype=np.float32)
        self._base[np.arange(L), [OP_TYPES.index(t) for t in self.lg.op_types]] = 1.0
        self._base[:, k] = np.log1p(self.lg.flops / 1e6)
        self._base[:, k + 1] = np.log1p(self.lg.w_bytes / 1e6)
        self._base[:, k + 2] = np.log1p(self.lg.a_bytes / 1e6)
        self._wcol, self._acol, self._next = k + 3, k + 4 + M, k + 5 + 2 * M
        self._senders = np.array([p for p, _ in self.lg.edges], dtype=np.int64)
        self._receivers = np.array([c for _, c in self.lg.edges], dtype=np.int64)
        E = len(self.lg.edges)
        self.observation_space = spaces.Dict({
            "nodes": spaces.Box(0.0, 1e6, self._base.shape, np.float32),
            "senders": spaces.Box(0, max(L - 1, 0), (E,), np.int64),
            "receivers": spaces.Box(0, max(L - 1, 0), (E,), np.int64),
            "action_mask": spaces.Box(0, 1, (M * M,), np.int8),
        })
        self.action_space = spaces.Discrete(M * M)
        self._w = np.full(L, -1, dtype=np.int64)
        self._a = np.full(L, -1, dtype=np.int64)
        self._usage = np.zeros((M, L))
        self._i = 0

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        self._w[:] = -1
        self._a[:] = -1
        self._usage[:] = 0.0
        self._i = 0
        return self._obs(), {"layer": 0}

    def _fits(self, i: int, w: int, a: int) -> bool:
        lo, hi = i, self.lg.last_use[i] + 1
        wb, ab = self.lg.w_bytes[i], self.lg.a_bytes[i]
        u = self._usage
        if w == a:
            return u[w].max() + wb <= self.caps[w] and u[a, lo:hi].max() + wb + ab <= self.caps[a]
        return u[w].max() + wb <= self.caps[w] and u[a, lo:hi].max() + ab <= self.caps[a]

    def action_mask(self) -> np.ndarray:
        """[M*M] int8: (weight level, activation level) pairs that fit."""
        M = self.M
        if self._i >= len(self.lg):
            return np.ones(M * M, dtype=np.int8)
        return np.array([self._fits(self._i, w, a) for w in range(M) for a in range(M)], dtype=np.int8)

    def step(self, action):
        L, M = len(self.lg), self.M
        if self._i >= L:
            raise RuntimeError("step() called after the episode terminated; call reset()")
        act = int(action)
        if not 0 <= act < M * M:
            raise ValueError(f"action {action!r} is not in 0..{M * M - 1}")
        w, a = divmod(act, M)
        i = self._i
        if not self._fits(i, w, a):
            self._i = L
            return self._obs(), self.invalid_reward, True, False, {"valid": False, "layer": i}
        self._w[i], self._a[i] = w, a
        self._usage[w] += self.lg.w_bytes[i]
        self._usage[a, i:self.lg.last_use[i] + 1] += self.lg.a_bytes[i]
        self._i += 1
        if self._i < L:
            return self._obs(), 0.0, False, False, {"layer": self._i}
        res = evaluate_mapping(self.lg, self.acc, self._w, self._a)
        r = res.throughput / self.baseline.throughput if res.valid else self.invalid_reward
        info = {"valid": res.valid, "throughput": res.throughput, "latency_ms": res.latency_ms,
                "baseline_throughput": self.baseline.throughput, "peak_bytes": res.peak_bytes,
                "w_level": self._w.copy(), "a_level": self._a.copy()}
        return self._obs(), float(r), True, False, info

    def _obs(self) -> dict:
        nodes = self._base.copy()
        L = len(self.lg)
        rows = np.arange(L)
        nodes[rows, self._wcol + np.where(self._w >= 0, self._w, self.M)] = 1.0
        nodes[rows, self._acol + np.where(self._a >= 0, self._a, self.M)] = 1.0
        if self._i < L:
            nodes[self._i, self._next] = 1.0
        return {"nodes": nodes, "senders": self._senders.copy(), "receivers": self._receivers.copy(),
                "action_mask": self.action_mask()}
