"""Recognise composite operators that exporters write as primitive ops.

PyTorch's exporters write exact GELU below opset 20 as ``x * 0.5 * (1 + erf(x / sqrt 2))``
(in several operand orders), Hugging Face's ``gelu_new`` (GPT-2) as its tanh formula
``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, RMSNorm (T5, LLaMA) as
``x * reciprocal(sqrt(mean(x^2) + eps)) * w`` and LayerNorm (below opset 17, or hand
written) as ``(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * w + b``.
:func:`recognize` replaces each such subgraph by one IR op (``gelu``, ``gelu_tanh``,
``rmsnorm``, ``layernorm``), so rewrites and cost models see one operator, and the
exporter writes it back in a form the runtime fuses (see ``onnx_io``).

How a subgraph is accepted (sound by construction plus a numeric check):

* an *anchor* fixes the candidate input ``x``: an ``erf`` whose input is ``x / c`` or
  ``x * c`` (GELU), a ``pow(x, 3)`` (tanh GELU), a last-axis ``reduce_mean`` of
  ``pow(x, 2)`` / ``x * x`` (RMSNorm) or of ``x`` itself (LayerNorm);
* the *region* of a candidate root is every node reached backwards from the root through
  element-wise ops and last-axis means, stopping at ``x`` and at constants; it must have
  no other leaf, and every region node but the root must be used only inside the region;
* the region must contain the operator's ingredients (``erf``; ``tanh``; one mean; two
  means), its constants must be scalars except a scale (and a shift) of shape ``(d,)``;
* evaluated in float64 on random ``x`` (and each choice of scale/shift/epsilon among its
  constants), the region equals the operator to a relative 1e-7.

Roots are tried from the furthest consumer of the anchor back to the nearest, so the
largest matching subgraph wins.
"""
from __future__ import annotations

import numpy as np

from systems_envs.graph.ir import Graph, Node, TensorRef
from systems_envs.graph.ops import normalize_attrs

_ELEMENTWISE = {"add", "sub", "mul", "div", "erf", "tanh", "sqrt", "reciprocal", "pow", "neg"}
_REGION_OPS = _ELEMENTWISE | {"reduce_mean"}
_MAX_REGION = 24
_MAX_ROOT_DEPTH = 10


def _is_last_axis_mean(g: Graph, n: Node) -> bool:
    if n.op != "reduce_mean":
        return False
    rank = len(g.shape(n.inputs[0]))
    return tuple(n.attrs["axes"]) == (rank - 1,) and bool(n.attrs["keepdims"])


def _anchors(g: Graph) -> list[tuple[int, TensorRef, str]]:
    """(anchor node, candidate x, operator) triples in topological order."""
    out = []
    const = g.constant_nodes()
    for nid in g.topo_order():
        n = g.nodes[nid]
        if nid in const:
            continue
        if n.op == "erf":
            t = g.nodes[n.inputs[0][0]]
            if t.op in ("div", "mul"):
                xs = [r for r in t.inputs if r[0] not in const]
                if len(xs) == 1:
                    out.append((nid, xs[0], "gelu"))
        elif n.op == "pow" and n.attrs["exponent"] == 3.0:
            out.append((nid, n.inputs[0], "gelu_tanh"))
        elif _is_last_axis_mean(g, n):
            src = g.nodes[n.inputs[0][0]]
            if src.op == "pow" and src.attrs["exponent"] == 2.0:
                out.append((nid, src.inputs[0], "rmsnorm"))
            elif src.op == "mul" and src.inputs[0] == src.inputs[1]:
                out.append((nid, src.inputs[0], "rmsnorm"))
            out.append((nid, n.inputs[0], "layernorm"))
    return out


def _roots(g: Graph, anchor: int) -> list[int]:
    """Region-op consumers reachable from the anchor (at most a few steps), furthest first."""
    pos = {nid: i for i, nid in enumerate(g.topo_order())}
    seen, frontier = {anchor}, [anchor]
    for _ in range(_MAX_ROOT_DEPTH):
        nxt = []
        for nid in frontier:
            for c, _ in g.uses(nid):
                if c not in seen and g.nodes[c].op in _REGION_OPS:
                    seen.add(c)
                    nxt.append(c)
        frontier = nxt
    return sorted(seen, key=lambda k: -pos[k])


def _region(g: Graph, root: int, x: TensorRef, const: set[int]) -> tuple[list[int], list[TensorRef]] | None:
    """Region nodes (topological order) and constant leaves of ``root`` bounded by ``x``."""
    region: set[int] = set()
    leaves: set[TensorRef] = set()
    stack = [root]
    while stack:
        nid = stack.pop()
        if nid in region:
            continue
        n = g.nodes[nid]
        if n.op not in _REGION_OPS or len(n.shapes) != 1:
            return None
        region.add(nid)
        if len(region) > _MAX_REGION:
            return None
        for r in n.inputs:
            if r == x:
                continue
            if r[0] in const:
                leaves.add(r)
            elif r[0] not in region:
                stack.append(r[0])
    for nid in region - {root}:
        if g.is_output(nid) or any(c not in region for c, _ in g.uses(nid)):
            return None
    order = [nid for nid in g.topo_order() if nid in region]
    if not any(r == x for nid in order for r in g.nodes[nid].inputs):
        return None
    return order, sorted(leaves)


def _run(op: str, args: list[np.ndarray], **attrs) -> np.ndarray:
    from systems_envs.graph.executor import KERNELS

    node = Node(-1, op, (), normalize_attrs(op, attrs), ())
    return KERNELS[op](node, args)[0]


def _test_input(shape: tuple, norm: bool, rng: np.random.Generator) -> np.ndarray:
    """Random float64 x of the region's rank; small (3 rows of the last axis) for norms."""
    if norm:
        test = (1,) * max(len(shape) - 2, 0) + ((3,) if len(shape) >= 2 else ()) + (shape[-1],)
        return rng.standard_normal(test) * 2.0 + 0.5
    test = (1,) * max(len(shape) - 1, 0) + (97,)
    return np.linspace(-6.0, 6.0, 97).reshape(test)


def _evaluate(g: Graph, order: list[int], x: TensorRef, xv: np.ndarray, consts: dict) -> np.ndarray | None:
    from systems_envs.graph.executor import KERNELS

    vals: dict[TensorRef, np.ndarray] = {x: xv}
    vals.update(consts)
    with np.errstate(all="ignore"):
        for nid in order:
            n = g.nodes[nid]
            vals[(nid, 0)] = np.asarray(KERNELS[n.op](n, [vals[r] for r in n.inputs])[0], dtype=np.float64)
    return vals[(order[-1], 0)]


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all(np.isfinite(a))) and np.allclose(a, b, rtol=1e-7, atol=1e-9)


def _match(g: Graph, root: int, x: TensorRef, op: str, const: set[int]) -> tuple[list, dict] | None:
    """(IR inputs, attributes) of ``op`` equal to the region of ``root``, or None."""
    from systems_envs.graph.executor import constant_values

    if g.nodes[root].shape != g.shape(x):
        return None
    found = _region(g, root, x, const)
    if found is None:
        return None
    order, leaves = found
    ops = [g.nodes[n].op for n in order]
    means = ops.count("reduce_mean")
    need = {"gelu": ("erf", 0), "gelu_tanh": ("tanh", 0), "rmsnorm": (None, 1), "layernorm": (None, 2)}[op]
    if (need[0] is not None and need[0] not in ops) or means != need[1]:
        return None
    if any(not _is_last_axis_mean(g, g.nodes[n]) for n in order if g.nodes[n].op == "reduce_mean"):
        return None
    values = {r: v.astype(np.float64) for r, v in constant_values(g, leaves, dtype=np.float64).items()}
    d = g.shape(x)[-1]
    scalars = [r for r, v in values.items() if v.size == 1 and v.ndim <= len(g.shape(x))]
    vectors = [r for r, v in values.items() if v.shape == (d,) and r not in scalars]
    if len(scalars) + len(vectors) != len(values):
        return None
    norm = op in ("rmsnorm", "layernorm")
    xv = _test_input(g.shape(x), norm, np.random.default_rng(0))
    got = _evaluate(g, order, x, xv, {r: v.reshape(v.shape) for r, v in values.items()})
    if got is None:
        return None
    if op in ("gelu", "gelu_tanh"):
        return ([x], {}) if not vectors and _close(got, _run(op, [xv])) else None
    ones, zeros = np.ones(d), np.zeros(d)
    eps_choices = [(r, float(values[r].reshape(()))) for r in scalars if 0 < float(values[r].reshape(())) < 1e-2]
    for _, eps in eps_choices:
        if op == "rmsnorm":
            for gamma in vectors + [None]:
                gv = ones if gamma is None else values[gamma]
                if len(vectors) <= 1 and _close(got, _run("rmsnorm", [xv, gv], epsilon=eps)):
                    return [x, gamma], {"epsilon": eps}
        else:
            choices = [(gm, bt) for gm in vectors + [None] for bt in vectors + [None]
                       if gm is None or bt is None or gm != bt]
            for gamma, beta in choices:
                if len([v for v in (gamma, beta) if v is not None]) != len(vectors):
                    continue
                gv = ones if gamma is None else values[gamma]
                bv = zeros if beta is None else values[beta]
                if _close(got, _run("layernorm", [xv, gv, bv], epsilon=eps)):
                    return [x, gamma, beta], {"epsilon": eps}
    return None


def _fresh(g: Graph, base: str) -> str:
    name, k = base, 1
    while name in g._names:
        name, k = f"{base}~{k}", k + 1
    return name


def recognize(graph: Graph) -> dict[str, int]:
    """Replace primitive-op GELU / tanh-GELU / RMSNorm / LayerNorm subgraphs in place.

    Returns how many of each were recognised. Dead nodes left behind are pruned
    (inputs and weights are kept).
    """
    counts: dict[str, int] = {}
    const = graph.constant_nodes()
    for anchor, x, op in _anchors(graph):
        if anchor not in graph.nodes or x[0] not in graph.nodes:
            continue
        for root in _roots(graph, anchor):
            found = _match(graph, root, x, op, const)
            if found is None:
                continue
            ins, attrs = found
            d = graph.shape(x)[-1]
            refs = [x]
            if op in ("rmsnorm", "layernorm"):
                fills = (np.ones(d, np.float32), np.zeros(d, np.float32))
                for k, r in enumerate(ins[1:]):
                    if r is None:
                        r = (graph.weight(_fresh(graph, f"{graph.nodes[root].name}::{('scale', 'shift')[k]}"), (d,),
                                          value=fills[k]), 0)
                    refs.append(r)
            new = graph.add(op, refs, **attrs)
            graph.replace_uses((root, 0), (new, 0))
            graph.prune(keep_sources=True)
            counts[op] = counts.get(op, 0) + 1
            break
    return counts


__all__ = ["recognize"]
