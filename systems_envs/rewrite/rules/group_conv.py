"""Family ``group_conv``: fewer groups through a block-diagonal weight.

``merge_group_conv``: ``conv(x, w, groups=G) -> conv(x, merge_gconv(w, count=k, groups=G), groups=G/k)``
for every divisor k > 1 of G (k = G gives an ordinary conv that can then merge with
siblings). See ``_merge_gconv`` in ``systems_envs/graph/executor.py`` for why this is exact.
"""
from __future__ import annotations

from systems_envs.graph.ir import Graph
from systems_envs.rewrite.rule import Match
from systems_envs.rewrite.rules.helpers import BaseRule, conv_attrs, replace


class MergeGroupConv(BaseRule):
    name = "merge_group_conv"
    family = "group_conv"
    anchor_ops = frozenset({"conv2d"})
    radius = 1

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        c = g.nodes[nid]
        if c.op != "conv2d" or c.attrs["groups"] < 2:
            return []
        groups = c.attrs["groups"]
        return [self.m((nid,), k) for k in range(2, groups + 1) if groups % k == 0]

    def apply(self, g: Graph, match: Match) -> set[int]:
        c = g.nodes[match.nodes[0]]
        k, groups = match.data, c.attrs["groups"]
        w = g.add("merge_gconv", [c.inputs[1]], count=k, groups=groups)
        r = g.add("conv2d", [c.inputs[0], w, *c.inputs[2:]], **conv_attrs(c, groups=groups // k))
        return {w, r} | replace(g, (c.id, 0), (r, 0))


RULES = [MergeGroupConv()]
