"""Invariants behind the fast paths: rule anchor_ops hints, Graph.topo_order's fast sort,
observation layout after rewrites, and backtracking's exact best cost on a real graph."""
from __future__ import annotations

import numpy as np
import pytest

from systems_envs.graph.cost import CostModel
from systems_envs.graph.ir import topological_sort
from systems_envs.graph.models import BUILTIN_GRAPHS, build_graph
from systems_envs.rewrite.candidates import CandidateIndex
from systems_envs.rewrite.rules import builtin_rules
from systems_envs.rewrite.ruleset import default_rules
from systems_envs.rewrite.search import backtracking, greedy


def _random_walk(name: str, rules, steps: int, seed: int):
    """Yield the CandidateIndex after each of ``steps`` random rewrites of a built-in graph."""
    rng = np.random.default_rng(seed)
    idx = CandidateIndex(build_graph(name), rules, CostModel())
    for _ in range(steps):
        if not len(idx):
            return
        idx.apply(int(rng.integers(len(idx))))
        yield idx


def test_every_builtin_rule_declares_sound_anchor_ops():
    rules = builtin_rules()
    for r in rules:
        assert isinstance(getattr(r, "anchor_ops", None), frozenset) and r.anchor_ops, r.name
    for name in BUILTIN_GRAPHS:
        g = build_graph(name)
        for nid, node in g.nodes.items():
            for r in rules:
                if node.op not in r.anchor_ops:
                    assert r.match_at(g, nid) == [], (r.name, name, node.op)


@pytest.mark.parametrize("name", ["inception_v3", "nasrnn"])
def test_fast_topo_order_equals_reference_sort_after_rewrites(name):
    for idx in _random_walk(name, default_rules(), steps=15, seed=1):
        g = idx.graph
        ref = topological_sort({nid: [s for s, _ in n.inputs] for nid, n in g.nodes.items()})
        assert g.topo_order() == ref


def test_observation_candidate_positions_after_rewrites():
    from systems_envs.rewrite.observation import MATCH_NODES, ObservationBuilder

    builder = ObservationBuilder(2048, 4096, 1024)
    for idx in _random_walk("squeezenet", default_rules(), steps=10, seed=2):
        obs, clipped = builder.build(idx, 1.0, 0, 100)
        assert not clipped
        pos = {nid: p for p, nid in enumerate(idx.graph.topo_order())}
        cands = idx.candidates[:1024]
        for j, (rid, m) in enumerate(cands):
            want = [pos[n] for n in m.nodes[:MATCH_NODES]] + [-1] * (MATCH_NODES - len(m.nodes[:MATCH_NODES]))
            assert obs["candidate_rule"][j] == rid and list(obs["candidate_nodes"][j]) == want
        n_edge = int(obs["n_edge"][0])
        edges = {(pos[s], pos[c]) for c, node in idx.graph.nodes.items() for s, _ in node.inputs}
        assert set(zip(obs["senders"][:n_edge].tolist(), obs["receivers"][:n_edge].tolist())) == edges


def test_backtracking_on_real_graph_is_exact_and_not_worse_than_start():
    g = build_graph("squeezenet")
    rules = default_rules(taso=False)
    bt = backtracking(g, rules, budget=60)
    assert bt.cost_after <= bt.cost_before and 1 <= bt.expanded <= 60
    assert bt.cost_after == pytest.approx(CostModel().graph_cost(bt.graph), rel=1e-9)
    assert CandidateIndex(bt.graph.copy(), rules, CostModel()).live_ops() <= 2 * g.num_ops()
    assert bt.cost_after <= greedy(g, rules, max_steps=1).cost_after  # at least one greedy step
