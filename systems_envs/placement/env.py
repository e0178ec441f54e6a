"""``DevicePlacement-v0``: place a graph's operators on devices, one op (or group) per step.

Episode: the placed operators of the graph (``CompiledGraph.op_ids``, topological order)
are split into groups (``groups=None``: one op per group; an int k: chunks of k
consecutive ops; an int array [n]: a group id per op, groups visited in order of their
first op). Each step assigns the current group to device ``action``. After the last
group the placement is simulated (see :mod:`systems_envs.placement.simulator`) and the
episode terminates with the only non-zero reward:

* ``neg_runtime``: ``-step_time_ms``
* ``neg_sqrt_runtime``: ``-sqrt(step_time_ms)`` (the hierarchical planner's reward)
* ``speedup``: ``single_ms / step_time_ms``, single_ms = best single-device step time
  (computed ignoring memory)

An out-of-memory placement gets ``oom_reward`` (default: the reward of a runtime
100 x single_ms, and -1 for ``speedup``).

``hint`` (a name in :data:`~systems_envs.placement.baselines.BASELINES`, e.g. ``"etf"``):
a baseline-derived feature and a refinement action space. The env runs that baseline
(seed 0) once at construction; ``hint_placement`` [n] is its device per op. Each node then
carries the one-hot of its hint device (D more columns), and action ``a`` places every op
``i`` of the current group on device ``(hint[i] + a) mod D``: action 0 everywhere
reproduces the baseline's op-level placement exactly, other actions rotate a group's ops
across the devices (with groups, the policy refines the baseline instead of replacing it
by one device per group).

Observation (a dict; n ops, E op-to-op edges, D devices, K = number of op types):
  ``nodes`` [n, K + 4 + D] float32 ([n, K + 4 + 2D] with a hint): op type one-hot,
  log1p(cost us on the fastest device), log1p(output MB), one-hot current device (D
  columns) + unplaced flag, is-next flag, then (hint only) the one-hot hint device;
  ``senders``, ``receivers`` [E] int64; ``edges`` [E, 1] float32 log1p(MB sent);
  ``action_mask`` [D] int8: actions whose devices have room for the current group: on
  each device the group's ops would go to, the resident weights of the ops already placed
  there, plus the new weights, plus the bytes those ops read and write fit its capacity (a
  lower bound on the true peak, which the simulator checks at the end); all ones if none has room. Any action is accepted; an
  unmasked one that overflows memory shows up as out-of-memory at the end.
"""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from systems_envs.graph.ir import Graph
from systems_envs.graph.ops import OPS
from systems_envs.placement.devices import DeviceSet
from systems_envs.placement.simulator import DEFAULT_OP_OVERHEAD_MS, CompiledGraph, compile_graph, simulate

OP_TYPES = sorted(OPS)
REWARDS = ("neg_runtime", "neg_sqrt_runtime", "speedup")


def reward_of(kind: str, step_ms: float, single_ms: float) -> float:
    """The episode reward for a valid step time (see the module docstring)."""
    if kind == "neg_runtime":
        return -step_ms
    if kind == "neg_sqrt_runtime":
        return -math.sqrt(step_ms)
    if kind == "speedup":
        return single_ms / step_ms
    raise ValueError(f"unknown reward {kind!r} (known: {', '.join(REWARDS)})")


class DevicePlacementEnv(gym.Env):
    """Device placement as a sequential decision problem (see the module docstring).

    Args:
      graph: a Graph or a name for :func:`~systems_envs.placement.graphs.load_placement_graph`.
      devices: device-set preset name or DeviceSet.
      reward: one of ``neg_runtime``, ``neg_sqrt_runtime``, ``speedup``.
      groups: None, a chunk size, or a group id per op.
      oom_reward: reward of an out-of-memory placement (default as above).
      per_op_overhead_ms: fixed per-op overhead of the simulator.
      hint: None or a baseline name: the hint feature and relative actions (see above).
    """

    metadata = {"render_modes": []}

    def __init__(self, graph: Graph | str = "inception_v3", devices: DeviceSet | str = "gpu4",
                 reward: str = "neg_runtime", groups=None, oom_reward: float | None = None,
                 per_op_overhead_ms: float = DEFAULT_OP_OVERHEAD_MS, hint: str | None = None):
        from systems_envs.placement.baselines import BASELINES

        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r} (known: {', '.join(REWARDS)})")
        if isinstance(graph, str):
            from systems_envs.placement.graphs import load_placement_graph

            graph = load_placement_graph(graph)
        self.cg: CompiledGraph = compile_graph(graph, devices, per_op_overhead_ms)
        cg = self.cg
        n, D = cg.n, cg.num_devices
        self.reward_kind = reward
        self.single_ms = float(cg.serial_ms().min())
        if oom_reward is None:
            oom_reward = -1.0 if reward == "speedup" else reward_of(reward, 100 * self.single_ms, self.single_ms)
        self.oom_reward = float(oom_reward)
        self.group_of = self._groups(groups, n)
        self.num_groups = int(self.group_of.max()) + 1
        self.members = [np.flatnonzero(self.group_of == k) for k in range(self.num_groups)]
        # static features
        k = len(OP_TYPES)
        if hint is not None and hint not in BASELINES:
            raise ValueError(f"hint: unknown baseline {hint!r} (known: {', '.join(BASELINES)})")
        self.hint = hint
        self._base = np.zeros((n, k + 4 + D + (D if hint else 0)), dtype=np.float32)
        self._base[np.arange(n), [OP_TYPES.index(t) for t in cg.op_types]] = 1.0
        self._base[:, k] = np.log1p(1e3 * cg.dur_ms[:, int(np.argmin(cg.serial_ms()))])
        out_b = np.bincount(cg.tensor_producer, weights=cg.tensor_bytes, minlength=n)
        self._base[:, k + 1] = np.log1p(out_b / 1e6)
        self._dev_col = k + 2
        self._unplaced_col = k + 2 + D
        self._next_col = k + 3 + D
        self.hint_placement = None
        if hint:
            self.hint_placement = BASELINES[hint](cg, 0).astype(np.int64)
            self._base[np.arange(n), k + 4 + D + self.hint_placement] = 1.0
        e = cg.edges
        self._senders = np.array([i for i, _, _ in e], dtype=np.int64)
        self._receivers = np.array([j for _, j, _ in e], dtype=np.int64)
        self._edges = np.log1p(np.array([[b / 1e6] for _, _, b in e], dtype=np.float32).reshape(-1, 1))
        in_b = np.bincount(cg.cons_op, weights=cg.tensor_bytes[cg.cons_tensor], minlength=n)
        self._work = in_b + out_b  # [n] bytes an op reads and writes
        self._res_of = [[] for _ in range(n)]
        for r, o in zip(cg.res_tensor.tolist(), cg.res_op.tolist()):
            self._res_of[o].append(r)
        ne = len(e)
        self.observation_space = spaces.Dict({
            "nodes": spaces.Box(0.0, 1e6, (n, self._base.shape[1]), np.float32),
            "senders": spaces.Box(0, max(n - 1, 0), (ne,), np.int64),
            "receivers": spaces.Box(0, max(n - 1, 0), (ne,), np.int64),
            "edges": spaces.Box(0.0, 1e6, (ne, 1), np.float32),
            "action_mask": spaces.Box(0, 1, (D,), np.int8),
        })
        self.action_space = spaces.Discrete(D)
        self._placement = np.full(n, -1, dtype=np.int64)
        self._res_mark = np.zeros((len(cg.res_bytes), D), dtype=bool)
        self._k = 0

    @staticmethod
    def _groups(groups, n: int) -> np.ndarray:
        if groups is None:
            return np.arange(n, dtype=np.int64)
        if isinstance(groups, (int, np.integer)):
            if groups < 1:
                raise ValueError(f"groups: chunk size must be >= 1, got {groups}")
            return np.arange(n, dtype=np.int64) // int(groups)
        g = np.asarray(groups)
        if g.shape != (n,) or not np.issubdtype(g.dtype, np.integer):
            raise ValueError(f"groups: expected an int array of shape ({n},), got {g.dtype} {g.shape}")
        _, first = np.unique(g, return_index=True)
        order = np.unique(g)[np.argsort(first)]
        remap = {int(v): k for k, v in enumerate(order)}
        return np.array([remap[int(v)] for v in g], dtype=np.int64)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        self._placement[:] = -1
        self._res_mark[:] = False
        self._k = 0
        return self._obs(), {"group": 0}

    def step(self, action):
        if self._k >= self.num_groups:
            raise RuntimeError("step() called after the episode terminated; call reset()")
        d = int(action)
        if not 0 <= d < self.cg.num_devices:
            raise ValueError(f"action {action!r} is not a device index in 0..{self.cg.num_devices - 1}")
        ops = self.members[self._k]
        dev = self._devices_of(ops, d)
        self._placement[ops] = dev
        for i, di in zip(ops, dev):
            self._res_mark[self._res_of[i], di] = True
        self._k += 1
        if self._k < self.num_groups:
            return self._obs(), 0.0, False, False, {"group": self._k}
        res = simulate(self.cg, self._placement, check=False)
        r = reward_of(self.reward_kind, res.step_time_ms, self.single_ms) if res.valid else self.oom_reward
        info = {"step_time_ms": res.step_time_ms, "valid": res.valid, "single_device_ms": self.single_ms,
                "peak_memory_bytes": res.peak_memory_bytes, "transferred_bytes": res.transferred_bytes,
                "placement": self._placement.copy()}
        return self._obs(), float(r), True, False, info

    # ------------------------------------------------------------------ helpers
    def _devices_of(self, ops: np.ndarray, action: int) -> np.ndarray:
        """[len(ops)] device of each op under ``action`` (the device itself, or the hint's
        device shifted by ``action`` with a hint)."""
        if self.hint_placement is None:
            return np.full(len(ops), action, dtype=np.int64)
        return (self.hint_placement[ops] + action) % self.cg.num_devices

    def action_mask(self) -> np.ndarray:
        """[D] int8: actions whose devices have room for the current group (module docstring)."""
        D = self.cg.num_devices
        if self._k >= self.num_groups:
            return np.ones(D, dtype=np.int8)
        ops = self.members[self._k]
        used = (self._res_mark * self.cg.res_bytes[:, None]).sum(axis=0)
        mask = np.zeros(D, dtype=np.int8)
        for a in range(D):
            dev = self._devices_of(ops, a)
            ok = True
            for d in np.unique(dev):
                mine = ops[dev == d]
                res = sorted({r for i in mine for r in self._res_of[i]})
                extra = (~self._res_mark[res, d] * self.cg.res_bytes[res]).sum() if res else 0.0
                ok &= bool(used[d] + extra + self._work[mine].sum() <= self.cg.devices.capacity[d])
            mask[a] = ok
        return mask if mask.any() else np.ones(D, dtype=np.int8)

    def _obs(self) -> dict:
        nodes = self._base.copy()
        placed = self._placement >= 0
        nodes[np.flatnonzero(placed), self._dev_col + self._placement[placed]] = 1.0
        nodes[~placed, self._unplaced_col] = 1.0
        if self._k < self.num_groups:
            nodes[self.members[self._k], self._next_col] = 1.0
        return {"nodes": nodes, "senders": self._senders.copy(), "receivers": self._receivers.copy(),
                "edges": self._edges.copy(), "action_mask": self.action_mask()}
