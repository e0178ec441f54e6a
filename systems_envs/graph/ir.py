"""The computation-graph IR: a DAG of tensor operators with static shapes.

A :class:`Graph` owns :class:`Node` objects keyed by integer id. A node consumes
tensors, each named by a :data:`TensorRef` ``(producer id, output index)``, and produces
one or more tensors whose shapes are inferred when the node is added. Sources are
``input`` and ``weight`` nodes, identified by a unique ``name`` attribute. Graph outputs
are an explicit list of tensor refs.

Nodes are immutable; the graph is mutated only through :meth:`Graph.add`,
:meth:`Graph.replace_uses`, :meth:`Graph.remove` and :meth:`Graph.prune`, which keep a
consumer index up to date so rewrites can work locally. :meth:`Graph.copy` is cheap
(dictionary copies, nodes shared).

Known weight values (e.g. ONNX initializers) live in ``Graph.values`` keyed by weight
name; weights without a value are filled deterministically from a seed by the executor.
A graph imported from a file keeps, in ``Graph.source``, what that file declares and an
export must reproduce (opsets, output names and element types); inputs carry their own
name, shape and ``dtype``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from systems_envs.graph.ops import SOURCE_OPS, Shape, ShapeError, infer_shapes, normalize_attrs

TensorRef = tuple[int, int]


class GraphError(ValueError):
    """A graph is malformed: the message names the node (or input) at fault."""


@dataclasses.dataclass(frozen=True)
class SourceModel:
    """The interface of the model file a graph was imported from, kept for export.

    Attributes:
      opsets: ``((domain, version), ...)`` the file imports (``""`` = the default ONNX domain).
      outputs: ``((name, ONNX element type), ...)``, one per graph output, in order.
      functions: serialized model-local ``FunctionProto`` s, written back unchanged.
    """

    opsets: tuple[tuple[str, int], ...]
    outputs: tuple[tuple[str, int], ...]
    functions: tuple[bytes, ...] = ()

    def opset(self, domain: str = "") -> int | None:
        """The version the file imports for ``domain``, None if it does not."""
        return dict(self.opsets).get(domain)


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Node:
    """One operator. ``shapes`` are its output shapes (most ops have one output)."""

    id: int
    op: str
    inputs: tuple[TensorRef, ...]
    attrs: Mapping[str, Any]
    shapes: tuple[Shape, ...]

    @property
    def shape(self) -> Shape:
        """The shape of output 0."""
        return self.shapes[0]

    @property
    def name(self) -> str:
        """Display name: the source name for inputs/weights, else ``op#id``."""
        return self.attrs.get("name") or f"{self.op}#{self.id}"

    def attr_key(self) -> tuple:
        """Hashable, order-independent view of the attributes."""
        return tuple(sorted((k, v) for k, v in self.attrs.items() if k != "onnx_node"))


def _ref(t: int | TensorRef | Sequence[int]) -> TensorRef:
    if isinstance(t, (int, np.integer)):
        return (int(t), 0)
    a, b = t
    return (int(a), int(b))


class Graph:
    """A mutable DAG of :class:`Node` with shape inference on construction."""

    def __init__(self, name: str = "graph"):
        self.name = name
        self.nodes: dict[int, Node] = {}
        self.outputs: list[TensorRef] = []
        self.values: dict[str, np.ndarray] = {}
        self.source: SourceModel | None = None
        self._uses: dict[int, list[tuple[int, int]]] = {}  # producer -> [(consumer, slot)]
        self._names: dict[str, int] = {}
        self._next_id = 0
        self._topo: list[int] | None = None
        self._hash: str | None = None

    # ------------------------------------------------------------------ construction
    def add(self, op: str, inputs: Iterable[int | TensorRef] = (), **attrs: Any) -> int:
        """Add a node and return its id. Inputs are node ids (output 0) or TensorRefs.

        Raises GraphError naming the node if an input is dangling, an attribute is
        invalid or the shapes are inconsistent.
        """
        refs = tuple(_ref(t) for t in inputs)
        label = attrs.get("name") or f"{op}#{self._next_id}"
        for slot, (src, idx) in enumerate(refs):
            node = self.nodes.get(src)
            if node is None:
                raise GraphError(f"node {label!r}: input {slot} refers to missing node {src} (dangling input)")
            if not 0 <= idx < len(node.shapes):
                raise GraphError(f"node {label!r}: input {slot} refers to output {idx} of {node.name!r}, "
                                 f"which has {len(node.shapes)} output(s)")
        try:
            norm = normalize_attrs(op, attrs)
            shapes = infer_shapes(op, [self.nodes[s].shapes[i] for s, i in refs], norm)
        except ShapeError as e:
            raise GraphError(f"node {label!r} ({op}): {e}") from None
        if op in SOURCE_OPS:
            name = norm["name"]
            if name in self._names:
                raise GraphError(f"node {name!r}: duplicate {op} name")
            if any(d < 1 for d in shapes[0]):
                raise GraphError(f"node {name!r}: shape {shapes[0]} has a non-positive dimension")
        nid = self._next_id
        self._next_id += 1
        node = Node(nid, op, refs, norm, tuple(shapes))
        self.nodes[nid] = node
        self._uses[nid] = []
        for slot, (src, _) in enumerate(refs):
            self._uses[src].append((nid, slot))
        if op in SOURCE_OPS:
            self._names[norm["name"]] = nid
        self._dirty()
        return nid

    def input(self, name: str, shape: Sequence[int]) -> int:
        """Add a graph input."""
        return self.add("input", name=name, shape=tuple(shape))

    def weight(self, name: str, shape: Sequence[int], init: str = "normal", value: np.ndarray | None = None) -> int:
        """Add a weight. ``init`` in normal|positive|ones|zeros says how to fill it when no value is known."""
        nid = self.add("weight", name=name, shape=tuple(shape), init=init)
        if value is not None:
            value = np.asarray(value, dtype=np.float32)
            if value.shape != tuple(shape):
                raise GraphError(f"weight {name!r}: value shape {value.shape} differs from {tuple(shape)}")
            self.values[name] = value
        return nid

    def set_outputs(self, outputs: Iterable[int | TensorRef]) -> None:
        """Declare the graph outputs."""
        refs = [_ref(t) for t in outputs]
        for r in refs:
            if r[0] not in self.nodes or r[1] >= len(self.nodes[r[0]].shapes):
                raise GraphError(f"graph {self.name!r}: output {r} is not a tensor of the graph")
        self.outputs = refs
        self._dirty()

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, nid: int) -> bool:
        return nid in self.nodes

    def __getitem__(self, nid: int) -> Node:
        return self.nodes[nid]

    def shape(self, t: int | TensorRef) -> Shape:
        """Shape of a tensor."""
        src, idx = _ref(t)
        return self.nodes[src].shapes[idx]

    def uses(self, nid: int) -> list[tuple[int, int]]:
        """``[(consumer id, input slot)]`` of every use of any output of ``nid``."""
        return list(self._uses[nid])

    def tensor_uses(self, t: TensorRef) -> list[tuple[int, int]]:
        """Uses of one specific output tensor."""
        return [(c, s) for c, s in self._uses[t[0]] if self.nodes[c].inputs[s] == t]

    def is_output(self, nid: int) -> bool:
        return any(src == nid for src, _ in self.outputs)

    def node_by_name(self, name: str) -> Node:
        return self.nodes[self._names[name]]

    @property
    def inputs(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.op == "input"]

    @property
    def weights(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.op == "weight"]

    def compute_nodes(self) -> list[Node]:
        """All nodes except inputs and weights, in topological order."""
        return [self.nodes[i] for i in self.topo_order() if self.nodes[i].op not in SOURCE_OPS]

    def op_counts(self) -> dict[str, int]:
        """Number of compute nodes of each op type (inputs and weights excluded)."""
        return dict(sorted(Counter(n.op for n in self.compute_nodes()).items()))

    def num_ops(self) -> int:
        """Number of compute nodes (TASO's op count: inputs and weights excluded)."""
        return sum(1 for n in self.nodes.values() if n.op not in SOURCE_OPS)

    def is_constant(self, nid: int, _memo: dict | None = None) -> bool:
        """True if the node's value depends on weights only (foldable at load time)."""
        memo = {} if _memo is None else _memo
        stack = [nid]
        while stack:
            cur = stack[-1]
            if cur in memo:
                stack.pop()
                continue
            node = self.nodes[cur]
            if node.op == "input":
                memo[cur] = False
            elif node.op == "weight":
                memo[cur] = True
            else:
                pending = [s for s, _ in node.inputs if s not in memo]
                if pending:
                    stack.extend(pending)
                    continue
                memo[cur] = bool(node.inputs) and all(memo[s] for s, _ in node.inputs)
            stack.pop()
        return memo[nid]

    def constant_nodes(self) -> set[int]:
        """Ids of all nodes whose value depends on weights only."""
        memo: dict[int, bool] = {}
        for nid in self.topo_order():
            node = self.nodes[nid]
            if node.op == "weight":
                memo[nid] = True
            elif node.op == "input":
                memo[nid] = False
            else:
                memo[nid] = bool(node.inputs) and all(memo[s] for s, _ in node.inputs)
        return {k for k, v in memo.items() if v}

    # ------------------------------------------------------------------ order and hash
    def topo_order(self) -> list[int]:
        """Node ids in a deterministic topological order (cached until a mutation)."""
        if self._topo is None:
            self._topo = self._fast_topo()
            if self._topo is None:  # dangling input or cycle: the reference sort names the node
                self._topo = topological_sort(
                    {nid: [s for s, _ in n.inputs] for nid, n in self.nodes.items()},
                    label=lambda nid: self.nodes[nid].name,
                )
        return self._topo

    def _fast_topo(self) -> list[int] | None:
        """The order of :func:`topological_sort` (Kahn, ties by ascending id) computed from the
        consumer index; None if the graph has a dangling input or a cycle."""
        import heapq

        nodes, uses = self.nodes, self._uses
        indeg = {nid: len(n.inputs) for nid, n in nodes.items()}
        heap = sorted(nid for nid, d in indeg.items() if d == 0)
        order = []
        push, pop = heapq.heappush, heapq.heappop
        while heap:
            k = pop(heap)
            order.append(k)
            for u, _ in uses[k]:
                d = indeg[u] - 1
                indeg[u] = d
                if d == 0:
                    push(heap, u)
        return order if len(order) == len(nodes) else None

    def node_hashes(self) -> dict[int, bytes]:
        """Structural hash of every node: op, attributes, shapes and its inputs' hashes."""
        out: dict[int, bytes] = {}
        for nid in self.topo_order():
            n = self.nodes[nid]
            h = hashlib.blake2b(digest_size=16)
            h.update(repr((n.op, n.attr_key(), n.shapes)).encode())
            for src, idx in n.inputs:
                h.update(out[src])
                h.update(idx.to_bytes(2, "little"))
            out[nid] = h.digest()
        return out

    def hash(self) -> str:
        """Stable structural hash: equal for graphs that differ only in node ids/insertion order."""
        if self._hash is None:
            nh = self.node_hashes()
            h = hashlib.blake2b(digest_size=16)
            for d in sorted(nh.values()):
                h.update(d)
            h.update(b"|outputs|")
            for src, idx in self.outputs:
                h.update(nh[src])
                h.update(idx.to_bytes(2, "little"))
            self._hash = h.hexdigest()
        return self._hash

    # ------------------------------------------------------------------ mutation
    def replace_uses(self, old: TensorRef, new: TensorRef) -> None:
        """Re-point every use of tensor ``old`` (and graph outputs) to tensor ``new``.

        Shapes must match exactly. Does not check for cycles; call :meth:`validate`
        (or rely on :meth:`topo_order`) after a batch of rewrites if unsure.
        """
        old, new = _ref(old), _ref(new)
        if self.shape(old) != self.shape(new):
            raise GraphError(f"cannot replace {self.nodes[old[0]].name!r} {self.shape(old)} "
                             f"with {self.nodes[new[0]].name!r} {self.shape(new)}: shapes differ")
        for cid, slot in self.tensor_uses(old):
            c = self.nodes[cid]
            ins = list(c.inputs)
            ins[slot] = new
            self.nodes[cid] = dataclasses.replace(c, inputs=tuple(ins))
            self._uses[old[0]].remove((cid, slot))
            self._uses[new[0]].append((cid, slot))
        self.outputs = [new if o == old else o for o in self.outputs]
        self._dirty()

    def remove(self, nid: int) -> None:
        """Remove a node that nothing uses and that is not a graph output."""
        if self._uses[nid] or self.is_output(nid):
            raise GraphError(f"cannot remove {self.nodes[nid].name!r}: it is still used")
        node = self.nodes.pop(nid)
        del self._uses[nid]
        for slot, (src, _) in enumerate(node.inputs):
            self._uses[src].remove((nid, slot))
        if node.op in SOURCE_OPS:
            del self._names[node.attrs["name"]]
            self.values.pop(node.attrs["name"], None)
        self._dirty()

    def prune(self, keep_sources: bool = True) -> list[int]:
        """Remove compute nodes (and, unless ``keep_sources``, inputs/weights) that no output depends on.

        Returns the removed ids.
        """
        live: set[int] = set()
        stack = [s for s, _ in self.outputs]
        while stack:
            nid = stack.pop()
            if nid in live:
                continue
            live.add(nid)
            stack.extend(s for s, _ in self.nodes[nid].inputs)
        removed = []
        for nid in reversed(self.topo_order()):
            n = self.nodes[nid]
            if nid in live or (keep_sources and n.op in SOURCE_OPS):
                continue
            if not self._uses[nid]:
                self.remove(nid)
                removed.append(nid)
        return removed

    def copy(self) -> "Graph":
        """Independent copy (nodes are immutable and shared)."""
        g = Graph.__new__(Graph)
        g.name = self.name
        g.nodes = dict(self.nodes)
        g.outputs = list(self.outputs)
        g.values = dict(self.values)
        g.source = self.source
        g._uses = {k: list(v) for k, v in self._uses.items()}
        g._names = dict(self._names)
        g._next_id = self._next_id
        g._topo = None if self._topo is None else list(self._topo)
        g._hash = self._hash
        return g

    def _dirty(self) -> None:
        self._topo = None
        self._hash = None

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check acyclicity, input references, shapes and outputs; raise GraphError naming the node."""
        for nid, n in self.nodes.items():
            for slot, (src, idx) in enumerate(n.inputs):
                if src not in self.nodes or idx >= len(self.nodes[src].shapes):
                    raise GraphError(f"node {n.name!r}: input {slot} is dangling ({src}:{idx})")
        order = self.topo_order()
        for nid in order:
            n = self.nodes[nid]
            try:
                shapes = infer_shapes(n.op, [self.nodes[s].shapes[i] for s, i in n.inputs], n.attrs)
            except ShapeError as e:
                raise GraphError(f"node {n.name!r} ({n.op}): {e}") from None
            if tuple(shapes) != n.shapes:
                raise GraphError(f"node {n.name!r} ({n.op}): stored shapes {n.shapes} differ from inferred {shapes}")
        if not self.outputs:
            raise GraphError(f"graph {self.name!r} has no outputs")
        for src, idx in self.outputs:
            if src not in self.nodes or idx >= len(self.nodes[src].shapes):
                raise GraphError(f"graph {self.name!r}: output {src}:{idx} is dangling")

    def summary(self) -> str:
        """One line: name, op count, inputs and outputs."""
        ins = ", ".join(f"{n.name}{list(n.shape)}" for n in self.inputs)
        outs = ", ".join(f"{list(self.shape(o))}" for o in self.outputs)
        return f"{self.name}: {self.num_ops()} ops, inputs {ins}, outputs {outs}"


def topological_sort(deps: Mapping[int, Sequence[int]], label=lambda k: str(k)) -> list[int]:
    """Kahn's algorithm; ties broken by ascending key. Raises GraphError naming a node on a cycle."""
    import heapq

    indeg = {k: 0 for k in deps}
    users: dict[int, list[int]] = {k: [] for k in deps}
    for k, ds in deps.items():
        for d in ds:
            if d not in indeg:
                raise GraphError(f"node {label(k)!r}: input refers to missing node {d} (dangling input)")
            indeg[k] += 1
            users[d].append(k)
    heap = [k for k, v in indeg.items() if v == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        k = heapq.heappop(heap)
        order.append(k)
        for u in users[k]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(heap, u)
    if len(order) != len(deps):
        stuck = min(k for k, v in indeg.items() if v > 0)
        raise GraphError(f"node {label(stuck)!r} is on a cycle: the graph is not a DAG")
    return order
