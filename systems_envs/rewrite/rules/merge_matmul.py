"""Family ``merge_matmul``: one bigger matmul instead of several small ones.

* ``merge_matmul_shared_left``: ``{A W1, A W2} -> split(A [W1|W2])`` along the last axis.
* ``merge_matmul_shared_right``: ``{W1 A, W2 A} -> split([W1;W2] A)`` along axis -2.
* ``merge_linear_shared_input``: the same for ``linear`` (weights and biases concatenated).
* ``merge_matmul_sum``: ``A1 W1 + A2 W2 -> [A1|A2] [W1;W2]``.

Sibling merges are anchored at the lower-id sibling and rejected if one sibling feeds
the other (the merged node would form a cycle).
"""
from __future__ import annotations

from systems_envs.graph.ir import Graph
from systems_envs.rewrite.rule import Match
from systems_envs.rewrite.rules.helpers import (BaseRule, concat, consumers, infer, infer_all, merge_is_acyclic,
                                                producer, replace, single_use)


def _split_outputs(g: Graph, r: int, axis: int, olds: list[int]) -> set[int]:
    """Split node ``r`` along ``axis`` into the shapes of ``olds`` and re-point their uses."""
    sp = g.add("split", [r], axis=axis, sizes=tuple(g.nodes[o].shape[axis] for o in olds))
    changed = {sp}
    for i, o in enumerate(olds):
        changed |= replace(g, (o, 0), (sp, i))
    return changed


class MergeMatmulShared(BaseRule):
    """Two matmuls reading the same tensor in the same slot (0: left, 1: right), same activation."""

    family = "merge_matmul"
    anchor_ops = frozenset({"matmul"})

    def __init__(self, slot: int):
        self.slot = slot
        self.name = "merge_matmul_shared_left" if slot == 0 else "merge_matmul_shared_right"

    def _axes(self, g: Graph, m) -> tuple[int, int]:
        """(weight concat axis, output split axis), non-negative."""
        w_rank, o_rank = len(g.shape(m.inputs[1 - self.slot])), len(m.shape)
        return (w_rank - 1, o_rank - 1) if self.slot == 0 else (w_rank - 2, o_rank - 2)

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        m1 = g.nodes[nid]
        if m1.op != "matmul":
            return []
        x, o = m1.inputs[self.slot], 1 - self.slot
        out = []
        for m2 in consumers(g, x, "matmul", self.slot):
            if m2.id <= nid or m2.attrs["activation"] != m1.attrs["activation"]:
                continue
            w1, w2 = g.shape(m1.inputs[o]), g.shape(m2.inputs[o])
            wax, oax = self._axes(g, m1)
            if len(w1) != len(w2) or len(m1.shape) != len(m2.shape):
                continue
            wc = infer("concat", [w1, w2], axis=wax)
            if wc is None:
                continue
            r = infer("matmul", [g.shape(x), wc] if self.slot == 0 else [wc, g.shape(x)])
            sizes = (m1.shape[oax], m2.shape[oax])
            if r is None or infer_all("split", [r], axis=oax, sizes=sizes) != [m1.shape, m2.shape]:
                continue
            if merge_is_acyclic(g, m1, m2):
                out.append(self.m((nid, m2.id)))
        return out

    def apply(self, g: Graph, match: Match) -> set[int]:
        m1, m2 = (g.nodes[i] for i in match.nodes)
        x, o = m1.inputs[self.slot], 1 - self.slot
        wax, oax = self._axes(g, m1)
        wc = concat(g, [m1.inputs[o], m2.inputs[o]], wax)
        r = g.add("matmul", [x, wc] if self.slot == 0 else [wc, x], activation=m1.attrs["activation"])
        return {wc, r} | _split_outputs(g, r, oax, [m1.id, m2.id])


class MergeLinearShared(BaseRule):
    """``{linear(x, W1, b1), linear(x, W2, b2)} -> split(linear(x, [W1|W2], [b1|b2]))`` (biases both or neither)."""

    name = "merge_linear_shared_input"
    family = "merge_matmul"
    anchor_ops = frozenset({"linear"})

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        l1 = g.nodes[nid]
        if l1.op != "linear":
            return []
        out = []
        for l2 in consumers(g, l1.inputs[0], "linear", 0):
            if (l2.id > nid and l2.attrs["activation"] == l1.attrs["activation"]
                    and len(l2.inputs) == len(l1.inputs) and merge_is_acyclic(g, l1, l2)):
                out.append(self.m((nid, l2.id)))
        return out

    def apply(self, g: Graph, match: Match) -> set[int]:
        l1, l2 = (g.nodes[i] for i in match.nodes)
        wc = concat(g, [l1.inputs[1], l2.inputs[1]], 1)
        ins, added = [l1.inputs[0], wc], {wc}
        if len(l1.inputs) == 3:
            bc = concat(g, [l1.inputs[2], l2.inputs[2]], 0)
            ins.append(bc)
            added.add(bc)
        r = g.add("linear", ins, activation=l1.attrs["activation"])
        return added | {r} | _split_outputs(g, r, len(l1.shape) - 1, [l1.id, l2.id])


class MergeMatmulSum(BaseRule):
    """``A1 W1 + A2 W2 -> concat(A1, A2, -1) concat(W1, W2, -2)`` (no activations, no broadcasting in the add)."""

    name = "merge_matmul_sum"
    family = "merge_matmul"
    anchor_ops = frozenset({"add"})

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != "add":
            return []
        m1, m2 = (producer(g, r, "matmul") for r in n.inputs)
        if m1 is None or m2 is None or m1.id == m2.id or not (m1.shape == m2.shape == n.shape):
            return []
        if any(m.attrs["activation"] != "none" or not single_use(g, m.id) for m in (m1, m2)):
            return []
        (a1, w1), (a2, w2) = ([g.shape(r) for r in m.inputs] for m in (m1, m2))
        if len(a1) != len(a2) or len(w1) != len(w2):
            return []
        ac = infer("concat", [a1, a2], axis=len(a1) - 1)
        wc = infer("concat", [w1, w2], axis=len(w1) - 2)
        if ac is None or wc is None or infer("matmul", [ac, wc]) != n.shape:
            return []
        return [self.m((nid, m1.id, m2.id))]

    def apply(self, g: Graph, match: Match) -> set[int]:
        nid, m1, m2 = match.nodes
        (a1, w1), (a2, w2) = g.nodes[m1].inputs, g.nodes[m2].inputs
        ac = concat(g, [a1, a2], len(g.shape(a1)) - 1)
        wc = concat(g, [w1, w2], len(g.shape(w1)) - 2)
        r = g.add("matmul", [ac, wc])
        return {ac, wc, r} | replace(g, (nid, 0), (r, 0))


RULES = [MergeMatmulShared(0), MergeMatmulShared(1), MergeLinearShared(), MergeMatmulSum()]
