"""CandidateIndex: the incremental candidate set equals a full re-match after every rewrite.

Toy rules and random graphs defined here are reused by the search/env tests; the real
rule library is used too when it is available.
"""
from __future__ import annotations

import numpy as np
import pytest

from systems_envs.graph.cost import CostModel
from systems_envs.graph.executor import execute
from systems_envs.graph.ir import Graph
from systems_envs.rewrite.candidates import CandidateIndex
from systems_envs.rewrite.rule import Match, Rule


# ----------------------------------------------------------------------------- toy rules
def _single_use(g: Graph, nid: int) -> bool:
    return len(g.uses(nid)) == 1 and not g.is_output(nid)


class FuseConvRelu(Rule):
    """relu(conv(x, w)) -> conv(x, w, activation=relu)."""

    name, family, radius = "toy_fuse_conv_relu", "fusion", 1
    anchor_ops = frozenset({"relu"})

    def match_at(self, g, nid):
        n = g[nid]
        if n.op != "relu":
            return []
        src = g[n.inputs[0][0]]
        if src.op != "conv2d" or src.attrs["activation"] != "none" or not _single_use(g, src.id):
            return []
        return [Match(self.name, (nid, src.id))]

    def apply(self, g, m):
        relu, conv = g[m.nodes[0]], g[m.nodes[1]]
        attrs = {k: v for k, v in conv.attrs.items()}
        attrs["activation"] = "relu"
        new = g.add("conv2d", conv.inputs, **attrs)
        g.replace_uses((relu.id, 0), (new, 0))
        return {new}


class UnfuseConvRelu(Rule):
    """conv(x, w, activation=relu) -> relu(conv(x, w)): costs more, enables merges."""

    name, family, radius = "toy_unfuse_conv_relu", "fusion", 0

    def match_at(self, g, nid):
        n = g[nid]
        if n.op == "conv2d" and n.attrs["activation"] == "relu":
            return [Match(self.name, (nid,))]
        return []

    def apply(self, g, m):
        conv = g[m.nodes[0]]
        attrs = dict(conv.attrs)
        attrs["activation"] = "none"
        c = g.add("conv2d", conv.inputs, **attrs)
        r = g.add("relu", [c])
        g.replace_uses((conv.id, 0), (r, 0))
        return {c, r}


class ReluIdempotent(Rule):
    """relu(relu(x)) -> relu(x)."""

    name, family, radius = "toy_relu_relu", "elementwise", 1

    def match_at(self, g, nid):
        n = g[nid]
        if n.op == "relu" and g[n.inputs[0][0]].op == "relu":
            return [Match(self.name, (nid, n.inputs[0][0]))]
        return []

    def apply(self, g, m):
        g.replace_uses((m.nodes[0], 0), (m.nodes[1], 0))
        return set()


class MergeParallelConvs(Rule):
    """conv(x, w1), conv(x, w2) with equal attributes -> split(conv(x, concat(w1, w2)))."""

    name, family, radius = "toy_merge_convs", "merge_conv", 2

    def match_at(self, g, nid):
        a = g[nid]
        if a.op != "conv2d" or len(a.inputs) != 2:
            return []
        out = []
        for cid, slot in g.tensor_uses(a.inputs[0]):
            b = g[cid]
            if (cid > nid and slot == 0 and b.op == "conv2d" and len(b.inputs) == 2 and b.attr_key() == a.attr_key()
                    and g.shape(b.inputs[1])[1:] == g.shape(a.inputs[1])[1:] and a.attrs["groups"] == 1):
                out.append(Match(self.name, (nid, cid)))
        return out

    def apply(self, g, m):
        a, b = g[m.nodes[0]], g[m.nodes[1]]
        w = g.add("concat", [a.inputs[1], b.inputs[1]], axis=0)
        c = g.add("conv2d", [a.inputs[0], w], **dict(a.attrs))
        s = g.add("split", [c], axis=1, sizes=(a.shape[1], b.shape[1]))
        g.replace_uses((a.id, 0), (s, 0))
        g.replace_uses((b.id, 0), (s, 1))
        return {w, c, s}


def toy_rules() -> list[Rule]:
    return [FuseConvRelu(), MergeParallelConvs(), ReluIdempotent(), UnfuseConvRelu()]


def random_graph(seed: int, n_layers: int = 12, channels: int = 4, size: int = 6) -> Graph:
    """A small random branching CNN (convs, relus, adds) with weights; several outputs."""
    rng = np.random.default_rng(seed)
    g = Graph(f"random{seed}")
    tensors = [g.input("x", (1, channels, size, size))]
    for i in range(n_layers):
        x = tensors[int(rng.integers(len(tensors)))]
        kind = rng.choice(["conv", "conv", "relu", "add", "convrelu"])
        if kind in ("conv", "convrelu"):
            k = int(rng.choice([1, 3]))
            w = g.weight(f"w{i}", (channels, channels, k, k))
            act = "relu" if rng.random() < 0.3 else "none"
            y = g.add("conv2d", [x, w], pads=(k // 2,) * 4, activation=act)
            if kind == "convrelu":
                y = g.add("relu", [y])
        elif kind == "relu":
            y = g.add("relu", [x])
        else:
            y = g.add("add", [x, tensors[int(rng.integers(len(tensors)))]])
        tensors.append(y)
    used = {s for n in g.nodes.values() for s, _ in n.inputs}
    g.set_outputs([t for t in tensors[1:] if t not in used] or [tensors[-1]])
    return g


def _key(cands):
    return [(c.rule_id, c.match) for c in cands]


def _check_random_episode(graph: Graph, rules, seed: int, steps: int):
    rng = np.random.default_rng(seed)
    ref = execute(graph, seed=1, dtype=np.float64)
    idx = CandidateIndex(graph.copy(), rules, CostModel())
    for _ in range(steps):
        assert _key(idx.candidates) == _key(idx.full_rematch())
        assert idx.cost == pytest.approx(CostModel().graph_cost(idx.graph), rel=1e-9)
        if not len(idx):
            break
        idx.apply(int(rng.integers(len(idx))))
        idx.graph.validate()
    for a, b in zip(ref, execute(idx.graph, seed=1, dtype=np.float64)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_incremental_equals_full_rematch_toy(seed):
    _check_random_episode(random_graph(seed, n_layers=14), toy_rules(), seed, steps=25)


def test_copy_apply_leaves_original_untouched():
    g = random_graph(3)
    idx = CandidateIndex(g, toy_rules(), CostModel())
    assert len(idx) > 0
    h, n, cost = g.hash(), len(idx), idx.cost
    child = idx.apply(0, copy=True)
    assert g.hash() == h and len(idx) == n and idx.cost == cost
    assert child.graph.hash() != h
    assert _key(child.candidates) == _key(child.full_rematch())


def test_order_is_sorted_by_rule_then_anchor():
    idx = CandidateIndex(random_graph(1, n_layers=20), toy_rules())
    pos = {n: i for i, n in enumerate(idx.graph.topo_order())}
    keys = [(c.rule_id, pos[c.match.nodes[0]], c.match.nodes) for c in idx.candidates]
    assert keys == sorted(keys)
    with pytest.raises(IndexError):
        idx.apply(len(idx))


@pytest.mark.parametrize("name", ["squeezenet", "resnet50", "bert"])
def test_incremental_equals_full_rematch_real(name, real_library):
    rules, build_graph = real_library
    _check_random_episode(build_graph(name), rules, seed=0, steps=8)
