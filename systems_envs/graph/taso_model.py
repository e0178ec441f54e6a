"""Loader for TASO's exported ``.model`` graph files (``Graph::export_to_file``).

Format (see ``/work/shared/data/FORMATS.md`` Part 1): 4-line records
``guid / type id / deps / params``; a dep ``G:k`` is output ``k`` of record ``G`` and
dep entry *i* is input slot *i*; guids <= 19 are pseudo-sources (the deps of INPUT and
WEIGHT records); graph outputs are the compute records that nothing references.

Mapping to the IR (:mod:`systems_envs.graph.ops`):

==============  ==================================================================
TASO            IR
==============  ==================================================================
INPUT / WEIGHT  ``input`` ``input_<guid>`` / ``weight`` ``w_<guid>`` (shapes only)
CONV2D          ``conv2d`` with explicit ``pads``, ``groups = C / weight[1]``, fused activation
DROPOUT         ``identity`` (inference)
POOL2D_MAX/AVG  ``maxpool`` / ``avgpool`` (average excludes padding, as TASO's cuDNN
                call does); the synthetic ``[C,1,kH,kW]`` weight dep is dropped
RELU/SIGMOID/TANH  ``relu`` / ``sigmoid`` / ``tanh``
BATCHNORM       ``batchnorm`` (input, scale, bias, mean, var); the var weight gets init "positive"
CONCAT / SPLIT  ``concat`` / ``split`` (SPLIT outputs are referenced as ``G:k``)
RESHAPE         ``reshape``
TRANSPOSE       ``transpose`` (the ``shuffle`` flag is a memory-layout hint and is dropped)
EW_ADD/MUL/SUB/DIV  ``add`` / ``mul`` / ``sub`` / ``div``
MATMUL          ``matmul`` with fused activation
ENLARGE         ``enlarge`` (w, ref)
MERGE_GCONV     ``merge_gconv`` with ``count``
==============  ==================================================================

Padding: TASO runs cuDNN with the symmetric pad ``p = (total + 1) // 2`` (``total`` from
TensorFlow's SAME rule) and an output size of ``ceil(H / s)``. The windows then start at
``-p`` and only ``total - p`` rows of the bottom padding are ever read, so the IR gets
``pads = (pH, pW, totalH - pH, totalW - pW)``, which computes exactly what TASO runs. The
stored ``padH/padW`` are checked against this formula.

Weights: the file carries only shapes. Weight nodes get stable names ``w_<guid>`` and
the executor fills them deterministically from ``(its seed, name)``; the loader's
``seed`` therefore does not change the graph (graph structure and hash are independent of
the seed) and is accepted only so every loader has the same signature: pass the seed to
:func:`systems_envs.graph.executor.execute`. Weights that nothing uses after loading (the
unused 1-D weights of some exports and the synthetic pool weights) are removed, so the
graph has no isolated nodes. INPUT records that nothing uses are kept but are not outputs.

Every problem raises :class:`GraphError` with one line naming the file and record.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from systems_envs.graph.ir import Graph, GraphError, TensorRef, topological_sort
from systems_envs.graph.ops import same_pads

GUID_PRESERVED = 19  # guids <= this are pseudo-sources, never records

OP_NAMES = {
    0: "INPUT", 1: "WEIGHT", 2: "ANY", 3: "CONV2D", 4: "DROPOUT", 5: "LINEAR", 6: "POOL2D_MAX",
    7: "POOL2D_AVG", 8: "RELU", 9: "SIGMOID", 10: "TANH", 11: "BATCHNORM", 12: "CONCAT",
    13: "SPLIT", 14: "RESHAPE", 15: "TRANSPOSE", 16: "EW_ADD", 17: "EW_MUL", 18: "MATMUL",
    19: "MUL", 20: "ENLARGE", 21: "MERGE_GCONV", 28: "EW_SUB", 29: "EW_DIV",
}
PADDING = {0: "SAME", 1: "VALID"}
ACTI = {0: "none", 1: "sigmoid", 2: "relu", 3: "tanh"}


class _Record:
    """One parsed record: guid, type id, deps [(guid, out idx)], params, 1-based first line."""

    __slots__ = ("guid", "type", "deps", "params", "line")

    def __init__(self, guid: int, type_: int, deps: list[TensorRef], params: list[int], line: int):
        self.guid, self.type, self.deps, self.params, self.line = guid, type_, deps, params, line

    @property
    def type_name(self) -> str:
        return OP_NAMES.get(self.type, f"type {self.type}")


def _int(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise GraphError(f"{where}: {text!r} is not an integer") from None


def parse_records(text: str, source: str) -> list[_Record]:
    """Split the file text into records; checks only the syntax (4 lines, integers)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise GraphError(f"{source}: empty file, no records")
    if len(lines) % 4:
        raise GraphError(f"{source}: {len(lines)} lines is not a multiple of 4 "
                         f"(truncated record starting at line {len(lines) - len(lines) % 4 + 1})")
    records = []
    for i in range(0, len(lines), 4):
        g_s, t_s, d_s, p_s = (s.strip() for s in lines[i:i + 4])
        where = f"{source}: record at line {i + 1}"
        guid = _int(g_s, where + " (guid)")
        where = f"{source}: record guid {guid} (line {i + 1})"
        type_ = _int(t_s, where + " type")
        deps = []
        for entry in d_s.split(","):
            src, sep, idx = entry.partition(":")
            if not sep:
                raise GraphError(f"{where}: dependency {entry!r} is not 'guid:index'")
            deps.append((_int(src, f"{where} dependency"), _int(idx, f"{where} dependency")))
        params = [_int(p, f"{where} parameter") for p in p_s.split(",")] if p_s else []
        records.append(_Record(guid, type_, deps, params, i + 1))
    return records


def load_taso_model(path: str | Path, seed: int = 0) -> Graph:
    """Load a TASO ``.model`` file into a validated :class:`Graph` named after the file stem.

    ``seed`` is accepted for interface symmetry and does not affect the graph (see the
    module docstring: weights are filled by the executor from its own seed and the
    weight names ``w_<guid>``). Raises GraphError naming the file and record on bad input.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise GraphError(f"{str(path)!r}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise GraphError(f"{str(path)!r}: cannot read TASO model ({type(e).__name__}: {e})") from None
    del seed  # see docstring
    return graph_from_records(parse_records(text, str(path)), str(path), name=path.stem)


def graph_from_records(records: list[_Record], source: str, name: str = "taso") -> Graph:
    """Build the graph from parsed records (any order; cycles and dangling deps are errors)."""
    by_guid: dict[int, _Record] = {}
    for r in records:
        if r.guid <= GUID_PRESERVED:
            raise GraphError(f"{source}: record guid {r.guid} (line {r.line}): guid <= {GUID_PRESERVED} "
                             "is reserved for pseudo-sources")
        if r.guid in by_guid:
            raise GraphError(f"{source}: record guid {r.guid} (line {r.line}): duplicate guid "
                             f"(first at line {by_guid[r.guid].line})")
        by_guid[r.guid] = r
    for r in records:
        if r.type in (0, 1):
            if any(g > GUID_PRESERVED for g, _ in r.deps):
                raise GraphError(f"{_where(source, r)}: {r.type_name} record must depend on a pseudo-source only")
            continue
        for g, _ in r.deps:
            if g <= GUID_PRESERVED:
                raise GraphError(f"{_where(source, r)}: {r.type_name} record depends on pseudo-source {g}")
            if g not in by_guid:
                raise GraphError(f"{_where(source, r)}: dependency on unknown guid {g}")
    deps = {r.guid: [] if r.type in (0, 1) else [g for g, _ in r.deps] for r in records}
    try:
        order = topological_sort(deps, label=lambda g: f"record guid {g} (line {by_guid[g].line})")
    except GraphError as e:
        raise GraphError(f"{source}: {e}") from None

    positive = {r.deps[4][0] for r in records if r.type == 11 and len(r.deps) == 5}
    graph = Graph(name)
    out: dict[int, int] = {}  # guid -> node id
    for guid in order:
        r = by_guid[guid]
        handler = _HANDLERS.get(r.type)
        if handler is None:
            raise GraphError(f"{_where(source, r)}: unsupported op type {r.type_name} (id {r.type})")
        for g, k in r.deps if r.type > 1 else ():
            n_out = len(graph[out[g]].shapes)
            if not 0 <= k < n_out:
                raise GraphError(f"{_where(source, r)}: dependency {g}:{k} refers to output {k} of guid {g}, "
                                 f"which has {n_out} output(s)")
        try:
            out[guid] = handler(graph, r, [(out[g], k) for g, k in r.deps] if r.type > 1 else [],
                                guid in positive)
        except GraphError as e:
            msg = str(e)
            raise GraphError(msg if msg.startswith(source) else f"{_where(source, r)} {r.type_name}: {msg}") from None

    referenced = {g for r in records if r.type > 1 for g, _ in r.deps}
    outputs = []
    for r in records:
        if r.type > 1 and r.guid not in referenced:
            nid = out[r.guid]
            outputs.extend((nid, k) for k in range(len(graph[nid].shapes)))
    if not outputs:
        raise GraphError(f"{source}: no compute record is unreferenced, so the graph has no outputs")
    graph.set_outputs(sorted(outputs))
    for w in [n.id for n in graph.weights]:
        if not graph.uses(w):
            graph.remove(w)
    graph.validate()
    return graph


def _where(source: str, r: _Record) -> str:
    return f"{source}: record guid {r.guid} (line {r.line})"


def _fail(msg: str):
    raise GraphError(msg)


def _nparams(r: _Record, *counts: int) -> None:
    if len(r.params) not in counts:
        want = " or ".join(map(str, counts))
        _fail(f"expected {want} parameters, got {len(r.params)}")


def _ndeps(r: _Record, *counts: int) -> None:
    if len(r.deps) not in counts:
        want = " or ".join(map(str, counts))
        _fail(f"expected {want} dependencies, got {len(r.deps)}")


def _dims_match(r: _Record, params: list[int], shape, what: str) -> None:
    if tuple(params) != tuple(shape):
        _fail(f"{what} dims {tuple(params)} in the parameters differ from the actual shape {tuple(shape)}")


def _enum(table: dict[int, str], value: int, what: str) -> str:
    if value not in table:
        _fail(f"unknown {what} code {value} (known: {sorted(table)})")
    return table[value]


def _window_pads(r: _Record, in_hw, k, s, mode: str, stored) -> tuple[int, int, int, int]:
    """IR pads (top, left, bottom, right) for TASO's padding mode; checks stored padH/padW."""
    if min(s) < 1 or min(k) < 1:
        _fail(f"kernel {k} and strides {s} must be positive")
    if mode == "VALID":
        if tuple(stored) != (0, 0):
            _fail(f"VALID padding but stored pads {tuple(stored)} are not 0")
        return (0, 0, 0, 0)
    totals = [sum(same_pads(in_hw[i], k[i], s[i])) for i in range(2)]
    expect = tuple((t + 1) // 2 for t in totals)
    if tuple(stored) != expect:
        _fail(f"SAME padding: stored pads {tuple(stored)} differ from TASO's formula {expect}")
    return (expect[0], expect[1], totals[0] - expect[0], totals[1] - expect[1])


# ----------------------------------------------------------------------------- handlers
# handler(graph, record, input refs, is_bn_variance) -> node id


def _source(graph: Graph, r: _Record, ins, positive: bool) -> int:
    if not r.params:
        _fail("a source record needs its shape as parameters")
    if r.type == 0:
        return graph.input(f"input_{r.guid}", r.params)
    return graph.weight(f"w_{r.guid}", r.params, init="positive" if positive else "normal")


def _conv2d(graph: Graph, r: _Record, ins, _) -> int:
    _nparams(r, 14)
    _ndeps(r, 2)
    p = r.params
    x, w = graph.shape(ins[0]), graph.shape(ins[1])
    _dims_match(r, p[0:4], x, "input")
    _dims_match(r, p[4:8], w, "weight")
    if w[1] < 1 or x[1] % w[1]:
        _fail(f"weight {w} channels per group do not divide input channels {x[1]}")
    mode = _enum(PADDING, p[10], "padding")
    act = _enum(ACTI, p[11], "activation")
    pads = _window_pads(r, x[2:], w[2:], (p[8], p[9]), mode, (p[12], p[13]))
    return graph.add("conv2d", ins, strides=(p[8], p[9]), pads=pads, groups=x[1] // w[1], activation=act)


def _pool(graph: Graph, r: _Record, ins, _) -> int:
    _nparams(r, 13)
    _ndeps(r, 1, 2)
    p = r.params
    x = graph.shape(ins[0])
    _dims_match(r, p[0:4], x, "input")
    if p[4] != r.type:
        _fail(f"pool type parameter {p[4]} differs from the record type {r.type}")
    k, s = (p[5], p[6]), (p[7], p[8])
    if len(ins) == 2 and graph.shape(ins[1]) != (x[1], 1) + k:
        _fail(f"synthetic pool weight has shape {graph.shape(ins[1])}, expected {(x[1], 1) + k}")
    mode = _enum(PADDING, p[9], "padding")
    act = _enum(ACTI, p[10], "activation")
    pads = _window_pads(r, x[2:], k, s, mode, (p[11], p[12]))
    op = "maxpool" if r.type == 6 else "avgpool"
    return graph.add(op, ins[:1], kernel=k, strides=s, pads=pads, activation=act)


def _unary(op: str) -> Callable:
    def build(graph: Graph, r: _Record, ins, _) -> int:
        _ndeps(r, 1)
        x = graph.shape(ins[0])
        if r.type == 9 and len(r.params) == 1 and (len(x) != 1 or r.params[0] != x[0]):
            if r.params[0] not in (0, 1):  # the fork's layout: a single inPlace flag
                _fail(f"SIGMOID parameter {r.params[0]} is neither the input dims {x} nor an inPlace flag 0/1")
        else:
            _dims_match(r, r.params, x, "input")
        return graph.add(op, ins)
    return build


def _input_dims_op(op: str, ndeps: int, what: str = "input 0") -> Callable:
    """Handler of a record with ``ndeps`` dependencies whose parameters are input 0's dims
    (``what`` names that input in the error); the op takes no attributes."""
    def build(graph: Graph, r: _Record, ins, _) -> int:
        _ndeps(r, ndeps)
        _dims_match(r, r.params, graph.shape(ins[0]), what)
        return graph.add(op, ins)
    return build


def _concat(graph: Graph, r: _Record, ins, _) -> int:
    _nparams(r, 1)
    if not ins:
        _fail("CONCAT needs at least one dependency")
    return graph.add("concat", ins, axis=r.params[0])


def _split(graph: Graph, r: _Record, ins, _) -> int:
    _ndeps(r, 1)
    if len(r.params) < 2:
        _fail(f"SPLIT needs an axis and at least one size, got {len(r.params)} parameters")
    return graph.add("split", ins, axis=r.params[0], sizes=tuple(r.params[1:]))


def _reshape(graph: Graph, r: _Record, ins, _) -> int:
    _ndeps(r, 1)
    if not r.params:
        _fail("RESHAPE needs the output dims")
    return graph.add("reshape", ins, shape=tuple(r.params))


def _transpose(graph: Graph, r: _Record, ins, _) -> int:
    _ndeps(r, 1)
    x = graph.shape(ins[0])
    rank, p = len(x), r.params
    if len(p) == rank + 2:  # variant C: rank, perm, shuffle
        if p[0] != rank:
            _fail(f"TRANSPOSE rank parameter {p[0]} differs from the input rank {rank}")
        perm, shuffle = p[1:-1], p[-1]
    elif len(p) == rank + 1:  # variant B: perm, shuffle
        perm, shuffle = p[:-1], p[-1]
    elif len(p) == rank:  # variant A: output dims only
        perm, shuffle = _perm_from_dims(x, p), 0
    else:
        _fail(f"TRANSPOSE has {len(p)} parameters; for input rank {rank} expected {rank} (output dims), "
              f"{rank + 1} (perm, shuffle) or {rank + 2} (rank, perm, shuffle)")
    if shuffle not in (0, 1):
        _fail(f"TRANSPOSE shuffle flag must be 0 or 1, got {shuffle}")
    return graph.add("transpose", ins, perm=tuple(perm))


def _perm_from_dims(x, out) -> list[int]:
    """The permutation with ``out[i] == x[perm[i]]``, if the dims determine it.

    Several size-1 dims may be swapped without changing the data, so they are matched in
    order; a repeated dim larger than 1 makes the permutation ambiguous (an error).
    """
    if sorted(x) != sorted(out):
        _fail(f"TRANSPOSE output dims {tuple(out)} are not a permutation of the input dims {tuple(x)}")
    repeated = sorted({d for d in x if d > 1 and x.count(d) > 1})
    if repeated:
        _fail(f"TRANSPOSE stores only output dims {tuple(out)}; input {tuple(x)} repeats dim(s) {repeated}, "
              "so the permutation cannot be recovered")
    free = {d: [i for i, v in enumerate(x) if v == d] for d in set(x)}
    return [free[d].pop(0) for d in out]


def _matmul(graph: Graph, r: _Record, ins, _) -> int:
    _nparams(r, 2)
    _ndeps(r, 2)
    act = _enum(ACTI, r.params[0], "activation")
    nid = graph.add("matmul", ins, activation=act)
    if len(graph[nid].shape) != r.params[1]:
        _fail(f"MATMUL output rank parameter {r.params[1]} differs from the actual rank of {graph[nid].shape}")
    return nid


def _merge_gconv(graph: Graph, r: _Record, ins, _) -> int:
    _nparams(r, 1)
    _ndeps(r, 1)
    return graph.add("merge_gconv", ins, count=r.params[0])


_HANDLERS: dict[int, Callable] = {
    0: _source, 1: _source, 3: _conv2d, 4: _unary("identity"), 6: _pool, 7: _pool,
    8: _unary("relu"), 9: _unary("sigmoid"), 10: _unary("tanh"), 11: _input_dims_op("batchnorm", 5, "input"),
    12: _concat, 13: _split, 14: _reshape, 15: _transpose,
    16: _input_dims_op("add", 2), 17: _input_dims_op("mul", 2), 18: _matmul, 20: _input_dims_op("enlarge", 2),
    21: _merge_gconv, 28: _input_dims_op("sub", 2), 29: _input_dims_op("div", 2),
}


def write_taso_records(records: list[tuple[int, int, str, str]]) -> str:
    """Render ``(guid, type, deps, params)`` tuples as ``.model`` text (used by tests and fixtures)."""
    return "".join(f"{g}\n{t}\n{d}\n{p}\n" for g, t, d, p in records)


__all__ = ["load_taso_model", "parse_records", "graph_from_records", "write_taso_records", "OP_NAMES"]
