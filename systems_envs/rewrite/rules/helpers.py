"""Shared helpers of the hand-written rules: use checks, shape probes, reachability, builders.

All helpers work on :class:`~systems_envs.graph.ir.Graph` tensors named by TensorRef
``(node id, output index)``.
"""
from __future__ import annotations

import weakref
from typing import Callable, Hashable, Iterable, Sequence

from systems_envs.graph.ir import Graph, Node, TensorRef
from systems_envs.graph.ops import UNARY_OPS, Shape, ShapeError, infer_shapes, normalize_attrs
from systems_envs.rewrite.rule import Match, Rule

UNARY = UNARY_OPS  # element-wise, one input, no attributes (they commute with transpose, concat, split)
BINARY = ("add", "sub", "mul", "div")  # element-wise with broadcasting, no attributes
CONV_GEOMETRY = ("strides", "pads", "dilations", "groups")


class BaseRule(Rule):
    """A rule with class-level ``name``/``family`` and a helper to build matches."""

    def m(self, nodes: Sequence[int], data: Hashable = ()) -> Match:
        return Match(self.name, tuple(nodes), data)


def single_use(g: Graph, nid: int) -> bool:
    """The node has exactly one use and is not a graph output (so a rewrite can drop it)."""
    return len(g.uses(nid)) == 1 and not g.is_output(nid)


def only_used_by(g: Graph, nid: int, user: int) -> bool:
    """Every use of ``nid`` is by ``user`` (possibly in several slots) and it is not an output."""
    return bool(g.uses(nid)) and all(c == user for c, _ in g.uses(nid)) and not g.is_output(nid)


def producer(g: Graph, ref: TensorRef, *ops: str) -> Node | None:
    """The node producing ``ref`` if its op is one of ``ops`` (any op when none given)."""
    n = g.nodes[ref[0]]
    return n if not ops or n.op in ops else None


def sole_producers(g: Graph, n: Node, *ops: str, same: Callable[[Node], Hashable] | None = None,
                   distinct: bool = True) -> list[Node] | None:
    """The producers of all of ``n``'s inputs, in input order, when every one has an op in ``ops``,
    is used only by ``n`` and (with ``same``) all give the same ``same(producer)``; with ``distinct``
    no producer may feed two inputs. None otherwise."""
    ps = [producer(g, r, *ops) for r in n.inputs]
    if any(p is None for p in ps) or (same is not None and len({same(p) for p in ps}) != 1):
        return None
    if distinct and len({p.id for p in ps}) != len(ps):
        return None
    return ps if all(only_used_by(g, p.id, n.id) for p in ps) else None


def infer(op: str, shapes: Sequence[Shape], **attrs) -> Shape | None:
    """Output-0 shape of ``op`` on ``shapes``, or None when the op would be invalid."""
    try:
        return infer_shapes(op, list(shapes), normalize_attrs(op, attrs))[0]
    except ShapeError:
        return None


def infer_all(op: str, shapes: Sequence[Shape], **attrs) -> list[Shape] | None:
    """All output shapes of ``op`` on ``shapes``, or None when invalid."""
    try:
        return infer_shapes(op, list(shapes), normalize_attrs(op, attrs))
    except ShapeError:
        return None


def consumers(g: Graph, ref: TensorRef, op: str, slot: int) -> list[Node]:
    """Nodes of type ``op`` that read tensor ``ref`` in input ``slot``, by ascending id."""
    ids = sorted({c for c, s in g.tensor_uses(ref) if s == slot and g.nodes[c].op == op})
    return [g.nodes[c] for c in ids]


def norm_axis(axis: int, rank: int) -> int:
    return axis % rank


_POS: "weakref.WeakKeyDictionary[Graph, tuple[list[int], dict[int, int]]]" = weakref.WeakKeyDictionary()


def _positions(g: Graph) -> dict[int, int]:
    order = g.topo_order()  # the same list object until the graph changes
    cached = _POS.get(g)
    if cached is None or cached[0] is not order:
        cached = (order, {nid: i for i, nid in enumerate(order)})
        _POS[g] = cached
    return cached[1]


def reaches(g: Graph, src: int, targets: Iterable[int]) -> bool:
    """True if node ``src`` is one of ``targets`` or an ancestor of one (a path src -> target)."""
    pos = _positions(g)
    lo = pos[src]
    stack, seen = list(targets), set()
    while stack:
        n = stack.pop()
        if n == src:
            return True
        if n in seen or pos[n] < lo:
            continue
        seen.add(n)
        stack.extend(s for s, _ in g.nodes[n].inputs)
    return False


def merge_is_acyclic(g: Graph, a: Node, b: Node) -> bool:
    """Merging nodes ``a`` and ``b`` into one node (reading both nodes' inputs) keeps the graph a DAG."""
    return not reaches(g, a.id, [s for s, _ in b.inputs]) and not reaches(g, b.id, [s for s, _ in a.inputs])


def replace(g: Graph, old: TensorRef, new: TensorRef) -> set[int]:
    """Re-point all uses of ``old`` to ``new``; return the ids of the consumers changed."""
    changed = {c for c, _ in g.tensor_uses(old)}
    g.replace_uses(old, new)
    return changed


def concat(g: Graph, refs: Sequence[TensorRef], axis: int) -> int:
    """Add ``concat(refs, axis)`` and return its id."""
    return g.add("concat", list(refs), axis=axis)


def conv_attrs(n: Node, **override) -> dict:
    """The attributes of a conv2d node, with ``override`` applied."""
    attrs = {k: n.attrs[k] for k in CONV_GEOMETRY + ("activation",)}
    attrs.update(override)
    return attrs


def same_conv_geometry(g: Graph, a: Node, b: Node) -> bool:
    """Same strides, pads, dilations, groups and kernel size."""
    return (all(a.attrs[k] == b.attrs[k] for k in CONV_GEOMETRY)
            and g.shape(a.inputs[1])[2:] == g.shape(b.inputs[1])[2:])
