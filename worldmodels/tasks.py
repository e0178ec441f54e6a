"""What the training loop needs to know about each environment, one class per environment,
chosen by ``--env.name`` from a registry (adding an environment = one class + one
`register_task` line).

A task builds the real environments of its training and held-out instances (graphs or
netlists, ``--env.graph`` / ``--env.heldout``; its own options in its ``--env.<section>``),
turns a real observation into

- the *graph observation* the model-free policy reads and the world model encodes: the
  encoders' dict (`worldmodels.replay.standard_obs` keys plus ``n_node``/``n_edge``) padded to
  one capacity for all instances, so jitted code compiles once, ``action_mask`` [A+1] with
  the stop slot last (never legal in placement);
- the *replay state*: the trimmed standard observation, the candidate identities
  (rewriting) and the state's cost,

scores a finished real episode (``metric``, higher is better) and computes the
environment's own non-learned baselines in the same units.

| env | metric | baselines |
|---|---|---|
| GraphRewrite-v0 | cost reduction (1 - final / initial cost) | greedy, backtracking |
| DevicePlacement-v0 | speedup over the best single device (0 if out of memory) | single, expert, METIS, m-ETF, annealing |
| MemoryPlacement-v0 | throughput over the all-in-slowest-memory mapping (0 if invalid) | all_slowest, compiler_default |
| MacroPlacement-v0 | -proxy cost | greedy, annealing (time-limited) |
"""
from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np

import systems_envs  # noqa: F401  (registers the environments)
from controllers.base import next_pow2, pad_observation
from controllers.registry import Registry
from worldmodels.replay import PLACEMENT, REWRITE, standard_obs

TASKS = Registry("environment", flag="--env.name")


def register_task(env_id: str):
    """Decorator: ``@register_task("DevicePlacement-v0")`` on a `Task` subclass."""
    return TASKS.register(env_id)


def task_names() -> list[str]:
    return TASKS.names()


def make_task(cfg) -> "Task":
    """The `Task` of ``cfg.env.name`` (ValueError naming the known ones)."""
    return TASKS.get(cfg.env.name)(cfg)


def instance_list(text: str) -> list[str]:
    return [g.strip() for g in text.split(",") if g.strip()]


class Task:
    """Base class (module docstring). Subclasses set ``kind``, ``metric``, ``num_slots``,
    ``episode_steps`` and implement the environment-specific methods."""

    kind: str = PLACEMENT
    metric: str = "score"
    num_rules: int = 0

    def __init__(self, cfg):
        self.cfg = cfg
        self.train = instance_list(cfg.env.graph)
        self.heldout = instance_list(cfg.env.heldout)
        if not self.train:
            raise ValueError("--env.graph: give at least one training instance (comma-separated names)")
        self._caps: tuple[int, int] | None = None

    # ------------------------------------------------------------------ environments
    @property
    def env_kwargs(self) -> dict:
        """Constructor arguments of the real environment besides the instance (replay meta)."""
        return {}

    def make_env(self, instances: list[str]) -> gym.Env:
        """One real environment over ``instances`` (the instance drawn at each reset)."""
        raise NotImplementedError

    def instance_index(self, info: dict, instances: list[str]) -> int:
        name = info.get("graph", "")
        return instances.index(name) if name in instances else 0

    # ------------------------------------------------------------------ observations
    def graph_obs(self, raw: dict) -> dict:
        """Padded graph observation of a real observation (module docstring)."""
        s = standard_obs(raw)
        s["n_node"] = np.array([len(s["node_features"])], np.int32)
        s["n_edge"] = np.array([len(s["senders"])], np.int32)
        n_cap, m_cap = self.capacity()
        return pad_observation(s, n_cap, m_cap)

    def capacity(self) -> tuple[int, int]:
        """(nodes, edges) capacity of every graph observation: a power of two above the
        largest instance (training and held-out)."""
        if self._caps is None:
            sizes = []
            for name in self.train + self.heldout:
                env = self.make_env([name])
                o, _ = env.reset(seed=0)
                s = standard_obs(o)
                sizes.append((len(s["node_features"]), len(s["senders"])))
                env.close()
            self._caps = (next_pow2(max(n for n, _ in sizes) + 1), next_pow2(max(max(e for _, e in sizes), 1)))
        return self._caps

    def train_sizes(self) -> tuple[int, int]:
        """(nodes, edges) of the largest training instance's graph (world-model batches)."""
        sizes = []
        for name in self.train:
            env = self.make_env([name])
            s = standard_obs(env.reset(seed=0)[0])
            sizes.append((len(s["node_features"]), len(s["senders"])))
            env.close()
        return max(n for n, _ in sizes), max(e for _, e in sizes)

    def replay_state(self, raw: dict, env: gym.Env, info: dict) -> tuple[dict, Any, float]:
        """(trimmed standard observation, candidate identities or None, cost) of a real state."""
        return standard_obs(raw), None, float("nan")

    # ------------------------------------------------------------------ scoring
    def episode_metric(self, first_info: dict, last_info: dict, ret: float) -> float:
        """``metric`` of a finished real episode (reset info, last step's info, return)."""
        raise NotImplementedError

    def episode_details(self, first_info: dict, last_info: dict) -> dict:
        """Extra per-episode figures for summary.json (e.g. the step time)."""
        return {}

    def baselines(self, instance: str) -> dict[str, dict]:
        """``{baseline: {metric: value, "seconds": wall}}`` for one instance."""
        raise NotImplementedError

    def demonstrations(self) -> tuple[list[dict], list[int]]:
        """(raw observations, actions) of a non-learned policy on the training instances, for
        ``--loop.bc_steps`` (behaviour cloning)."""
        raise ValueError(f"--loop.bc_steps: {self.cfg.env.name} has no demonstrations "
                         f"(DevicePlacement-v0 has, with --env.device.hint)")

    def outcome_layout(self):
        """The `worldmodels.outcome.Layout` of this environment, or None (no outcome model)."""
        return None


# ============================================================================ rewriting


@register_task("GraphRewrite-v0")
class RewriteTask(Task):
    kind = REWRITE
    metric = "cost_reduction"

    def __init__(self, cfg):
        super().__init__(cfg)
        e0 = self.make_env(self.train).unwrapped
        self.num_slots = e0.max_candidates
        self.num_rules = len(e0.rules)
        self.episode_steps = cfg.env.max_steps
        self._e0 = e0

    @property
    def env_kwargs(self) -> dict:
        c = self.cfg.env
        kw = {"max_steps": c.max_steps, "max_candidates": c.max_candidates, "device": c.cost}
        if c.node_capacity:
            kw["max_nodes"] = c.node_capacity
        if c.edge_capacity:
            kw["max_edges"] = c.edge_capacity
        return kw

    def _obs_capacity(self) -> dict:
        """One observation capacity for every env (training and held-out graphs), so the
        jitted policy and encoder compile once: twice the largest graph, a power of two."""
        if not hasattr(self, "_obs_caps"):
            from systems_envs.graph.load import load_graph
            gs = [load_graph(g) for g in self.train + self.heldout]
            n = max(len(g) for g in gs)
            m = max(sum(len(x.inputs) for x in g.nodes.values()) for g in gs)
            self._obs_caps = {"max_nodes": next_pow2(2 * n + 2), "max_edges": next_pow2(2 * m + 2)}
        return self._obs_caps

    def make_env(self, instances):
        kw = dict(self.env_kwargs)
        for k, v in self._obs_capacity().items():
            kw.setdefault(k, v)
        return gym.make(self.cfg.env.name, graph=list(instances), **kw)

    def capacity(self):
        e = self._e0
        return e.max_nodes, e.max_edges

    def train_sizes(self):
        """Graphs grow under rewriting: room for 1.5x the largest training graph."""
        from systems_envs.graph.load import load_graph
        gs = [load_graph(x) for x in self.train]
        return (int(1.5 * max(len(x) for x in gs)),
                int(1.5 * max(sum(len(v.inputs) for v in x.nodes.values()) for x in gs)))

    def graph_obs(self, raw):
        return raw  # already padded to the environment's capacity, candidates included

    def replay_state(self, raw, env, info):
        from worldmodels.replay import _candidate_ids
        return standard_obs(raw), _candidate_ids(env.unwrapped, self.num_slots), float(info["cost_ms"])

    def episode_metric(self, first_info, last_info, ret):
        return 1.0 - last_info["cost_ms"] / first_info["initial_cost_ms"]

    def episode_details(self, first_info, last_info):
        return {"initial_cost_ms": first_info["initial_cost_ms"], "final_cost_ms": last_info["cost_ms"]}

    def demonstrations(self):
        """Greedy search's own episodes, one per training graph: at every step the legal
        candidate of largest ``candidate_reward`` (the observation's immediate relative cost
        decrease, what greedy ranks by), and the stop action once none is positive. These
        steps run the simulator as the greedy baseline does and are not counted as the
        controller's real steps."""
        raw, actions = [], []
        for g in self.train:
            env = self.make_env([g]).unwrapped
            o, _ = env.reset(seed=0)
            stop = env.max_candidates
            for _ in range(env.max_steps):
                legal = np.flatnonzero(np.asarray(o["action_mask"][:stop]) > 0)
                r = np.asarray(o["candidate_reward"])[legal]
                a = int(legal[np.argmax(r)]) if len(legal) and r.max() > 0 else stop
                raw.append(o)
                actions.append(a)
                if a == stop:
                    break
                o, _, term, trunc, _ = env.step(a)
                if term or trunc:
                    break
            env.close()
        return raw, actions

    def baselines(self, instance):
        from systems_envs.graph.load import load_graph
        from systems_envs.rewrite.search import backtracking, greedy
        e = self._e0
        g = load_graph(instance)
        t0 = time.perf_counter()
        gres = greedy(g, e.rules, e.cost_model)
        t1 = time.perf_counter()
        bres = backtracking(g, e.rules, e.cost_model, budget=self.cfg.loop.search_budget)
        t2 = time.perf_counter()
        return {"greedy": {self.metric: gres.reduction, "seconds": t1 - t0},
                "backtracking": {self.metric: bres.reduction, "seconds": t2 - t1}}


# ============================================================================ placement


class InstancePool(gym.Env):
    """One gymnasium env per instance; each reset draws the instance (seeded), and every
    ``info`` carries ``info["graph"]`` = the instance's name."""

    metadata = {"render_modes": []}

    def __init__(self, names: list[str], envs: list[gym.Env]):
        self.names, self.envs = list(names), list(envs)
        self.action_space = envs[0].action_space
        self.observation_space = envs[0].observation_space
        self.current = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.current = int(self.np_random.integers(len(self.envs)))
        o, info = self.envs[self.current].reset(seed=None if seed is None else int(self.np_random.integers(2**31)))
        return o, {**info, "graph": self.names[self.current]}

    def step(self, action):
        o, r, te, tr, info = self.envs[self.current].step(action)
        return o, r, te, tr, {**info, "graph": self.names[self.current]}

    @property
    def env(self) -> gym.Env:
        """The current instance's environment."""
        return self.envs[self.current].unwrapped


class _GraphPlacementTask(Task):
    """Device and memory placement: one env per graph, fixed episode length per graph."""

    def __init__(self, cfg):
        super().__init__(cfg)
        envs = [self._env(g) for g in self.train]
        self.num_slots = int(envs[0].action_space.n)
        self.episode_steps = max(self._steps(e) for e in envs)

    def _env(self, graph: str) -> gym.Env:
        return gym.make(self.cfg.env.name, graph=graph, **self.env_kwargs).unwrapped

    def make_env(self, instances):
        return InstancePool(instances, [self._env(g) for g in instances])

    def outcome_layout(self):
        from worldmodels.outcome import layout_of
        return layout_of(self._env(self.train[0]))


@register_task("DevicePlacement-v0")
class DeviceTask(_GraphPlacementTask):
    metric = "speedup"
    METHODS = ("single", "expert", "metis", "etf", "anneal")

    @property
    def env_kwargs(self):
        d = self.cfg.env.device
        if d.groups < 0:
            raise ValueError(f"--env.device.groups must be >= 0 (0 = one op per step), got {d.groups}")
        kw = {"devices": d.devices, "reward": d.reward, "groups": d.groups or None}
        return {**kw, "hint": d.hint} if d.hint != "none" else kw

    @staticmethod
    def _steps(env):
        return len(env.members)

    def episode_metric(self, first_info, last_info, ret):
        return last_info["single_device_ms"] / last_info["step_time_ms"] if last_info.get("valid") else 0.0

    def demonstrations(self):
        """The hint baseline's own placement: action 0 (keep the hint's device) at every step
        of every training graph. The last group is not stepped, so the simulator never runs."""
        if self.cfg.env.device.hint == "none":
            return super().demonstrations()
        raw = []
        for g in self.train:
            env = self._env(g)
            o, _ = env.reset(seed=0)
            for k in range(len(env.members)):
                raw.append(o)
                if k + 1 < len(env.members):
                    o = env.step(0)[0]
        return raw, [0] * len(raw)

    def episode_details(self, first_info, last_info):
        return {"step_time_ms": last_info["step_time_ms"] if last_info.get("valid") else None}

    def baselines(self, instance):
        from systems_envs.placement.baselines import run_baseline
        env = self._env(instance)
        cg, out = env.cg, {}
        for m in self.METHODS:
            t0 = time.perf_counter()
            kw = {"iters": self.cfg.env.device.anneal_iters} if m == "anneal" else {}
            _, res = run_baseline(cg, m, 0, **kw)
            ok = bool(res.valid)
            out[m] = {self.metric: env.single_ms / res.step_time_ms if ok else 0.0,
                      "step_time_ms": res.step_time_ms if ok else None, "seconds": time.perf_counter() - t0}
        return out


@register_task("MemoryPlacement-v0")
class MemoryTask(_GraphPlacementTask):
    metric = "speedup"

    @property
    def env_kwargs(self):
        return {"invalid_reward": self.cfg.env.memory.invalid_reward}

    @staticmethod
    def _steps(env):
        return len(env.lg)

    def episode_metric(self, first_info, last_info, ret):
        if not last_info.get("valid") or "throughput" not in last_info:
            return 0.0
        return last_info["throughput"] / last_info["baseline_throughput"]

    def episode_details(self, first_info, last_info):
        return {"latency_ms": last_info.get("latency_ms") if last_info.get("valid") else None}

    def baselines(self, instance):
        from systems_envs.placement.memory import evaluate_mapping, greedy_mapping
        env = self._env(instance)
        t0 = time.perf_counter()
        w, a = greedy_mapping(env.lg, env.acc)
        res = evaluate_mapping(env.lg, env.acc, w, a)
        t1 = time.perf_counter()
        return {"all_slowest": {self.metric: 1.0, "latency_ms": env.baseline.latency_ms, "seconds": 0.0},
                "compiler_default": {self.metric: res.throughput / env.baseline.throughput if res.valid else 0.0,
                                     "latency_ms": res.latency_ms if res.valid else None, "seconds": t1 - t0}}


# ============================================================================ macro placement


@register_task("MacroPlacement-v0")
class MacroTask(Task):
    """Instances: ``ariane133`` (shipped) or ``gen:SEED`` (a generated netlist with the
    ``--env.macro.*`` generator sizes)."""

    metric = "neg_proxy_cost"

    def __init__(self, cfg):
        super().__init__(cfg)
        self._cases: dict[str, tuple] = {}
        all_names = self.train + self.heldout
        probe = self._raw_env(all_names)
        self._caps_kw = {"max_nodes": probe.max_nodes, "max_edges": probe.max_edges, "max_cells": probe.max_cells}
        self.num_slots = probe.max_cells
        self.episode_steps = max(len(c.order) for c in probe.cases)
        self._names = {c.nl.name: n for c, n in zip(probe.cases, all_names)}

    def _case(self, name: str):
        from systems_envs.chip.env import SHIPPED, load_shipped
        from systems_envs.chip.generator import generate_netlist
        if name not in self._cases:
            if name in SHIPPED:
                self._cases[name] = load_shipped(name)
            elif name.startswith("gen:") and name[4:].isdigit():
                m = self.cfg.env.macro
                self._cases[name] = generate_netlist(num_hard=m.num_hard, num_soft=m.num_soft, num_ports=m.num_ports,
                                                     num_nets=m.num_nets, max_grid=m.max_grid, seed=int(name[4:]))
            else:
                raise ValueError(f"--env.graph/--env.heldout: unknown netlist {name!r} for MacroPlacement-v0 "
                                 f"(shipped: {', '.join(SHIPPED)}; or gen:SEED for a generated one)")
        return self._cases[name]

    @property
    def env_kwargs(self):
        m = self.cfg.env.macro
        return {"fd_steps": m.fd_steps, "dead_end_reward": m.dead_end_reward}

    def _raw_env(self, instances, **caps):
        from systems_envs.chip.env import MacroPlacementEnv
        return MacroPlacementEnv(netlists=[self._case(n) for n in instances], **self.env_kwargs, **caps)

    def make_env(self, instances):
        return self._raw_env(instances, **self._caps_kw)

    def instance_index(self, info, instances):
        name = self._names.get(info.get("netlist", ""), "")
        return instances.index(name) if name in instances else 0

    def capacity(self):
        return self._caps_kw["max_nodes"], self._caps_kw["max_edges"]

    def episode_metric(self, first_info, last_info, ret):
        return float(ret)

    def episode_details(self, first_info, last_info):
        return {"proxy_cost": last_info.get("proxy_cost")}

    def baselines(self, instance):
        from systems_envs.chip.baselines import anneal, greedy
        from systems_envs.chip.force_directed import ForceDirected
        nl, header, pl = self._case(instance)
        m = self.cfg.env.macro
        fd = ForceDirected(nl, header)
        g = greedy(nl, header, pl, fd=fd)
        a = anneal(nl, header, g.placement, time_limit=m.anneal_seconds, seed=0, fd=fd)
        return {"greedy": {self.metric: -g.costs.proxy_cost, "seconds": g.seconds},
                "anneal": {self.metric: -a.costs.proxy_cost, "seconds": a.seconds + g.seconds}}
