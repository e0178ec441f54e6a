"""Family ``concat_split``: cancel split-of-concat and move element-wise ops across concat.

* ``split_concat_cancel``: ``split(concat(a, b, ...))`` on the same axis with the same sizes -> ``(a, b, ...)``.
* ``unary_into_concat``: ``u(concat(a, b)) -> concat(u(a), u(b))`` for u in relu/sigmoid/tanh/gelu.
* ``unary_out_of_concat``: the reverse, ``concat(u(a), u(b)) -> u(concat(a, b))``.
* ``binary_into_concat``: ``concat(a, b) . concat(c, d) -> concat(a.c, b.d)`` for . in
  add/sub/mul/div, when parts align (same axis, same part shapes, no broadcasting).
* ``concat_axis_swap``: ``concat_p(concat_q(a, b), concat_q(c, d)) -> concat_q(concat_p(a, c), concat_p(b, d))``
  when the parts' sizes along q align.
"""
from __future__ import annotations

from systems_envs.graph.ir import Graph
from systems_envs.rewrite.rule import Match
from systems_envs.rewrite.rules.helpers import (BINARY, UNARY, BaseRule, concat, norm_axis, only_used_by,
                                                producer, replace, sole_producers)


def _axis(n) -> int:
    return norm_axis(n.attrs["axis"], len(n.shape))


class SplitConcatCancel(BaseRule):
    name = "split_concat_cancel"
    family = "concat_split"
    anchor_ops = frozenset({"split"})
    radius = 1

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        s = g.nodes[nid]
        if s.op != "split":
            return []
        c = producer(g, s.inputs[0], "concat")
        if c is None or _axis(c) != norm_axis(s.attrs["axis"], len(c.shape)):
            return []
        if tuple(g.shape(r)[_axis(c)] for r in c.inputs) != tuple(s.attrs["sizes"]):
            return []
        return [self.m((nid, c.id))]

    def apply(self, g: Graph, match: Match) -> set[int]:
        sid, cid = match.nodes
        changed: set[int] = set()
        for i, r in enumerate(g.nodes[cid].inputs):
            changed |= replace(g, (sid, i), r)
        return changed


class UnaryIntoConcat(BaseRule):
    name = "unary_into_concat"
    family = "concat_split"
    anchor_ops = frozenset(UNARY)
    radius = 1

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op not in UNARY:
            return []
        c = producer(g, n.inputs[0], "concat")
        return [self.m((nid, c.id))] if c is not None and only_used_by(g, c.id, nid) else []

    def apply(self, g: Graph, match: Match) -> set[int]:
        nid, cid = match.nodes
        op, c = g.nodes[nid].op, g.nodes[cid]
        parts = [g.add(op, [r]) for r in c.inputs]
        r = concat(g, parts, c.attrs["axis"])
        return set(parts) | {r} | replace(g, (nid, 0), (r, 0))


class UnaryOutOfConcat(BaseRule):
    name = "unary_out_of_concat"
    family = "concat_split"
    anchor_ops = frozenset({"concat"})
    radius = 1

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != "concat":
            return []
        us = sole_producers(g, n, *UNARY, same=lambda u: u.op)
        return [self.m((nid, *(u.id for u in us)))] if us is not None else []

    def apply(self, g: Graph, match: Match) -> set[int]:
        n = g.nodes[match.nodes[0]]
        us = [g.nodes[i] for i in match.nodes[1:]]
        c = concat(g, [u.inputs[0] for u in us], n.attrs["axis"])
        r = g.add(us[0].op, [c])
        return {c, r} | replace(g, (n.id, 0), (r, 0))


class BinaryIntoConcat(BaseRule):
    name = "binary_into_concat"
    family = "concat_split"
    anchor_ops = frozenset(BINARY)
    radius = 1

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op not in BINARY:
            return []
        cs = sole_producers(g, n, "concat", distinct=False)
        if cs is None:
            return []
        c1, c2 = cs
        if not (c1.shape == c2.shape == n.shape) or _axis(c1) != _axis(c2) or len(c1.inputs) != len(c2.inputs):
            return []
        if any(g.shape(a) != g.shape(b) for a, b in zip(c1.inputs, c2.inputs)):
            return []
        return [self.m((nid, c1.id, c2.id))]

    def apply(self, g: Graph, match: Match) -> set[int]:
        n, c1, c2 = (g.nodes[i] for i in match.nodes)
        parts = [g.add(n.op, [a, b]) for a, b in zip(c1.inputs, c2.inputs)]
        r = concat(g, parts, c1.attrs["axis"])
        return set(parts) | {r} | replace(g, (n.id, 0), (r, 0))


class ConcatAxisSwap(BaseRule):
    name = "concat_axis_swap"
    family = "concat_split"
    anchor_ops = frozenset({"concat"})
    radius = 1

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != "concat" or len(n.inputs) < 2:
            return []
        inner = sole_producers(g, n, "concat", same=lambda c: (_axis(c), len(c.inputs)))
        if inner is None:
            return []
        p, q = _axis(n), _axis(inner[0])
        k = len(inner[0].inputs)
        if q == p or k < 2 or any(len({g.shape(c.inputs[j])[q] for c in inner}) != 1 for j in range(k)):
            return []
        return [self.m((nid, *(c.id for c in inner)))]

    def apply(self, g: Graph, match: Match) -> set[int]:
        n = g.nodes[match.nodes[0]]
        inner = [g.nodes[i] for i in match.nodes[1:]]
        p, q = _axis(n), _axis(inner[0])
        parts = [concat(g, [c.inputs[j] for c in inner], p) for j in range(len(inner[0].inputs))]
        r = concat(g, parts, q)
        return set(parts) | {r} | replace(g, (n.id, 0), (r, 0))


RULES = [SplitConcatCancel(), UnaryIntoConcat(), UnaryOutOfConcat(), BinaryIntoConcat(), ConcatAxisSwap()]
