"""Family ``reshape``: reshapes that only serve a ``linear`` layer, and chains of layout ops.

* ``linear_through_reshape``: ``reshape(linear(reshape(x, (M, K)), w[, b]), x.shape[:-1] + (N,))
  -> linear(x, w[, b])`` for ``x`` of rank >= 3 with ``M = prod(x.shape[:-1])``, and likewise
  through up to ``MAX_LINEARS`` linears and element-wise unary ops in a row (an MLP, once its
  inner reshapes are gone): a linear layer acts on the last axis only, so flattening the leading axes before it and restoring them after
  it changes nothing. Exporters write ``nn.Linear`` on a 3-D input this way (GPT-2's
  ``Conv1D``: Reshape -> Gemm -> Reshape); the result is written as one MatMul [+ Add], which
  onnxruntime runs without the two reshape kernels (measured on the zoo GPT-2 in the README).
  The activations are kept; the inner linears must have no other use.
* ``collapse_layout_chain``: a chain of 2 to ``MAX_CHAIN`` reshapes and transposes (at least
  one reshape), each but the last used only by the next, -> the shortest equivalent of:
  nothing, one reshape, one transpose, reshape then transpose, transpose then reshape. Such a chain only moves
  elements, so on the static shapes it is one fixed permutation of them; the rule pushes
  the element indices ``arange(prod(x.shape))`` through the chain and through the candidate
  and matches only when both give the same index tensor, so every match is exact by
  construction. Exporters write attention heads this way (GPT-2's key: Reshape -> Transpose
  -> Reshape -> Transpose -> Reshape, which is one Reshape and one Transpose).
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from systems_envs.graph.ir import Graph
from systems_envs.rewrite.rule import Match
from systems_envs.rewrite.rules.helpers import UNARY, BaseRule, producer, replace, single_use


MAX_LINEARS = 4  # longest chain of linears and element-wise unary ops linear_through_reshape looks through


class LinearThroughReshape(BaseRule):
    name = "linear_through_reshape"
    family = "reshape"
    anchor_ops = frozenset({"reshape"})
    radius = MAX_LINEARS + 1

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        out = g.nodes[nid]
        if out.op != "reshape":
            return []
        lins = []
        ref = out.inputs[0]
        while len(lins) < MAX_LINEARS:
            lin = producer(g, ref, "linear", *UNARY)
            if lin is None or not single_use(g, lin.id):
                break
            lins.append(lin)
            ref = lin.inputs[0]
        flat = producer(g, ref, "reshape")
        if flat is None or not any(lin.op == "linear" for lin in lins):
            return []
        x = g.shape(flat.inputs[0])
        if len(x) < 3 or flat.shape != (math.prod(x[:-1]), x[-1]):
            return []
        if out.shape != tuple(x[:-1]) + (lins[0].shape[-1],):
            return []
        return [self.m((nid, *(lin.id for lin in lins), flat.id))]

    def apply(self, g: Graph, match: Match) -> set[int]:
        out, *lins, flat = (g.nodes[i] for i in match.nodes)
        ref, added = flat.inputs[0], set()
        for lin in reversed(lins):
            r = g.add(lin.op, [ref, *lin.inputs[1:]], **lin.attrs)
            ref = (r, 0)
            added.add(r)
        return added | replace(g, (out.id, 0), ref)


MAX_CHAIN = 6  # longest chain of layout ops the rule collapses (its radius is MAX_CHAIN - 1)
MAX_PERM_RANK = 6  # transposes of higher rank are not searched for (rank! candidate perms)
Step = tuple  # ("reshape", shape) or ("transpose", perm)


def _run(idx: np.ndarray, steps: tuple[Step, ...]) -> np.ndarray:
    for op, arg in steps:
        idx = idx.reshape(arg) if op == "reshape" else np.transpose(idx, arg)
    return idx


def _perms(src: tuple[int, ...], dst: tuple[int, ...] | None):
    """Permutations ``p`` of ``range(len(src))`` (with ``src[p[j]] == dst[j]`` when ``dst`` is given)."""
    if len(src) > MAX_PERM_RANK:
        return
    for p in itertools.permutations(range(len(src))):
        if dst is None or all(src[i] == d for i, d in zip(p, dst)):
            yield p


def _reshape_then_transpose(out: np.ndarray, x_shape: tuple[int, ...]) -> list[tuple[Step, ...]]:
    """The ``(reshape S, transpose p)`` that can give ``out`` if any does (checked by the caller).

    Each non-unit output axis j steps through the flat input index by a stride; in a row-major
    reshape the axes of S have decreasing strides, so S lists the non-unit output axes by
    decreasing stride. Unit axes carry no data; where they go in S only changes how the pair
    reads. First choice: at the positions the input has its unit axes, when it has as many
    (S then only splits or merges the input's other axes: ViT's q/k/v keep the form the
    exporter wrote, whose transposes onnxruntime folds into its MatMul). Second: each right
    after the non-unit axis before it (first when there is none)."""
    y = out.shape
    first = int(out.reshape(-1)[0])

    def stride(j: int) -> int:
        return int(out[tuple(1 if k == j else 0 for k in range(len(y)))]) - first

    units = [j for j, d in enumerate(y) if d == 1]
    by_stride = sorted((j for j, d in enumerate(y) if d > 1), key=lambda j: -stride(j))
    orders = []
    x_units = [i for i, d in enumerate(x_shape) if d == 1]
    if units and len(x_units) == len(units):
        order = list(by_stride)
        for i, j in zip(x_units, units):
            order.insert(i, j)
        orders.append(order)
    keys, prev = [], None
    for j, d in enumerate(y):
        if d > 1:
            prev = stride(j)
            keys.append((-prev, 0, j))
        else:
            keys.append((-math.inf if prev is None else -prev, 1, j))
    orders.append([j for *_, j in sorted(keys)])
    return [(("reshape", tuple(y[j] for j in order)), ("transpose", tuple(order.index(j) for j in range(len(y)))))
            for order in orders]


@functools.lru_cache(maxsize=4096)
def shortest_layout(x_shape: tuple[int, ...], steps: tuple[Step, ...]) -> tuple[Step, ...] | None:
    """The shortest chain of at most two layout ops equal to ``steps`` on an input of shape ``x_shape``.

    Returns ``()`` (the identity), one step or two steps, whichever comes first in the order
    nothing / reshape / transpose / reshape then transpose / transpose then reshape, and only
    if it is shorter than ``steps``; None otherwise. Equality is decided on the element
    indices, so a returned chain moves every element exactly where ``steps`` does."""
    src = np.arange(math.prod(x_shape), dtype=np.int64).reshape(x_shape)
    out = _run(src, steps)
    y, flat = out.shape, out.reshape(-1)
    in_order = bool(np.array_equal(flat, src.reshape(-1)))

    def candidates():
        if in_order:
            yield () if y == x_shape else (("reshape", y),)
            return
        if len(y) == len(x_shape):
            yield from ((("transpose", p),) for p in _perms(x_shape, y))
        yield from _reshape_then_transpose(out, x_shape)
        for p in _perms(x_shape, None):
            if p != tuple(range(len(p))):
                yield (("transpose", p), ("reshape", y))

    for cand in candidates():
        if len(cand) >= len(steps):
            continue
        if cand and cand[0][0] == "reshape" and cand[0][1] == x_shape:
            cand = cand[1:]
        got = _run(src, cand)
        if got.shape == y and np.array_equal(got, out):
            return cand
    return None


class CollapseLayoutChain(BaseRule):
    name = "collapse_layout_chain"
    family = "reshape"
    anchor_ops = frozenset({"reshape", "transpose"})
    radius = MAX_CHAIN - 1

    @staticmethod
    def _step(n) -> Step:
        return ("reshape", tuple(n.attrs["shape"])) if n.op == "reshape" else ("transpose", tuple(n.attrs["perm"]))

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        """The longest chain ending at ``nid`` whose intermediates have no other use and that collapses;
        it must hold a reshape (``transpose_compose`` already composes transposes)."""
        n = g.nodes[nid]
        if n.op not in self.anchor_ops:
            return []
        chain = [n]
        while len(chain) < MAX_CHAIN:
            p = producer(g, chain[-1].inputs[0], "reshape", "transpose")
            if p is None or not single_use(g, p.id):
                break
            chain.append(p)
        for k in range(len(chain), 0, -1):
            nodes = chain[:k]
            if all(c.op == "transpose" for c in nodes):
                continue
            x = g.shape(nodes[-1].inputs[0])
            plan = shortest_layout(tuple(x), tuple(self._step(c) for c in reversed(nodes)))
            if plan is not None:
                return [self.m(tuple(c.id for c in nodes), plan)]
        return []

    def apply(self, g: Graph, match: Match) -> set[int]:
        out = g.nodes[match.nodes[0]]
        ref, added = g.nodes[match.nodes[-1]].inputs[0], set()
        for op, arg in match.data:
            r = g.add(op, [ref], **({"shape": arg} if op == "reshape" else {"perm": arg}))
            ref = (r, 0)
            added.add(r)
        return added | {ref[0]} | replace(g, (out.id, 0), ref)


RULES = [LinearThroughReshape(), CollapseLayoutChain()]
