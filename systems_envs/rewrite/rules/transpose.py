"""Family ``transpose``: compose, cancel and move transposes.

* ``transpose_compose``: ``T(T(x, p1), p2) -> T(x, p1[p2])``, or ``x`` when that is the identity.
* ``matmul_transpose``: ``T(A B)`` swapping the last two axes -> ``T(B) T(A)`` (activation kept).
* ``transpose_out_of_binary``: ``T(a, p) . T(b, p) -> T(a . b, p)`` (same rank operands).
* ``move_transpose_after_unary``: ``u(T(x)) -> T(u(x))``; ``move_transpose_before_unary``: the reverse.
* ``transpose_out_of_concat``: ``concat(T(a, p), T(b, p), axis=k) -> T(concat(a, b, axis=p[k]), p)``.
"""
from __future__ import annotations

from systems_envs.graph.ir import Graph
from systems_envs.rewrite.rule import Match
from systems_envs.rewrite.rules.helpers import (BINARY, UNARY, BaseRule, concat, infer, norm_axis, producer,
                                                replace, single_use, sole_producers)


def _swap_last2(rank: int) -> tuple[int, ...]:
    return tuple(range(rank - 2)) + (rank - 1, rank - 2)


class TransposeCompose(BaseRule):
    name = "transpose_compose"
    family = "transpose"
    anchor_ops = frozenset({"transpose"})
    radius = 1

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != "transpose" or producer(g, n.inputs[0], "transpose") is None:
            return []
        return [self.m((nid, n.inputs[0][0]))]

    def apply(self, g: Graph, match: Match) -> set[int]:
        n, t = (g.nodes[i] for i in match.nodes)
        perm = tuple(t.attrs["perm"][i] for i in n.attrs["perm"])
        x = t.inputs[0]
        if perm == tuple(range(len(perm))):
            return {x[0]} | replace(g, (n.id, 0), x)
        r = g.add("transpose", [x], perm=perm)
        return {r} | replace(g, (n.id, 0), (r, 0))


class MatmulTranspose(BaseRule):
    name = "matmul_transpose"
    family = "transpose"
    anchor_ops = frozenset({"transpose"})
    radius = 1

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != "transpose" or n.attrs["perm"] != _swap_last2(len(n.shape)):
            return []
        m = producer(g, n.inputs[0], "matmul")
        return [self.m((nid, m.id))] if m is not None and single_use(g, m.id) else []

    def apply(self, g: Graph, match: Match) -> set[int]:
        n, m = (g.nodes[i] for i in match.nodes)
        a, b = m.inputs
        tb = g.add("transpose", [b], perm=_swap_last2(len(g.shape(b))))
        ta = g.add("transpose", [a], perm=_swap_last2(len(g.shape(a))))
        r = g.add("matmul", [tb, ta], activation=m.attrs["activation"])
        return {ta, tb, r} | replace(g, (n.id, 0), (r, 0))


class TransposeOutOfBinary(BaseRule):
    name = "transpose_out_of_binary"
    family = "transpose"
    anchor_ops = frozenset(BINARY)
    radius = 1

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op not in BINARY:
            return []
        ts = sole_producers(g, n, "transpose", same=lambda t: t.attrs["perm"], distinct=False)
        if ts is None:
            return []
        t1, t2 = ts
        s = infer(n.op, [g.shape(t1.inputs[0]), g.shape(t2.inputs[0])])
        if s is None or infer("transpose", [s], perm=t1.attrs["perm"]) != n.shape:
            return []
        return [self.m((nid, t1.id, t2.id))]

    def apply(self, g: Graph, match: Match) -> set[int]:
        n, t1, t2 = (g.nodes[i] for i in match.nodes)
        e = g.add(n.op, [t1.inputs[0], t2.inputs[0]])
        r = g.add("transpose", [e], perm=t1.attrs["perm"])
        return {e, r} | replace(g, (n.id, 0), (r, 0))


class MoveTransposeUnary(BaseRule):
    """``after``: ``u(T(x)) -> T(u(x))``; otherwise ``T(u(x)) -> u(T(x))``."""

    family = "transpose"
    radius = 1

    def __init__(self, after: bool):
        self.after = after
        self.name = "move_transpose_after_unary" if after else "move_transpose_before_unary"
        self.outer, self.inner = ((UNARY, ("transpose",)) if after else (("transpose",), UNARY))
        self.anchor_ops = frozenset(self.outer)

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op not in self.outer:
            return []
        i = producer(g, n.inputs[0], *self.inner)
        return [self.m((nid, i.id))] if i is not None and single_use(g, i.id) else []

    def apply(self, g: Graph, match: Match) -> set[int]:
        n, i = (g.nodes[k] for k in match.nodes)
        a = g.add(n.op, i.inputs, **n.attrs)
        r = g.add(i.op, [a], **i.attrs)
        return {a, r} | replace(g, (n.id, 0), (r, 0))


class TransposeOutOfConcat(BaseRule):
    name = "transpose_out_of_concat"
    family = "transpose"
    anchor_ops = frozenset({"concat"})
    radius = 1

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != "concat":
            return []
        ts = sole_producers(g, n, "transpose", same=lambda t: t.attrs["perm"])
        return [self.m((nid, *(t.id for t in ts)))] if ts is not None else []

    def apply(self, g: Graph, match: Match) -> set[int]:
        n = g.nodes[match.nodes[0]]
        ts = [g.nodes[i] for i in match.nodes[1:]]
        perm = ts[0].attrs["perm"]
        c = concat(g, [t.inputs[0] for t in ts], perm[norm_axis(n.attrs["axis"], len(perm))])
        r = g.add("transpose", [c], perm=perm)
        return {c, r} | replace(g, (n.id, 0), (r, 0))


RULES = [TransposeCompose(), MatmulTranspose(), TransposeOutOfBinary(), MoveTransposeUnary(True),
         MoveTransposeUnary(False), TransposeOutOfConcat()]
