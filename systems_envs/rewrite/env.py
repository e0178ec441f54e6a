"""``GraphRewrite-v0``: TASO-style graph rewriting as a gymnasium environment.

Each step picks one candidate rewrite (or stop) of the current graph. The observation is
a padded graph plus the candidate list and an action mask (see
:mod:`systems_envs.rewrite.observation` for the arrays, their shapes and padding).

* Action: ``Discrete(max_candidates + 1)``; ``a < max_candidates`` applies candidate
  ``a`` (the candidates in :class:`CandidateIndex` order; those beyond
  ``max_candidates`` are dropped, i.e. never offered); the last action stops. A masked
  action raises ValueError. ``action_space.sample()`` without a mask samples a legal
  action of the current state.
* Reward: ``(previous cost - new cost) / initial cost``, so an episode's rewards sum to
  its total relative cost reduction. Costs in ms from the cost model named by ``device``
  (:func:`~systems_envs.graph.cost.make_cost_model`: analytic roofline ``v100`` by
  default; ``ort-cpu`` for onnxruntime on this CPU; ``e2e`` for whole-graph timings).
* ``terminated``: stop chosen or no candidate left. ``truncated``: ``max_steps`` reached,
  or the graph outgrew the observation capacity (``info["clipped"]``).
* ``candidate_reward`` (observation): the reward each offered candidate would give, i.e.
  its immediate relative cost decrease (exact; cached per candidate and recomputed only for
  candidates near each rewrite, :mod:`systems_envs.rewrite.deltas`).
* ``info``: ``cost_ms``, ``initial_cost_ms``, ``n_candidates`` (all, before the capacity
  cut), ``graph`` (name); after a rewrite ``rule`` (name) and ``location`` (node ids).

``graph`` may be a built-in name, a ``.model``/``.onnx`` path, a Graph, or a list of
these (one is drawn per episode with the environment's ``np_random``).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from systems_envs.graph.cost import CostModel, make_cost_model
from systems_envs.graph.ir import Graph, GraphError
from systems_envs.rewrite.candidates import CandidateIndex, prune_dead
from systems_envs.rewrite.deltas import CandidateDeltas
from systems_envs.rewrite.observation import ObservationBuilder, observation_space
from systems_envs.rewrite.rule import Rule

GraphSpec = str | Path | Graph


class MaskedDiscrete(gym.spaces.Discrete):
    """Discrete space whose unmasked ``sample()`` draws among the env's legal actions."""

    def __init__(self, n: int, mask_fn, seed=None):
        super().__init__(n, seed=seed)
        self._mask_fn = mask_fn

    def sample(self, mask=None, probability=None):
        if mask is None and probability is None:
            mask = self._mask_fn()
        return super().sample(mask=mask, probability=probability)


def _load(spec: GraphSpec) -> Graph:
    if isinstance(spec, Graph):
        return spec.copy()
    from systems_envs.graph.load import load_graph

    return load_graph(spec)


class GraphRewriteEnv(gym.Env):
    """Graph rewriting environment (see the module docstring).

    Args:
      graph: graph spec or list of specs.
      rules: rule list (default ``default_rules()``); rule id = index.
      max_nodes, max_edges, max_candidates: observation capacities. A graph whose nodes
        (inputs and weights included) exceed ``max_nodes - 1`` or whose edges exceed
        ``max_edges`` raises GraphError naming it.
      max_steps: episode length limit (truncation).
      device: cost model name (:data:`~systems_envs.graph.cost.COST_MODEL_NAMES`; ignored if
        ``cost_model`` given).
      cost_model: a CostModel to use instead.
      candidate_rewards: compute ``candidate_reward`` (False: zeros, and no look-ahead cost;
        always zeros under a ``whole_graph`` cost model such as ``e2e``).
    """

    metadata = {"render_modes": []}

    def __init__(self, graph: GraphSpec | Sequence[GraphSpec] = "squeezenet", rules: Sequence[Rule] | None = None,
                 max_nodes: int = 2048, max_edges: int = 4096, max_candidates: int = 512, max_steps: int = 100,
                 device: str = "v100", cost_model: CostModel | None = None, candidate_rewards: bool = True):
        if min(max_nodes, max_edges, max_candidates, max_steps) < 1 or max_nodes < 2:
            raise ValueError("max_nodes (>= 2), max_edges, max_candidates and max_steps must be positive")
        specs = list(graph) if isinstance(graph, (list, tuple)) else [graph]
        if not specs:
            raise ValueError("graph: empty list of graphs")
        if rules is None:
            from systems_envs.rewrite.ruleset import default_rules

            rules = default_rules()
        self.rules = list(rules)
        self.cost_model = cost_model or make_cost_model(device)
        self.max_nodes, self.max_edges, self.max_candidates, self.max_steps = max_nodes, max_edges, max_candidates, max_steps
        self.graphs: list[Graph] = []
        for spec in specs:
            g = _load(spec)
            prune_dead(g)
            n_edges = sum(len(n.inputs) for n in g.nodes.values())
            if len(g) > max_nodes - 1 or n_edges > max_edges:
                raise GraphError(f"graph {g.name!r} ({spec if not isinstance(spec, Graph) else 'Graph'}) has "
                                 f"{len(g)} nodes and {n_edges} edges; capacity is max_nodes - 1 = {max_nodes - 1} "
                                 f"nodes and max_edges = {max_edges} edges")
            self.graphs.append(g)
        self.observation_space = observation_space(max_nodes, max_edges, max_candidates)
        self.action_space = MaskedDiscrete(max_candidates + 1, self._current_mask)
        self._builder = ObservationBuilder(max_nodes, max_edges, max_candidates)
        self._index: CandidateIndex | None = None
        # A whole-graph cost model has no per-node costs to look ahead with: each candidate's
        # reward would be one more end-to-end measurement, so the feature is zeros there.
        self._deltas = CandidateDeltas() if candidate_rewards and not self.cost_model.whole_graph else None
        self._mask = np.zeros(max_candidates + 1, np.int8)
        self._mask[-1] = 1
        self._initial_costs: dict[int, float] = {}

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        k = 0 if len(self.graphs) == 1 else int(self.np_random.integers(len(self.graphs)))
        self._builder.clear_cache()
        if self._deltas is not None:
            self._deltas.clear()
        self._index = CandidateIndex(self.graphs[k].copy(), self.rules, self.cost_model)
        self._initial_cost = self._index.cost
        self._steps = 0
        obs, _ = self._observe()
        return obs, self._info()

    def step(self, action):
        if self._index is None:
            raise RuntimeError("GraphRewriteEnv.step called before reset")
        a = int(action)
        if not 0 <= a < len(self._mask) or not self._mask[a]:
            raise ValueError(f"action {a} is illegal in this state: the action mask allows "
                             f"{int(self._mask[:-1].sum())} candidate(s) (0..{int(self._mask[:-1].sum()) - 1}) "
                             f"and stop ({len(self._mask) - 1})")
        self._steps += 1
        info_extra = {}
        if a == self.max_candidates:
            reward, terminated = 0.0, True
        else:
            before = self._index.cost
            info_extra = dict(zip(("rule", "location"), self._index.describe(a)))
            effect = self._deltas.effect(self._index, a) if self._deltas is not None else None
            self._index.apply(a)
            if effect is not None:
                self._deltas.applied(effect)
            reward = (before - self._index.cost) / self._initial_cost if self._initial_cost > 0 else 0.0
            terminated = len(self._index) == 0
        obs, clipped = self._observe()
        truncated = (self._steps >= self.max_steps or clipped) and not terminated
        info = self._info()
        info.update(info_extra, clipped=clipped)
        return obs, float(reward), terminated, truncated, info

    def clone(self) -> "GraphRewriteEnv":
        """An independent environment in the current state, for searches over real steps:
        the candidate index (and its graph), the look-ahead cache, the mask and the step
        counter are copied; graphs, rules, cost model and the observation builder's row cache
        (keyed by immutable nodes) are shared. Stepping the clone leaves ``self`` unchanged."""
        if self._index is None:
            raise RuntimeError("GraphRewriteEnv.clone called before reset")
        new = copy.copy(self)
        new._index = self._index.copy()
        new._deltas = copy.copy(self._deltas)   # its cache dict is replaced, never mutated, on update
        new._mask = self._mask.copy()
        return new

    # ------------------------------------------------------------------ helpers
    @property
    def graph(self) -> Graph:
        """The current graph (do not mutate)."""
        return self._index.graph

    @property
    def index(self) -> CandidateIndex:
        """The current candidate index (do not mutate)."""
        return self._index

    def _current_mask(self) -> np.ndarray:
        return self._mask.copy()

    def _observe(self):
        changes = self._deltas.compute(self._index, self.max_candidates) if self._deltas is not None else None
        obs, clipped = self._builder.build(self._index, self._initial_cost, self._steps, self.max_steps, changes)
        self._mask = obs["action_mask"].copy()
        return obs, clipped

    def _info(self) -> dict:
        return {"cost_ms": self._index.cost, "initial_cost_ms": self._initial_cost,
                "n_candidates": len(self._index), "graph": self._index.graph.name}
