"""Family ``elementwise``: associativity of add/mul and mul distributing over add.

Commutativity is not a rule (``a+b -> b+a`` would only create trivial loops); instead
every rule here matches its operands in both orders (matching-time normalization).
Broadcasting is allowed as long as the rewritten expression keeps the output shape;
since every operand is indexed the same way after broadcasting to the final shape, the
identities then hold element by element.
"""
from __future__ import annotations

from systems_envs.graph.ir import Graph
from systems_envs.rewrite.rule import Match
from systems_envs.rewrite.rules.helpers import BaseRule, infer, producer, replace, single_use


class Assoc(BaseRule):
    """``(a.b).c -> a.(b.c)`` (inner op in slot 0) and ``c.(a.b) -> (c.a).b`` (slot 1) for . in {add, mul}."""

    family = "elementwise"

    def __init__(self, op: str):
        self.op = op
        self.name = f"{op}_assoc"
        self.anchor_ops = frozenset({op})

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != self.op:
            return []
        out = []
        for slot in (0, 1):
            inner = producer(g, n.inputs[slot], self.op)
            if inner is None or not single_use(g, inner.id):
                continue
            a, b = inner.inputs
            c = n.inputs[1 - slot]
            first = (b, c) if slot == 0 else (c, a)
            mid = infer(self.op, [g.shape(r) for r in first])
            if mid is None:
                continue
            last = [g.shape(a), mid] if slot == 0 else [mid, g.shape(b)]
            if infer(self.op, last) == n.shape:
                out.append(self.m((nid, inner.id), slot))
        return out

    def apply(self, g: Graph, match: Match) -> set[int]:
        nid, iid = match.nodes
        a, b = g.nodes[iid].inputs
        c = g.nodes[nid].inputs[1 - match.data]
        if match.data == 0:
            t = g.add(self.op, [b, c])
            r = g.add(self.op, [a, t])
        else:
            t = g.add(self.op, [c, a])
            r = g.add(self.op, [t, b])
        return {t, r} | replace(g, (nid, 0), (r, 0))


class FactorMulOverAdd(BaseRule):
    """``a*c + b*c -> (a+b)*c`` (the common factor may sit in either slot of either mul)."""

    name = "factor_mul_over_add"
    family = "elementwise"
    anchor_ops = frozenset({"add"})

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != "add":
            return []
        m1, m2 = (producer(g, r, "mul") for r in n.inputs)
        if m1 is None or m2 is None or m1.id == m2.id or not (single_use(g, m1.id) and single_use(g, m2.id)):
            return []
        out = []
        for i in (0, 1):
            for j in (0, 1):
                c = m1.inputs[i]
                if c != m2.inputs[j]:
                    continue
                a, b = m1.inputs[1 - i], m2.inputs[1 - j]
                s = infer("add", [g.shape(a), g.shape(b)])
                if s is not None and infer("mul", [s, g.shape(c)]) == n.shape:
                    out.append(self.m((nid, m1.id, m2.id), (i, j)))
        return out

    def apply(self, g: Graph, match: Match) -> set[int]:
        nid, m1, m2 = match.nodes
        i, j = match.data
        c = g.nodes[m1].inputs[i]
        a, b = g.nodes[m1].inputs[1 - i], g.nodes[m2].inputs[1 - j]
        t = g.add("add", [a, b])
        r = g.add("mul", [t, c])
        return {t, r} | replace(g, (nid, 0), (r, 0))


class DistributeMulOverAdd(BaseRule):
    """``a*(b+c) -> a*b + a*c`` (and ``(b+c)*a -> b*a + c*a``)."""

    name = "distribute_mul_over_add"
    family = "elementwise"
    anchor_ops = frozenset({"mul"})

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != "mul":
            return []
        out = []
        for slot in (0, 1):
            s = producer(g, n.inputs[slot], "add")
            if s is None or not single_use(g, s.id):
                continue
            a = g.shape(n.inputs[1 - slot])
            p1 = infer("mul", [a, g.shape(s.inputs[0])])
            p2 = infer("mul", [a, g.shape(s.inputs[1])])
            if p1 is not None and p2 is not None and infer("add", [p1, p2]) == n.shape:
                out.append(self.m((nid, s.id), slot))
        return out

    def apply(self, g: Graph, match: Match) -> set[int]:
        nid, sid = match.nodes
        slot = match.data
        a = g.nodes[nid].inputs[1 - slot]
        b, c = g.nodes[sid].inputs
        pair = (lambda t: [a, t]) if slot == 1 else (lambda t: [t, a])
        p1 = g.add("mul", pair(b))
        p2 = g.add("mul", pair(c))
        r = g.add("add", [p1, p2])
        return {p1, p2, r} | replace(g, (nid, 0), (r, 0))


RULES = [Assoc("add"), Assoc("mul"), FactorMulOverAdd(), DistributeMulOverAdd()]
