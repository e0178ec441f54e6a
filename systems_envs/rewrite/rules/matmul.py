"""Family ``matmul``: associativity and distributivity of matmul (batched, NumPy semantics).

Inner matmuls must have no fused activation; the activation of the outer matmul (the one
whose output is replaced) is kept on the new outer matmul.
"""
from __future__ import annotations

from systems_envs.graph.ir import Graph
from systems_envs.rewrite.rule import Match
from systems_envs.rewrite.rules.helpers import BaseRule, infer, producer, replace, single_use


class MatmulAssoc(BaseRule):
    """``(AB)C -> A(BC)`` (``left_to_right``) or ``A(BC) -> (AB)C``."""

    family = "matmul"
    anchor_ops = frozenset({"matmul"})

    def __init__(self, left_to_right: bool):
        self.ltr = left_to_right
        self.name = "matmul_assoc_left_to_right" if left_to_right else "matmul_assoc_right_to_left"
        self.slot = 0 if left_to_right else 1  # where the inner matmul sits

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != "matmul":
            return []
        inner = producer(g, n.inputs[self.slot], "matmul")
        if inner is None or inner.attrs["activation"] != "none" or not single_use(g, inner.id):
            return []
        if self.ltr:  # (AB)C
            (a, b), c = inner.inputs, n.inputs[1]
            t = infer("matmul", [g.shape(b), g.shape(c)])
            out = t and infer("matmul", [g.shape(a), t])
        else:  # A(BC)
            a, (b, c) = n.inputs[0], inner.inputs
            t = infer("matmul", [g.shape(a), g.shape(b)])
            out = t and infer("matmul", [t, g.shape(c)])
        return [self.m((nid, inner.id))] if out == n.shape else []

    def apply(self, g: Graph, match: Match) -> set[int]:
        nid, iid = match.nodes
        n, inner = g.nodes[nid], g.nodes[iid]
        act = n.attrs["activation"]
        if self.ltr:
            (a, b), c = inner.inputs, n.inputs[1]
            t = g.add("matmul", [b, c])
            r = g.add("matmul", [a, t], activation=act)
        else:
            a, (b, c) = n.inputs[0], inner.inputs
            t = g.add("matmul", [a, b])
            r = g.add("matmul", [t, c], activation=act)
        return {t, r} | replace(g, (nid, 0), (r, 0))


class MatmulFactor(BaseRule):
    """``AB + AC -> A(B+C)`` (shared operand in slot 0, ``matmul_factor_left``) or ``AC + BC -> (A+B)C``.

    Requires both products and the sum to have the same shape and the two non-shared
    operands to have the same shape (no broadcasting across the add).
    """

    family = "matmul"
    anchor_ops = frozenset({"add"})

    def __init__(self, shared_slot: int):
        self.shared = shared_slot
        self.name = "matmul_factor_left" if shared_slot == 0 else "matmul_factor_right"

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != "add":
            return []
        m1, m2 = (producer(g, r, "matmul") for r in n.inputs)
        if m1 is None or m2 is None or m1.id == m2.id:
            return []
        if any(m.attrs["activation"] != "none" or not single_use(g, m.id) for m in (m1, m2)):
            return []
        s, o = self.shared, 1 - self.shared
        if m1.inputs[s] != m2.inputs[s] or g.shape(m1.inputs[o]) != g.shape(m2.inputs[o]):
            return []
        if not (m1.shape == m2.shape == n.shape):
            return []
        return [self.m((nid, m1.id, m2.id))]

    def apply(self, g: Graph, match: Match) -> set[int]:
        nid, m1, m2 = match.nodes
        s, o = self.shared, 1 - self.shared
        shared = g.nodes[m1].inputs[s]
        t = g.add("add", [g.nodes[m1].inputs[o], g.nodes[m2].inputs[o]])
        r = g.add("matmul", [shared, t] if s == 0 else [t, shared])
        return {t, r} | replace(g, (nid, 0), (r, 0))


RULES = [MatmulAssoc(True), MatmulAssoc(False), MatmulFactor(0), MatmulFactor(1)]
