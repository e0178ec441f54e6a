"""Cost models with TASO's semantics: graph cost = sum of per-operator costs.

Each distinct operator *signature* (op type, attributes, input and output shapes) is
costed once and cached. Layout-only operators (input, weight, reshape, split, identity)
cost zero, as in TASO, and so does any operator whose inputs are all weights: it is
constant-folded when the model is loaded (this is what makes weight concatenation in
merge rewrites free, as on a real inference engine).

Modes of :class:`CostModel`:

* ``analytic`` (default): a roofline per operator,
  ``time = max(FLOPs / peak_flops, bytes / mem_bandwidth) + launch_overhead``, on a named
  :class:`DeviceSpec`. The per-kernel launch overhead is what makes merging kernels
  profitable. Times are in milliseconds; bytes count float32 tensors read and written.
* ``measured``: each distinct signature is timed on this machine with onnxruntime on the
  CPU (warm-up, then the median of repeats) and cached on disk keyed by signature and
  machine (see :mod:`systems_envs.graph.measure`). Each operator is timed alone: the
  fusions onnxruntime applies are not taken into account.

Cost models by name (:func:`make_cost_model`, the ``--cost`` option of the command-line
tools and the ``device`` of ``GraphRewrite-v0``): ``v100``, ``a100``, ``h100``, ``cpu``
(analytic roofline on that device); ``ort-cpu`` (onnxruntime on this CPU: measured
kernels with onnxruntime's own fusions taken into account,
:class:`~systems_envs.graph.ort_cost.OrtCpuCostModel`); ``e2e`` (the whole graph timed in
onnxruntime, :class:`~systems_envs.graph.ort_cost.E2ECostModel`: exact for this machine,
but every new graph costs a real measurement of seconds).

Two class attributes tell an incremental user (the rewrite ``CandidateIndex``) how far a
change reaches: ``context_radius`` (0: a node's cost depends on its own signature only;
k: on nodes up to k edges away) and ``whole_graph`` (True: costs exist only for whole
graphs, :meth:`CostModel.graph_cost`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

from systems_envs.graph.ir import Graph, Node
from systems_envs.graph.ops import OPS

BYTES_PER_ELEMENT = 4  # float32


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    """A device for the analytic roofline.

    Attributes:
      name: preset name.
      peak_flops: attainable float32 FLOP/s.
      mem_bandwidth: attainable memory bandwidth in bytes/s.
      launch_overhead_s: fixed cost per kernel, seconds.
      memory_bytes: device memory capacity (used by placement), bytes.
    """

    name: str
    peak_flops: float
    mem_bandwidth: float
    launch_overhead_s: float
    memory_bytes: float


# Datasheet float32 peaks and HBM/DRAM bandwidths; launch overheads are typical CUDA
# kernel-launch latencies (a few microseconds) and a framework dispatch cost on the CPU.
DEVICES: dict[str, DeviceSpec] = {
    d.name: d
    for d in [
        DeviceSpec("v100", 15.7e12, 900e9, 5e-6, 16 * 2**30),
        DeviceSpec("a100", 19.5e12, 1555e9, 4e-6, 40 * 2**30),
        DeviceSpec("h100", 67e12, 3350e9, 3e-6, 80 * 2**30),
        DeviceSpec("cpu", 200e9, 40e9, 2e-6, 64 * 2**30),
    ]
}
DEFAULT_DEVICE = "v100"


def get_device(name: str | DeviceSpec) -> DeviceSpec:
    """Look up a device preset by name (or pass a spec through)."""
    if isinstance(name, DeviceSpec):
        return name
    try:
        return DEVICES[name]
    except KeyError:
        raise ValueError(f"unknown device {name!r} (known: {', '.join(DEVICES)})") from None


def signature(graph: Graph, node: Node) -> tuple:
    """Hashable key of what determines an operator's cost."""
    return (node.op, node.attr_key(), tuple(graph.shape(r) for r in node.inputs), node.shapes)


_ACT_FLOPS = {"none": 0, "relu": 1, "sigmoid": 4, "tanh": 4, "relu6": 2, "hardsigmoid": 3, "hardswish": 4, "gelu": 8,
              "gelu_tanh": 10}
_UNARY_FLOPS = {"relu": 1, "sigmoid": 4, "tanh": 4, "gelu": 8, "gelu_tanh": 10, "relu6": 2, "hardsigmoid": 3,
                "hardswish": 4, "erf": 8, "sqrt": 4, "reciprocal": 1, "neg": 1, "pow": 4}
# Opaque ONNX ops: FLOPs per output element (transcendentals ~ a few; data movement 0; else 1).
_OPAQUE_FLOPS = {"Erf": 8, "Exp": 4, "Log": 4, "Pow": 4, "Sqrt": 4, "Tanh": 4, "Sin": 4, "Cos": 4, "Softplus": 4,
                 "Sigmoid": 4, "HardSwish": 4, "HardSigmoid": 3, "Clip": 2, "Softmax": 5, "LayerNormalization": 8,
                 "Expand": 0, "Slice": 0, "Concat": 0, "Reshape": 0, "Transpose": 0, "Gather": 0, "GatherND": 0,
                 "GatherElements": 0, "Cast": 0, "Squeeze": 0, "Unsqueeze": 0, "Tile": 0, "Pad": 0, "Identity": 0}
# Bytes per element of ONNX TensorProto element types (float, uint8, int8, uint16, int16, int32, int64,
# string (counted as a pointer), bool, float16, double, uint32, uint64, complex64, complex128, bfloat16).
_ONNX_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 8: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16,
                  16: 2}


def _opaque_flops_and_bytes(attrs, in_shapes: list[tuple], out_shapes: list[tuple]) -> tuple[float, float]:
    """An opaque ONNX node's FLOPs and bytes with its real element types (int64 ids, bool
    masks) and the constants baked into it (e.g. indices)."""
    spec = dict(attrs.get("attributes", ()))
    n_out = [math.prod(s) for s in out_shapes]
    nbytes = 0.0
    for slot in spec.get("inputs", ()):
        if slot[0] == "graph":
            nbytes += _ONNX_ITEMSIZE.get(int(slot[2]), 4) * math.prod(in_shapes[slot[1]])
        elif slot[0] == "const":
            nbytes += len(slot[3])
    if "inputs" not in spec:
        nbytes += BYTES_PER_ELEMENT * sum(math.prod(s) for s in in_shapes)
    types = spec.get("out_types", ()) or (1,) * len(out_shapes)
    nbytes += sum(_ONNX_ITEMSIZE.get(int(t), 4) * n for t, n in zip(types, n_out))
    return float(_OPAQUE_FLOPS.get(attrs["op_type"], 1) * n_out[0]), float(nbytes)


def flops_and_bytes(op: str, attrs, in_shapes: list[tuple], out_shapes: list[tuple]) -> tuple[float, float]:
    """FLOPs and bytes moved (inputs read + outputs written, float32) of one operator.

    A multiply-add counts as 2 FLOPs. Layout-only ops move nothing. ``gather`` reads only
    the gathered rows (and the indices, int64), not the whole table; opaque ONNX nodes
    count their real element types.
    """
    spec = OPS[op]
    if spec.layout_only:
        return 0.0, 0.0
    if op == "opaque":
        return _opaque_flops_and_bytes(attrs, in_shapes, out_shapes)
    n_in = [math.prod(s) for s in in_shapes]
    n_out = [math.prod(s) for s in out_shapes]
    out = n_out[0]
    nbytes = BYTES_PER_ELEMENT * (sum(n_in) + sum(n_out))
    act = _ACT_FLOPS.get(attrs.get("activation", "none"), 0) * out
    if op == "conv2d":
        w = in_shapes[1]
        flops = 2.0 * out * w[1] * w[2] * w[3] + act + (out if len(in_shapes) == 3 else 0)
    elif op == "matmul":
        flops = 2.0 * out * in_shapes[0][-1] + act
    elif op == "linear":
        flops = 2.0 * out * in_shapes[0][-1] + act + (out if len(in_shapes) == 3 else 0)
    elif op in ("add", "sub", "mul", "div"):
        flops = float(out)
    elif op in _UNARY_FLOPS:
        flops = float(_UNARY_FLOPS[op] * out)
    elif op == "batchnorm":
        flops = 2.0 * out
    elif op == "layernorm":
        flops = 8.0 * out
    elif op == "rmsnorm":
        flops = 4.0 * out
    elif op == "softmax":
        flops = 5.0 * out
    elif op in ("maxpool", "avgpool"):
        kh, kw = attrs["kernel"]
        flops = float(out * kh * kw) + act
    elif op in ("global_avgpool", "reduce_mean"):
        flops = float(n_in[0])
    elif op == "gather":
        flops = 0.0
        nbytes = BYTES_PER_ELEMENT * 2 * out + 8 * n_in[1]
    elif op in ("concat", "transpose", "enlarge", "merge_gconv"):
        flops = 0.0  # pure data movement
    else:  # pragma: no cover - every op in OPS is listed above
        raise ValueError(f"no cost rule for op {op!r}")
    return flops, float(nbytes)


def roofline_ms(flops: float, nbytes: float, device: DeviceSpec) -> float:
    """Roofline time of one kernel in milliseconds, including the launch overhead."""
    return 1e3 * (max(flops / device.peak_flops, nbytes / device.mem_bandwidth) + device.launch_overhead_s)


class CostModel:
    """Per-operator costs (ms) with a signature cache.

    Args:
      device: device preset name or spec (analytic mode); also names the cache entry.
      mode: ``analytic`` or ``measured``.
      measure: for ``measured`` mode, a function ``(graph, node) -> ms``; defaults to
        onnxruntime timing on this CPU with an on-disk cache.

    Attributes:
      resolution: relative change of a graph's cost that the model can tell from its own
        timing noise (0 for an analytic model); greedy search takes no step predicted to
        gain less.
    """

    context_radius = 0
    whole_graph = False
    resolution = 0.0

    def __init__(self, device: str | DeviceSpec = DEFAULT_DEVICE, mode: str = "analytic",
                 measure: Callable[[Graph, Node], float] | None = None):
        if mode not in ("analytic", "measured"):
            raise ValueError(f"unknown cost mode {mode!r} (known: analytic, measured)")
        self.device = get_device(device)
        self.name = self.device.name if mode == "analytic" else f"measured-{self.device.name}"
        self.mode = mode
        if mode == "measured" and measure is None:
            from systems_envs.graph.measure import OnnxRuntimeTimer

            measure = OnnxRuntimeTimer()
        self._measure = measure
        self._cache: dict[tuple, float] = {}

    def node_cost(self, graph: Graph, node: Node, constant: bool = False, const: set[int] | None = None) -> float:
        """Cost of one node in ms; 0 for layout-only ops and constant-folded nodes.

        ``const`` (the graph's constant-folded node ids) is unused here; models with a
        ``context_radius`` read it.
        """
        if constant or OPS[node.op].layout_only:
            return 0.0
        key = signature(graph, node)
        cost = self._cache.get(key)
        if cost is None:
            if self.mode == "analytic":
                f, b = flops_and_bytes(node.op, node.attrs, list(key[2]), list(node.shapes))
                cost = roofline_ms(f, b, self.device)
            else:
                cost = float(self._measure(graph, node))
            self._cache[key] = cost
        return cost

    def node_costs(self, graph: Graph) -> dict[int, float]:
        """Cost in ms of every node (0 for sources, layout-only and constant nodes)."""
        const = graph.constant_nodes()
        return {nid: self.node_cost(graph, n, nid in const) for nid, n in graph.nodes.items()}

    def graph_cost(self, graph: Graph) -> float:
        """Total cost of the graph in ms (sum over operators)."""
        return sum(self.node_costs(graph).values())

    def op_table(self, graph: Graph) -> list[dict]:
        """Per op type: count, total ms, FLOPs and bytes; sorted by total cost."""
        const = graph.constant_nodes()
        rows: dict[str, dict] = {}
        for nid, n in graph.nodes.items():
            if n.op in ("input", "weight"):
                continue
            f, b = flops_and_bytes(n.op, n.attrs, [graph.shape(r) for r in n.inputs], list(n.shapes))
            r = rows.setdefault(n.op, {"op": n.op, "count": 0, "cost_ms": 0.0, "gflops": 0.0, "mbytes": 0.0})
            r["count"] += 1
            r["cost_ms"] += self.node_cost(graph, n, nid in const, const)
            if nid not in const:
                r["gflops"] += f / 1e9
                r["mbytes"] += b / 1e6
        return sorted(rows.values(), key=lambda r: -r["cost_ms"])


ANALYTIC_NAMES = tuple(DEVICES)
COST_MODEL_NAMES = ANALYTIC_NAMES + ("ort-cpu", "e2e")


def make_cost_model(name: str, cache_dir=None) -> CostModel:
    """The cost model called ``name`` (see the module docstring); ``cache_dir`` for the measured ones."""
    if name in DEVICES:
        return CostModel(name)
    if name == "ort-cpu":
        from systems_envs.graph.ort_cost import OrtCpuCostModel

        return OrtCpuCostModel(cache_dir)
    if name == "e2e":
        from systems_envs.graph.ort_cost import E2ECostModel

        return E2ECostModel(cache_dir)
    raise ValueError(f"unknown cost model {name!r} (known: {', '.join(COST_MODEL_NAMES)})")
