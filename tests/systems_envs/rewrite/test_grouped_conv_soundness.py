"""Regression: no rule may change what a graph with grouped/depthwise convolutions computes.

TASO's rules infer a conv's groups from its shapes; merging two depthwise convolutions by
concatenating their kernels along the output channels type-checks but interleaves the
channels wrongly. This test applies every match of every rule (hand-written and imported)
to a small NASNet-like cell with depthwise, grouped and dense convolutions.
"""
import numpy as np
import pytest

from systems_envs.graph.executor import execute
from systems_envs.graph.ir import Graph
from systems_envs.rewrite.ruleset import default_rules


def separable_cell() -> Graph:
    g = Graph("separable_cell")
    x = g.input("x", (1, 8, 6, 6))
    dw = [g.add("conv2d", [x, g.weight(f"dw{i}", (8, 1, 3, 3))], groups=8, pads=(1, 1, 1, 1)) for i in range(2)]
    gc = [g.add("conv2d", [x, g.weight(f"gc{i}", (8, 2, 3, 3))], groups=4, pads=(1, 1, 1, 1)) for i in range(2)]
    dense = [g.add("conv2d", [x, g.weight(f"pw{i}", (8, 8, 3, 3))], pads=(1, 1, 1, 1)) for i in range(2)]
    relus = [g.add("relu", [t]) for t in dw + gc + dense]
    s1 = g.add("add", [relus[0], relus[1]])
    s2 = g.add("add", [relus[2], relus[3]])
    s3 = g.add("add", [relus[4], relus[5]])
    g.set_outputs([g.add("concat", [s1, s2, s3], axis=1)])
    return g


@pytest.mark.parametrize("taso", [False, True])
def test_every_match_on_grouped_convs_is_sound(taso):
    g = separable_cell()
    want = execute(g, dtype=np.float64)[0]
    applied = 0
    for rule in default_rules(taso=taso):
        for nid in g.topo_order():
            for m in rule.match_at(g, nid):
                h = g.copy()
                rule.apply(h, m)
                h.prune()
                h.validate()
                got = execute(h, dtype=np.float64)[0]
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=f"{rule.name} at {m.nodes}")
                applied += 1
    assert applied > 0
