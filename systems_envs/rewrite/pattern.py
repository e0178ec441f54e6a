"""Generic pattern rules: a source pattern DAG of TASO operators and a destination template.

A :class:`PatternSpec` is TASO's ``GraphSubst.Rule`` in a normalized form:

- ``src`` / ``dst``: tuples of :class:`PatOp`. An op input is a pair ``(op_id, ts_id)``:
  ``op_id >= 0`` indexes an *earlier* op of the same side (``ts_id`` = its output
  index); ``op_id < 0`` is a pattern variable (any tensor; the same negative id is the
  same tensor on both sides and in every use).
- ``mapped``: ``(src_op, src_ts, dst_op, dst_ts)`` per replaced output, root first.

Operators are TASO op-type ids (``CONV2D`` ...) with the semantic parameters only
(conv: STRIDE_H, STRIDE_W, PAD, ACTI; concat: AXIS, NUMDIM; split: AXIS, NUM_OUTPUTS;
matmul: ACTI). They map to IR ops as follows (:func:`plan_op`):

========  ==========================================================================
CONV2D    ``conv2d``: strides; pads explicit (PAD 0 = SAME = ``ops.same_pads`` for the
          actual shapes, 1 = VALID = zeros); groups = C_in / weight.shape[1]; no bias.
RELU      ``relu``
CONCAT    ``concat`` over exactly the pattern's inputs; NUMDIM must equal their rank.
SPLIT     ``split`` on AXIS into NUM_OUTPUTS parts. TASO splits a tensor at the sizes a
          previous concat recorded on it, so the sizes are determined when instantiating:
          (1) when every output of the split is a mapped output, output k takes the size
          (along AXIS) of the source tensor it replaces; otherwise (2) when the split's
          input is a CONCAT of the template on the same axis with NUM_OUTPUTS inputs, the
          sizes of those inputs; otherwise the template cannot be instantiated.
EW_ADD    ``add`` / ``mul``; both operands must have identical shapes (TASO does not
EW_MUL    broadcast).
MATMUL    ``matmul`` with activation; operands of equal rank >= 2, equal batch dims.
========  ==========================================================================

:class:`PatternRule` implements :class:`~systems_envs.rewrite.rule.Rule`: matching is
anchored at the graph node that plays the first mapped source op (the root).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from systems_envs.graph.ir import Graph, GraphError, TensorRef
from systems_envs.graph.ops import Shape, ShapeError, infer_shapes, normalize_attrs, same_pads
from systems_envs.rewrite.rule import Match, Rule

# TASO OpType ids (include/taso/ops.h) used by the generated rules.
CONV2D, RELU, CONCAT, SPLIT, EW_ADD, EW_MUL, MATMUL = 3, 8, 12, 13, 16, 17, 18
OP_NAMES = {CONV2D: "conv2d", RELU: "relu", CONCAT: "concat", SPLIT: "split",
            EW_ADD: "ewadd", EW_MUL: "ewmul", MATMUL: "matmul"}
# PMParameter keys.
NUM_INPUTS, NUM_OUTPUTS, KERNEL_H, KERNEL_W, STRIDE_H, STRIDE_W, PAD, ACTI, NUMDIM, AXIS = 1, 2, 4, 5, 6, 7, 8, 9, 10, 11
# Semantic parameters kept per op type (others, e.g. KERNEL_H, are implied by shapes).
PARAMS = {CONV2D: (STRIDE_H, STRIDE_W, PAD, ACTI), RELU: (), CONCAT: (AXIS, NUMDIM),
          SPLIT: (AXIS, NUM_OUTPUTS), EW_ADD: (), EW_MUL: (), MATMUL: (ACTI,)}
ARITY = {CONV2D: 2, RELU: 1, SPLIT: 1, EW_ADD: 2, EW_MUL: 2, MATMUL: 2}  # CONCAT: any >= 1
_IR_OP = {CONV2D: "conv2d", RELU: "relu", CONCAT: "concat", SPLIT: "split", EW_ADD: "add", EW_MUL: "mul",
          MATMUL: "matmul"}
ACTI_NAMES = {0: "none", 1: "sigmoid", 2: "relu", 3: "tanh"}
ACTI_CODES = {v: k for k, v in ACTI_NAMES.items()}
PAD_SAME, PAD_VALID = 0, 1


class UnsupportedRuleError(ValueError):
    """A rule uses an operator or parameter this module cannot express."""


@dataclasses.dataclass(frozen=True)
class PatOp:
    """One TASO operator of a pattern: type id, inputs ``((op_id, ts_id), ...)``, params ``((key, value), ...)`` sorted."""

    type: int
    inputs: tuple[tuple[int, int], ...]
    params: tuple[tuple[int, int], ...]

    def p(self, key: int) -> int:
        for k, v in self.params:
            if k == key:
                return v
        raise UnsupportedRuleError(f"{OP_NAMES.get(self.type, self.type)} op lacks parameter {key}")

    @property
    def num_outputs(self) -> int:
        return self.p(NUM_OUTPUTS) if self.type == SPLIT else 1


@dataclasses.dataclass(frozen=True)
class PatternSpec:
    """A substitution: source pattern ``src``, destination template ``dst``, ``mapped`` outputs."""

    src: tuple[PatOp, ...]
    dst: tuple[PatOp, ...]
    mapped: tuple[tuple[int, int, int, int], ...]

    def __post_init__(self):
        for side, ops in (("src", self.src), ("dst", self.dst)):
            for i, op in enumerate(ops):
                if op.type not in OP_NAMES:
                    raise UnsupportedRuleError(f"{side} op {i}: unsupported TASO op type {op.type}")
                want = ARITY.get(op.type)
                if (want is not None and len(op.inputs) != want) or not op.inputs:
                    raise UnsupportedRuleError(f"{side} op {i} ({OP_NAMES[op.type]}): {len(op.inputs)} inputs")
                for k in PARAMS[op.type]:
                    op.p(k)
                for o, t in op.inputs:
                    if o >= i or (o >= 0 and t >= ops[o].num_outputs):
                        raise UnsupportedRuleError(f"{side} op {i}: input ({o}, {t}) is not an earlier op output")
        if not self.mapped:
            raise UnsupportedRuleError("rule maps no outputs")
        for so, st, do, dt in self.mapped:
            if not (0 <= so < len(self.src) and 0 <= do < len(self.dst)):
                raise UnsupportedRuleError(f"mapped output ({so}, {st}) -> ({do}, {dt}) is out of range")
        src_vars = self.variables("src")
        extra = self.variables("dst") - src_vars
        if extra:
            raise UnsupportedRuleError(f"dst uses variables {sorted(extra)} absent from src")

    def variables(self, side: str = "src") -> set[int]:
        return {o for op in getattr(self, side) for o, _ in op.inputs if o < 0}

    def to_text(self) -> str:
        """Tensat-style rendering, one ``src=>dst`` per mapped output joined by ``; ``."""
        def expr(ops, i, t):
            if i < 0:
                return f"?input_{-i}"
            op = ops[i]
            args = [expr(ops, a, b) for a, b in op.inputs]
            if op.type == SPLIT:
                return f"(split_{t} (split {op.p(AXIS)} {args[0]}))"
            pre = [str(op.p(k)) for k in PARAMS[op.type]]
            return "(" + " ".join([OP_NAMES[op.type]] + pre + args) + ")"
        return "; ".join(f"{expr(self.src, so, st)}=>{expr(self.dst, do, dt)}" for so, st, do, dt in self.mapped)


def canonical(spec: PatternSpec) -> PatternSpec:
    """Hash-cons identical ops and renumber both sides in post-order from the mapped outputs.

    Two renderings of the same rule (TASO's pb DAG, Tensat's expression trees) give equal
    canonical specs. Ops not reachable from a mapped output are dropped.
    """
    def canon(ops, roots):
        new: list[PatOp] = []
        index: dict[PatOp, int] = {}
        memo: dict[int, int] = {}

        def visit(i):
            if i < 0:
                return i
            if i not in memo:
                op = ops[i]
                ins = tuple((visit(o), t) for o, t in op.inputs)
                c = PatOp(op.type, ins, op.params)
                if c not in index:
                    index[c] = len(new)
                    new.append(c)
                memo[i] = index[c]
            return memo[i]
        mapping = [visit(r) for r in roots]
        return tuple(new), mapping
    src, sm = canon(spec.src, [m[0] for m in spec.mapped])
    dst, dm = canon(spec.dst, [m[2] for m in spec.mapped])
    mapped = tuple((sm[k], m[1], dm[k], m[3]) for k, m in enumerate(spec.mapped))
    return PatternSpec(src, dst, mapped)


# ----------------------------------------------------------------------------- instantiation


def plan_op(op: PatOp, in_shapes: Sequence[Shape], split_sizes: Sequence[int] | None = None
            ) -> tuple[str, dict[str, Any], list[Shape]]:
    """IR op name, normalized attributes and output shapes of one TASO op on these input shapes.

    Enforces TASO's typing (equal shapes for EW ops, concat rank = NUMDIM, no matmul
    broadcast). Raises ShapeError if the op does not type-check.
    """
    t = op.type
    if t == CONV2D:
        x, w = in_shapes
        if len(x) != 4 or len(w) != 4 or w[1] < 1 or x[1] % w[1]:
            raise ShapeError(f"conv2d: input {x} and weight {w} do not fit")
        sh, sw = op.p(STRIDE_H), op.p(STRIDE_W)
        if op.p(PAD) == PAD_SAME:
            (pt, pb), (pl, pr) = same_pads(x[2], w[2], sh), same_pads(x[3], w[3], sw)
        elif op.p(PAD) == PAD_VALID:
            pt = pb = pl = pr = 0
        else:
            raise UnsupportedRuleError(f"conv2d: unknown PAD {op.p(PAD)}")
        attrs = dict(strides=(sh, sw), pads=(pt, pl, pb, pr), groups=x[1] // w[1],
                     activation=_acti(op))
        name = "conv2d"
    elif t == RELU:
        name, attrs = "relu", {}
    elif t == CONCAT:
        rank = op.p(NUMDIM)
        if any(len(s) != rank for s in in_shapes):
            raise ShapeError(f"concat: NUMDIM {rank} differs from input ranks {list(in_shapes)}")
        name, attrs = "concat", {"axis": op.p(AXIS)}
    elif t == SPLIT:
        if split_sizes is None or len(split_sizes) != op.p(NUM_OUTPUTS):
            raise ShapeError("split: sizes cannot be determined")
        name, attrs = "split", {"axis": op.p(AXIS), "sizes": tuple(split_sizes)}
    elif t in (EW_ADD, EW_MUL):
        if in_shapes[0] != in_shapes[1]:
            raise ShapeError(f"{OP_NAMES[t]}: shapes differ {in_shapes[0]} vs {in_shapes[1]} (no broadcast)")
        name, attrs = ("add" if t == EW_ADD else "mul"), {}
    elif t == MATMUL:
        a, b = in_shapes
        if len(a) != len(b) or len(a) < 2 or a[:-2] != b[:-2]:
            raise ShapeError(f"matmul: operands {a} and {b} differ in rank or batch dims")
        name, attrs = "matmul", {"activation": _acti(op)}
    else:
        raise UnsupportedRuleError(f"unsupported TASO op type {t}")
    attrs = normalize_attrs(name, attrs)
    return name, attrs, infer_shapes(name, list(in_shapes), attrs)


def _acti(op: PatOp) -> str:
    code = op.p(ACTI)
    if code not in ACTI_NAMES:
        raise UnsupportedRuleError(f"{OP_NAMES[op.type]}: unknown ACTI {code}")
    return ACTI_NAMES[code]


def plan_template(ops: Sequence[PatOp], var_shapes: Mapping[int, Shape],
                  out_shapes: Mapping[tuple[int, int], Shape] | None = None
                  ) -> list[tuple[str, dict[str, Any], list[Shape]]]:
    """Plan every op of a side: ``[(ir op, attrs, output shapes)]``; raises ShapeError if it does not type-check.

    ``out_shapes`` maps ``(op, ts)`` of this side to the shape it must produce (the
    replaced source tensors); it fixes split sizes (see module doc) and is checked.
    """
    out_shapes = out_shapes or {}
    plans: list[tuple[str, dict[str, Any], list[Shape]]] = []
    for i, op in enumerate(ops):
        ins = [var_shapes[o] if o < 0 else plans[o][2][t] for o, t in op.inputs]
        sizes = None
        if op.type == SPLIT:
            axis = op.p(AXIS)
            want = [out_shapes.get((i, k)) for k in range(op.p(NUM_OUTPUTS))]
            src_op, _ = op.inputs[0]
            if all(s is not None for s in want):
                if any(len(s) <= axis for s in want):
                    raise ShapeError(f"split: axis {axis} out of range for {want}")
                sizes = [s[axis] for s in want]
            elif src_op >= 0 and ops[src_op].type == CONCAT and ops[src_op].p(AXIS) == axis \
                    and len(ops[src_op].inputs) == op.p(NUM_OUTPUTS):
                cin = [var_shapes[o] if o < 0 else plans[o][2][t] for o, t in ops[src_op].inputs]
                sizes = [s[axis] for s in cin]
        plans.append(plan_op(op, ins, sizes))
    for (o, t), s in out_shapes.items():
        if tuple(plans[o][2][t]) != tuple(s):
            raise ShapeError(f"template output ({o}, {t}) has shape {plans[o][2][t]}, needs {s}")
    return plans


def add_template(graph: Graph, ops: Sequence[PatOp], binding: Mapping[int, TensorRef],
                 out_shapes: Mapping[tuple[int, int], Shape] | None = None) -> list[int]:
    """Add the ops of one side to ``graph`` over bound variables; return the new node ids (op order).

    Raises ShapeError (from planning) if the template does not type-check here.
    """
    var_shapes = {v: graph.shape(r) for v, r in binding.items()}
    plans = plan_template(ops, var_shapes, out_shapes)
    ids: list[int] = []
    for op, (name, attrs, _) in zip(ops, plans):
        refs = [binding[o] if o < 0 else (ids[o], t) for o, t in op.inputs]
        ids.append(graph.add(name, refs, **attrs))
    return ids


# ----------------------------------------------------------------------------- matching


def _pad_mode(node, x: Shape, w: Shape) -> set[int]:
    """Which TASO PAD codes a conv2d node's explicit pads correspond to (maybe both)."""
    modes = set()
    sh, sw = node.attrs["strides"]
    (pt, pb), (pl, pr) = same_pads(x[2], w[2], sh), same_pads(x[3], w[3], sw)
    if tuple(node.attrs["pads"]) == (pt, pl, pb, pr):
        modes.add(PAD_SAME)
    if tuple(node.attrs["pads"]) == (0, 0, 0, 0):
        modes.add(PAD_VALID)
    return modes


# (node, signature id of the pattern op) -> op_matches result. Sound across graphs and
# rewrites: nodes are immutable, and the shapes a node reads (its producers' output shapes)
# never change for a given node object (ids are not reused and replace_uses keeps shapes).
_OP_MATCH_CACHE: dict[tuple, bool] = {}
_OP_MATCH_CACHE_MAX = 200_000
_SIG_IDS: dict[tuple, int] = {}  # (type, params, arity, depthwise) -> small int: what op_matches depends on
DEPTHWISE_VAR = -19  # TASO's generator variable w13 [C, 1, 3, 3]: the only depthwise kernel


def _depthwise(op: PatOp) -> bool:
    """A conv whose kernel is TASO's depthwise variable; every other conv was verified with groups = 1."""
    return op.type == CONV2D and op.inputs[1][0] == DEPTHWISE_VAR


def _sig_id(op: PatOp) -> int:
    return _SIG_IDS.setdefault((op.type, op.params, len(op.inputs), _depthwise(op)), len(_SIG_IDS))


def op_matches(graph: Graph, node, op: PatOp, sig: int | None = None) -> bool:
    """Does graph node ``node`` have the type and attributes of pattern op ``op``? (memoized)

    ``sig`` is ``_sig_id(op)`` if the caller has it precomputed.
    """
    key = (node, _sig_id(op) if sig is None else sig)
    hit = _OP_MATCH_CACHE.get(key)
    if hit is None:
        if len(_OP_MATCH_CACHE) >= _OP_MATCH_CACHE_MAX:
            _OP_MATCH_CACHE.clear()
        hit = _OP_MATCH_CACHE[key] = _op_matches(graph, node, op)
    return hit


def _op_matches(graph: Graph, node, op: PatOp) -> bool:
    t = op.type
    nodes = graph.nodes
    ins = [nodes[s].shapes[i] for s, i in node.inputs]
    if t == CONV2D:
        # Groups are inferred from shapes when a rule is instantiated, so a rule is sound only
        # for the grouping it was verified with: dense kernels (groups = 1), or depthwise for
        # TASO's depthwise variable. (Merging two depthwise convs along the output channels,
        # e.g., would interleave their channels wrongly.)
        grouping_ok = node.attrs["groups"] == 1 or (_depthwise(op) and ins[1][1] == 1)
        return (grouping_ok and node.op == "conv2d" and len(node.inputs) == 2
                and tuple(node.attrs["dilations"]) == (1, 1)
                and tuple(node.attrs["strides"]) == (op.p(STRIDE_H), op.p(STRIDE_W))
                and node.attrs["activation"] == ACTI_NAMES.get(op.p(ACTI))
                and op.p(PAD) in _pad_mode(node, ins[0], ins[1]))
    if t == RELU:
        return node.op == "relu"
    if t == CONCAT:
        return (node.op == "concat" and len(node.inputs) == len(op.inputs)
                and all(len(s) == op.p(NUMDIM) for s in ins) and node.attrs["axis"] % op.p(NUMDIM) == op.p(AXIS))
    if t == SPLIT:
        return (node.op == "split" and len(node.shapes) == op.p(NUM_OUTPUTS)
                and node.attrs["axis"] % len(ins[0]) == op.p(AXIS))
    if t in (EW_ADD, EW_MUL):
        return node.op == ("add" if t == EW_ADD else "mul") and ins[0] == ins[1]
    if t == MATMUL:
        return (node.op == "matmul" and node.attrs["activation"] == ACTI_NAMES.get(op.p(ACTI))
                and len(ins[0]) == len(ins[1]) and ins[0][:-2] == ins[1][:-2])
    return False


@dataclasses.dataclass
class _State:
    ops: dict[int, int]           # pattern op -> node id
    vars: dict[int, TensorRef]    # variable -> tensor


def _match_up(graph: Graph, src: Sequence[PatOp], i: int, nid: int, st: _State,
              sigs: Sequence[int] | None = None) -> bool:
    """Bind pattern op ``i`` to node ``nid`` and, recursively, everything above it. Mutates ``st``.

    ``sigs``: ``_sig_id`` of every op of ``src`` (optional, for speed).
    """
    if i in st.ops:
        return st.ops[i] == nid
    if nid in st.ops.values():
        return False  # src ops must be distinct nodes
    node = graph.nodes[nid]
    op = src[i]
    if (node.op != _IR_OP[op.type] or len(node.inputs) != len(op.inputs)
            or not op_matches(graph, node, op, None if sigs is None else sigs[i])):
        return False
    st.ops[i] = nid
    for (o, t), ref in zip(op.inputs, node.inputs):
        if o < 0:
            if st.vars.setdefault(o, ref) != ref:
                return False
        elif ref[1] != t or not _match_up(graph, src, o, ref[0], st, sigs):
            return False
    return True


def _root_fits(graph: Graph, node, root: PatOp, root_sig: int, kids) -> bool:
    """Necessary condition for a pattern rooted at ``root`` to match at ``node``: the node and
    its direct producers that play source ops (``kids``: (slot, output index, op, signature))
    have the right types and attributes."""
    if not op_matches(graph, node, root, root_sig):
        return False
    for slot, t, op, sig in kids:
        src, idx = node.inputs[slot]
        child = graph.nodes[src]
        if (idx != t or child.op != _IR_OP[op.type] or len(child.inputs) != len(op.inputs)
                or not op_matches(graph, child, op, sig)):
            return False
    return True


class PatternRule(Rule):
    """A rule given by a :class:`PatternSpec`; see the module doc for the op mapping.

    Match data: ``(op_bindings, var_bindings)`` as sorted tuples (pattern op -> node id,
    variable -> tensor ref). ``Match.nodes`` are the bound nodes in source-op order with
    the root first.
    """

    def __init__(self, spec: PatternSpec, name: str, family: str = "taso"):
        self.spec = spec
        self.name = name
        self.family = family
        self.radius = max(len(spec.src), 2)
        # The src op of each mapped output (the roots); the first is the anchor.
        self._roots = [m[0] for m in spec.mapped]
        self._sigs = tuple(_sig_id(op) for op in spec.src)
        self._root_ir_op = _IR_OP.get(spec.src[self._roots[0]].type)
        # A necessary condition on the anchor shared by every pattern rule whose root op has
        # the same signature; CandidateIndex evaluates it once per (node, key).
        root_op, root_sig = spec.src[self._roots[0]], self._sigs[self._roots[0]]
        kids = tuple((slot, t, spec.src[o], self._sigs[o]) for slot, (o, t) in enumerate(root_op.inputs) if o >= 0)
        self.anchor_guard = (("pattern_root", root_sig, tuple((slot, t, sig) for slot, t, _, sig in kids)),
                             lambda graph, node: _root_fits(graph, node, root_op, root_sig, kids))
        self._topo_cache: tuple[list[int], dict[int, int]] | None = None
        self._fits_cache: dict[tuple, bool] = {}
        # True if a later root's pattern shares no variable/op with the first root's: its
        # second root is searched over the whole graph, so re-matching only within
        # ``radius`` of a change misses matches; a candidate index must re-match globally.
        self.disconnected = any(not self._shares(r) for r in self._roots[1:])

    # ------------------------------------------------------------------ matching
    def match_at(self, graph: Graph, nid: int) -> list[Match]:
        node = graph.nodes.get(nid)
        if node is None or node.op != self._root_ir_op:
            return []
        src, sigs, root = self.spec.src, self._sigs, self._roots[0]
        if not op_matches(graph, node, src[root], sigs[root]):
            return []  # quick reject before any state is built
        st = _State({}, {})
        if not _match_up(graph, src, root, nid, st, sigs):
            return []
        states = [st]
        for root in self._roots[1:]:
            nxt = []
            for s in states:
                if root in s.ops:
                    nxt.append(s)
                    continue
                for cand in self._candidates(graph, s, src[root]):
                    s2 = _State(dict(s.ops), dict(s.vars))
                    if _match_up(graph, src, root, cand, s2, sigs):
                        nxt.append(s2)
            states = nxt
        out = []
        for s in states:
            if len(s.ops) != len(src):
                continue  # an op that reaches no mapped output (not in TASO's rules)
            if self._applicable(graph, s):
                order = [s.ops[self._roots[0]]] + [s.ops[i] for i in range(len(src)) if i != self._roots[0]]
                out.append(Match(self.name, tuple(order),
                                 (tuple(sorted(s.ops.items())), tuple(sorted(s.vars.items())))))
        return out

    def _candidates(self, graph: Graph, st: _State, op: PatOp) -> list[int]:
        """Nodes that may play another root.

        If the root's pattern shares a bound variable or op with what is already bound,
        it lies downstream of a bound node within the pattern's depth: search there.
        Otherwise (a disconnected pattern) every node may play it.
        """
        closure = self._inputs_closure(op)
        shared = [o for o, _ in closure if o in st.vars or o in st.ops]
        if shared:
            frontier = {st.vars[o][0] if o < 0 else st.ops[o] for o in shared}
            cands: set[int] = set()
            for _ in range(len(self.spec.src)):
                frontier = {c for n in frontier for c, _ in graph.uses(n)} - cands
                cands |= frontier
        else:
            cands = {n for n, node in graph.nodes.items() if node.op == _IR_OP[op.type]}
        taken = set(st.ops.values())
        return sorted(c for c in cands if c not in taken)

    def _shares(self, root: int) -> bool:
        """Does the pattern of ``root`` share a variable or op with the first root's pattern?"""
        first = {self._roots[0]} | {o for o, _ in self._inputs_closure(self.spec.src[self._roots[0]])}
        mine = {root} | {o for o, _ in self._inputs_closure(self.spec.src[root])}
        return bool(first & mine)

    def _inputs_closure(self, op: PatOp) -> list[tuple[int, int]]:
        """All (op, ts) inputs reachable upward from ``op`` in the source pattern."""
        out, stack = [], list(op.inputs)
        while stack:
            o, t = stack.pop()
            out.append((o, t))
            if o >= 0:
                stack.extend(self.spec.src[o].inputs)
        return out

    def _applicable(self, graph: Graph, st: _State) -> bool:
        spec = self.spec
        matched = set(st.ops.values())
        mapped_refs = {(st.ops[so], ts) for so, ts, _, _ in spec.mapped}
        # Pattern edges: (consumer node, slot) pairs that the source pattern accounts for.
        inside = {(st.ops[i], slot) for i, op in enumerate(spec.src)
                  for slot, (o, _) in enumerate(op.inputs) if o >= 0}
        for i, nid in st.ops.items():
            node = graph.nodes[nid]
            for k in range(len(node.shapes)):
                ref = (nid, k)
                if ref in mapped_refs:
                    continue
                if ref in graph.outputs or any(u not in inside for u in graph.tensor_uses(ref)):
                    return False
        if not self._template_fits({v: graph.shape(r) for v, r in st.vars.items()}, self._out_shapes(graph, st.ops)):
            return False
        # No variable may be (or depend on) a matched node: the template would consume a
        # tensor that the rewrite replaces (or one downstream of it) and form a cycle.
        # Only nodes after the earliest matched node (in topological order) can depend on it.
        pos = self._topo_index(graph)
        first = min(pos[n] for n in matched)
        seen: set[int] = set()
        stack = [r[0] for r in st.vars.values()]
        while stack:
            n = stack.pop()
            if n in matched:
                return False
            if n not in seen and pos[n] > first:
                seen.add(n)
                stack.extend(s for s, _ in graph.nodes[n].inputs)
        return True

    def _template_fits(self, var_shapes: dict[int, Shape], out_shapes: dict[tuple[int, int], Shape]) -> bool:
        """Whether ``plan_template`` type-checks the destination for these shapes (memoized:
        a pure function of the shapes)."""
        key = (tuple(sorted(var_shapes.items())), tuple(sorted(out_shapes.items())))
        hit = self._fits_cache.get(key)
        if hit is None:
            try:
                plan_template(self.spec.dst, var_shapes, out_shapes)
                hit = True
            except ShapeError:
                hit = False
            if len(self._fits_cache) >= 10_000:
                self._fits_cache.clear()
            self._fits_cache[key] = hit
        return hit

    def _topo_index(self, graph: Graph) -> dict[int, int]:
        """Position of every node in ``graph.topo_order()`` (cached while the order is unchanged)."""
        order = graph.topo_order()
        if self._topo_cache is None or self._topo_cache[0] is not order:
            self._topo_cache = (order, {n: i for i, n in enumerate(order)})
        return self._topo_cache[1]

    def _out_shapes(self, graph: Graph, ops: Mapping[int, int]) -> dict[tuple[int, int], Shape]:
        return {(do, dt): graph.nodes[ops[so]].shapes[st] for so, st, do, dt in self.spec.mapped}

    # ------------------------------------------------------------------ applying
    def apply(self, graph: Graph, match: Match) -> set[int]:
        if match.rule != self.name:
            raise GraphError(f"rule {self.name!r} cannot apply a match of rule {match.rule!r}")
        op_items, var_items = match.data
        ops, binding = dict(op_items), dict(var_items)
        for n in list(ops.values()) + [r[0] for r in binding.values()]:
            if n not in graph.nodes:
                raise GraphError(f"rule {self.name!r}: stale match, node {n} no longer exists")
        try:
            ids = add_template(graph, self.spec.dst, binding, self._out_shapes(graph, ops))
        except ShapeError as e:
            raise GraphError(f"rule {self.name!r}: stale match, template does not type-check: {e}") from None
        changed = set(ids)
        for so, st, do, dt in self.spec.mapped:
            old = (ops[so], st)
            changed.update(c for c, _ in graph.tensor_uses(old))
            graph.replace_uses(old, (ids[do], dt))
        return changed

    def __repr__(self) -> str:
        return f"<PatternRule {self.name} ({self.family}): {self.spec.to_text()}>"
