"""Property: any sequence of applicable hand-written rewrites keeps what a graph computes.

Random graphs are built by a hypothesis strategy from the ops the rules touch (conv2d,
matmul, linear, add, mul, relu/sigmoid/tanh, batchnorm, concat, split, transpose); the
rewrites are drawn among all matches of all rules, applied, pruned and validated, up to
8 steps; outputs are compared in float64. The same is done on built-in benchmark graphs.
"""
from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from systems_envs.graph.executor import execute
from systems_envs.graph.ir import Graph
from systems_envs.rewrite.rules import builtin_rules

RULES = builtin_rules()
ACTS = ("relu", "sigmoid", "tanh")


def all_matches(g: Graph):
    return [m for nid in g.topo_order() for r in RULES for m in r.match_at(g, nid)]


class _Builder:
    """Grows a random graph one op at a time; fine-grained choices come from a seeded ``random.Random``."""

    def __init__(self, seed: int):
        self.rng, self.g, self.k = random.Random(seed), Graph("random"), 0
        self.pool: list[tuple[int, int]] = []
        self.last: dict[str, tuple[int, int]] = {}  # last operand of conv/matmul/linear (to make siblings)

    def choice(self, seq):
        return self.rng.choice(list(seq))

    def coin(self) -> bool:
        return self.rng.random() < 0.5

    def randint(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def weight(self, shape, init="normal"):
        self.k += 1
        return self.g.weight(f"w{self.k}", shape, init=init)

    def pick(self, cond=lambda s: True, exclude=None):
        """A tensor of the pool whose shape satisfies ``cond``: often the newest (to build chains)."""
        cands = [t for t in reversed(self.pool) if cond(self.g.shape(t)) and t != exclude]
        if not cands:
            return None
        return cands[0] if self.coin() else self.choice(cands)

    def act(self) -> str:
        """A fused activation: none half of the time (so fusion rules can apply)."""
        return "none" if self.coin() else self.choice(ACTS)

    def operand(self, kind, cond):
        """Often the previous operand of the same kind of op (siblings sharing an input)."""
        x = self.last.get(kind)
        x = x if x is not None and self.coin() else self.pick(cond)
        if x is not None:
            self.last[kind] = x
        return x

    def step(self, kind: str) -> None:
        g = self.g
        if kind == "conv":
            x = self.operand(kind, lambda s: len(s) == 4)
            if x is None:
                return
            c = g.shape(x)[1]
            k, s = self.choice([1, 3]), self.choice([1, 2])
            groups = self.choice([1, 2]) if c % 2 == 0 else 1
            o = self.choice([2, 4])
            ins = [x, self.weight((o, c // groups, k, k))] + ([self.weight((o,))] if self.coin() else [])
            self.pool.append((g.add("conv2d", ins, strides=(s, s), pads=(k // 2,) * 4, groups=groups,
                                    activation=self.act()), 0))
        elif kind in ("matmul", "linear"):
            x = self.operand(kind, lambda s: len(s) >= 2)
            if x is None:
                return
            ins = [x, self.weight((g.shape(x)[-1], self.randint(2, 4)))]
            if kind == "linear" and self.coin():
                ins.append(self.weight((g.shape(ins[1])[1],)))
            self.pool.append((g.add(kind, ins, activation=self.act()), 0))
        elif kind == "matmul2":
            a = self.pick(lambda s: len(s) >= 2)
            b = a and self.pick(lambda s: len(s) == 2 and s[0] == g.shape(a)[-1])
            if b is not None:
                self.pool.append((g.add("matmul", [a, b]), 0))
        elif kind in ("add", "mul"):
            a = self.pick()
            if a is None:
                return
            sa = g.shape(a)
            if self.coin():
                b = self.pick(lambda s: s == sa, exclude=a) or a
            else:  # broadcast a weight: per-channel for images, per-column otherwise
                b = self.weight((1, sa[1], 1, 1) if len(sa) == 4 else (sa[-1],))
            self.pool.append((g.add(kind, [a, b] if self.coin() else [b, a]), 0))
        elif kind == "unary":
            a = self.pick()
            if a is not None:
                self.pool.append((g.add(self.choice(["relu", "sigmoid", "tanh"]), [a]), 0))
        elif kind == "batchnorm":
            x = self.pick(lambda s: len(s) == 4)
            if x is not None:
                c = g.shape(x)[1]
                ps = [self.weight((c,)), self.weight((c,)), self.weight((c,)), self.weight((c,), init="positive")]
                self.pool.append((g.add("batchnorm", [x, *ps]), 0))
        elif kind == "concat":
            a = self.pick()
            if a is None:
                return
            sa = g.shape(a)
            axis = self.randint(0, len(sa) - 1)
            b = self.pick(lambda s: len(s) == len(sa) and all(s[i] == sa[i] for i in range(len(sa)) if i != axis),
                          exclude=a) or a
            self.pool.append((g.add("concat", [a, b], axis=axis), 0))
        elif kind == "split":
            a = self.pick(lambda s: max(s) >= 2)
            if a is None:
                return
            sa = g.shape(a)
            axis = self.choice([i for i, n in enumerate(sa) if n >= 2])
            first = self.randint(1, sa[axis] - 1)
            sp = g.add("split", [a], axis=axis, sizes=(first, sa[axis] - first))
            self.pool += [(sp, 0), (sp, 1)]
        elif kind == "transpose":
            a = self.pick()
            if a is not None:
                perm = self.rng.sample(range(len(g.shape(a))), len(g.shape(a)))
                self.pool.append((g.add("transpose", [a], perm=tuple(perm)), 0))


KINDS = ["conv", "matmul", "linear", "matmul2", "add", "mul", "unary", "batchnorm", "concat", "split", "transpose",
         "conv", "matmul", "unary", "concat", "split"]  # (repeats weight the draw)


@st.composite
def random_graphs(draw) -> Graph:
    """A valid random DAG: one image input [N, C, H, W], one matrix input [M, K] and 6-20 ops.

    The op kinds are hypothesis draws; shapes, operands and attributes come from a drawn seed.
    """
    b = _Builder(draw(st.integers(0, 2**32 - 1)))
    img = b.g.input("img", (b.randint(1, 2), b.choice([2, 4]), b.randint(3, 6), b.randint(3, 6)))
    mat = b.g.input("mat", (b.randint(2, 4), b.randint(2, 4)))
    b.pool += [(img, 0), (mat, 0)]
    for kind in draw(st.lists(st.sampled_from(KINDS), min_size=6, max_size=20)):
        b.step(kind)
    g = b.g
    used = {r for n in g.nodes.values() for r in n.inputs}
    sinks = [t for t in b.pool if t not in used and g.nodes[t[0]].op != "input"]
    g.set_outputs(sinks or [b.pool[-1]])
    g.validate()
    return g


def assert_same(outs, ref):
    assert len(outs) == len(ref)
    for a, r in zip(outs, ref):
        assert a.shape == r.shape
        np.testing.assert_allclose(a, r, rtol=1e-9, atol=1e-9)


def rewrite_randomly(g: Graph, choose, steps: int) -> list[str]:
    """Apply up to ``steps`` rewrites chosen by ``choose(n_matches) -> index``; return the rule names."""
    by_name = {r.name: r for r in RULES}
    applied = []
    for _ in range(steps):
        ms = all_matches(g)
        if not ms:
            break
        m = ms[choose(len(ms))]
        by_name[m.rule].apply(g, m)
        g.prune()
        g.validate()
        applied.append(m.rule)
    return applied


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_random_rewrites_preserve_outputs(data):
    g = data.draw(random_graphs())
    ref = execute(g, dtype=np.float64)
    steps = data.draw(st.integers(1, 8))
    rewrite_randomly(g, lambda n: data.draw(st.integers(0, n - 1)), steps)
    assert_same(execute(g, dtype=np.float64), ref)


def test_strategy_exercises_many_rules():
    """The random graphs reach most rule families (guards against a strategy that never matches)."""
    seen = set()

    @settings(max_examples=60, deadline=None)
    @given(random_graphs())
    def collect(g):
        seen.update(m.rule for m in all_matches(g))

    collect()
    families = {r.family for r in RULES if r.name in seen}
    assert len(seen) >= 12 and len(families) >= 7, (sorted(seen), sorted(families))


HAVE_MODELS = importlib.util.find_spec("systems_envs.graph.models") is not None
needs_models = pytest.mark.skipif(not HAVE_MODELS, reason="systems_envs.graph.models (built-in graphs) is missing")


def _real_graph_check(name: str, seeds, steps: int = 8):
    from systems_envs.graph.models import build_graph

    base = build_graph(name)
    ref = execute(base, dtype=np.float64)
    for seed in seeds:
        g = base.copy()
        rng = random.Random(seed)
        applied = rewrite_randomly(g, lambda n: rng.randrange(n), steps)
        assert applied, f"no rule applies to {name}"
        assert_same(execute(g, dtype=np.float64), ref)


@needs_models
@pytest.mark.parametrize("name", ["squeezenet", "nasrnn"])
def test_real_graph_rewrites(name):
    _real_graph_check(name, seeds=[0, 1])


@needs_models
@pytest.mark.slow
def test_real_graph_rewrites_bert():
    _real_graph_check("bert", seeds=[0])
