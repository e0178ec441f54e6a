"""A cost model for onnxruntime on this CPU: measured kernels, with onnxruntime's own fusions.

Graph cost = sum over *kernel groups* of their measured onnxruntime time (ms). A kernel
group is the set of IR nodes that onnxruntime's default graph optimisations
(``ORT_ENABLE_ALL``, CPU execution provider) may turn into one kernel: an anchor node and
a chain of followers, each follower the only consumer of the previous node's output
(which is no graph output). The chains follow onnxruntime's CPU fusions
(https://onnxruntime.ai/docs/performance/model-optimizations/graph-optimizations.html):

* ``conv2d`` without activation, then up to :data:`MAX_AFFINE` per-channel affine nodes
  whose other operands are constant (``batchnorm``: Conv BatchNorm Fusion; ``add``/``sub``
  and ``mul``/``div`` by a constant: Conv Add / Conv Mul Fusion), then a residual ``add``
  of another computed tensor of the same shape (the NCHWc convolution's fused "Sum"
  input; when both operands end convolution chains, the first operand's takes it), then one activation
  (any of the IR's fusable activations, :data:`ACTIVATION_OPS`: Conv Activation Fusion
  and the NCHWc convolution's fused activation where onnxruntime has them);
* ``matmul``/``linear`` without activation, then up to :data:`MAX_AFFINE` elementwise nodes
  with a constant operand (MatMul Add Fusion into Gemm, MatMul Scale Fusion), then one
  activation (Gemm Activation Fusion, Bias GELU Fusion);
* any other node with an ``activation`` attribute left at ``none`` (pools), then one
  activation;
* ``add`` of two computed tensors, then ``layernorm`` (Skip Layer Normalization Fusion).

Every other node is a group of its own. A node that is a follower costs 0 ms; an anchor
costs the time of its whole group. Constant-folded nodes (weights only) and ``identity``
cost 0 ms, as onnxruntime folds or removes them; a ``reshape`` of a computed tensor costs
one kernel dispatch (:attr:`OrtCpuCostModel.kernel_ms`: onnxruntime runs it as a node that
aliases its input); a ``split`` is a copy in onnxruntime and is timed as a group of its own
(so a merge of convolutions or matmuls that ends in a split pays for it).

A group is timed as a small model: the group's nodes, its computed inputs as graph inputs
and its constant inputs as initializers, exported with
:func:`~systems_envs.graph.onnx_io.export_onnx` and run by onnxruntime with its default
optimisations on (so onnxruntime applies, or does not apply, its fusions to the group
exactly as it decides to). The time is keyed by the *optimised* model onnxruntime builds
from the group (its node types, attributes and wiring; initializer shapes, not values):
groups that onnxruntime turns into the same kernels share one timing. Hence an unchanged
graph and its "fused" twin cost the same when onnxruntime runs them the same: a
``conv2d`` followed by a ``relu`` and a ``conv2d`` with ``activation="relu"`` are written
as the same Conv and Relu and fused by onnxruntime alike; a convolution followed by a
constant batchnorm and the same convolution with the batchnorm folded into its weights
become the same fused Conv.

What it leaves out (checked against whole-graph timings by ``experiments.bench_cost``):
each group is timed alone, so work at group borders is counted per group (onnxruntime's
NCHWc layout reorders its convolutions' inputs and outputs; in a whole graph a chain of
convolutions stays in that layout). A residual sum fused into a convolution is not part
of its group's timing (a lone group gets it as a plain input, which onnxruntime does not
fuse): it is taken as free, which leaves out the read of the added tensor.

Fixed costs: a group timed alone includes the cost of an inference call (onnxruntime's
``run``: feeding inputs, returning outputs) and, for a lone convolution in the NCHWc
layout, its input and output reorders, which a whole graph pays once per inference or
once per chain of convolutions. Each group is therefore timed against the smallest group
of its kind (:func:`reference_graph`: a Relu on 8 floats; a 1x1 convolution of 16
channels on one pixel when onnxruntime put the group in NCHWc layout), the two sessions
alternating in the same rounds, so that a change in the machine's load while the group is
timed reaches both, and both through onnxruntime's I/O binding (inputs and outputs bound
once to preallocated buffers), so that a group's further inputs and outputs add none of
``run``'s conversions, which a whole graph does not pay between its nodes. The group costs the median over rounds of the difference plus one
kernel (:attr:`OrtCpuCostModel.kernel_ms`: what one more Relu adds to a chain of Relus,
onnxruntime's per-node dispatch; the reference holds one kernel too), at least that one
kernel. The call overhead (the one-Relu model less its kernel) is charged once, to the
graph's inputs (split evenly). Subtracting a reference timed at another moment instead
made tiny models' predictions depend on how busy the machine was when each group was
timed (the zoo transformers came out at 2-6x their measured latency).

Weights read from memory: a group timed on its own runs with its weights in the CPU's
caches, while a whole model whose weights exceed them reads each weight from main memory
once per inference. A group's cost is therefore
``max(timed cost, weight bytes / memory bandwidth)``, the bandwidth measured once per
machine (:func:`~systems_envs.graph.measure.memory_bandwidth`, single-thread streaming
read). For a compute-bound convolution the first term wins; for a matrix-vector product
(a batch-1 RNN cell) the second.

Resolution: each group's timing also stores the standard error of its median; their sum
over their costs (:attr:`OrtCpuCostModel.resolution`, about 1-2% on this shared machine)
is the smallest relative change of a graph's cost the model can tell from noise, and
greedy search (:func:`~systems_envs.rewrite.search.greedy`) takes no step predicted to
gain less.

Timings: as the whole-graph timings they are compared with, ``repeats`` rounds, each keeping
the fastest of 3 back-to-back runs, after ``warmup``, on ``threads`` intra-op threads
(default 1), cached on disk in ``ort_kernel_costs.json`` (see
:mod:`systems_envs.graph.measure` for the folder and the machine key). A timing whose
median has a standard error above 10% of the group's cost is taken again once, with four
times the rounds, when the group is next looked up (also for a cache written before).
"""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from systems_envs.graph.cost import BYTES_PER_ELEMENT, CostModel, get_device, signature
from systems_envs.graph.ir import Graph, GraphError, Node, TensorRef
from systems_envs.graph.ops import ACTIVATIONS, OPS, SOURCE_OPS

ORT_CACHE_FILE = "ort_kernel_costs.json"
NCHWC_DOMAIN = "com.microsoft.nchwc"
MAX_AFFINE = 2
# the IR's fusable activations: a node's ``activation`` attribute is exported as this op after it
ACTIVATION_OPS = frozenset(a for a in ACTIVATIONS if a != "none" and a in OPS)
_AFFINE_OPS = ("add", "sub", "mul", "div")


class OrtCpuCostModel(CostModel):
    """Fusion-aware onnxruntime CPU cost model (see the module docstring).

    Args:
      cache_dir: folder of ``ort_kernel_costs.json`` (default: ``measure.default_cache_dir()``).
      threads: onnxruntime intra-op threads of the timings (default 1).
      warmup, repeats: untimed runs and timed rounds per group.

    Attributes:
      context_radius: how far (undirected edges) a change can reach the cost of other
        nodes: a node's cost depends on its group (up to ``MAX_AFFINE + 2`` nodes in a
        chain through it) and on the consumers of the chain's nodes, one edge further.
      timed: groups actually timed by this instance (disk-cache misses).
    """

    context_radius = MAX_AFFINE + 3

    def __init__(self, cache_dir: str | Path | None = None, threads: int = 1, warmup: int = 3, repeats: int = 10):
        from systems_envs.graph.measure import JsonCache, default_cache_dir, machine_id

        super().__init__(get_device("cpu"))
        if threads < 1 or warmup < 0 or repeats < 1:
            raise ValueError(f"OrtCpuCostModel: bad settings threads={threads} warmup={warmup} repeats={repeats}")
        self.name = "ort-cpu"
        self.mode = "ort"
        self.threads, self.warmup, self.repeats = threads, warmup, repeats
        self.cache_path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / ORT_CACHE_FILE
        self._disk = JsonCache(self.cache_path, machine_id(threads))
        self._group_ms: dict[str, float] = {}  # group_graph hash -> ms
        self._fast_ms: dict[tuple, float] = {}  # group_key -> ms
        self._bandwidth: float | None = None
        self._reference: dict[str, float] = {}
        self.timed = 0

    # ------------------------------------------------------------------ groups
    def group(self, graph: Graph, anchor: int, const: set[int]) -> list[int]:
        """Node ids of the kernel group anchored at ``anchor`` (anchor first, then its followers)."""
        nodes = graph.nodes
        a = nodes[anchor]
        members = [anchor]
        act = a.attrs.get("activation")
        if a.op == "conv2d" or a.op in ("matmul", "linear"):
            if act != "none":
                return members
            stages = ["affine"] * MAX_AFFINE + (["sum"] if a.op == "conv2d" else []) + ["act"]
        elif act == "none":
            stages = ["act"]
        elif a.op == "add":
            stages = ["skipnorm"]
        else:
            return members
        tail = anchor
        for stage in stages:
            f = _sole_consumer(graph, tail)
            if f is None:
                break
            fn = nodes[f]
            if stage == "affine" and fn.op in _AFFINE_OPS + ("batchnorm",):
                if not _other_inputs_constant(fn, tail, const):
                    if fn.op == "add" and "sum" in stages:
                        continue  # maybe a residual sum: the next stages decide
                    break
                members.append(f)
                tail = f
            elif stage == "affine":
                continue
            elif stage == "sum":
                if fn.op == "add" and _sum_slot(graph, fn, const) == tail:
                    members.append(f)
                    tail = f
            elif stage == "act" and fn.op in ACTIVATION_OPS:
                members.append(f)
                tail = f
                break
            elif stage == "skipnorm" and fn.op == "layernorm" and fn.inputs[0][0] == tail:
                members.append(f)
                break
            else:
                break
        return members

    def owner(self, graph: Graph, nid: int, const: set[int]) -> int | None:
        """The anchor of the group that ``nid`` follows in, or None if ``nid`` anchors its own group."""
        nodes = graph.nodes
        frontier = [nid]
        for _ in range(MAX_AFFINE + 2):
            # chain predecessors: computed inputs whose only consumer is the current node
            preds = sorted({s for n in frontier for s, _ in nodes[n].inputs
                            if s not in const and nodes[s].op not in SOURCE_OPS and _sole_consumer(graph, s) == n})
            for s in preds:  # nearest candidates first, deterministic
                if nid in self.group(graph, s, const)[1:] and self.owner_free(graph, s, const):
                    return s
            frontier = preds
        return None

    def owner_free(self, graph: Graph, nid: int, const: set[int]) -> bool:
        """Whether ``nid`` may anchor a group with followers (it is no follower itself).

        Only ``add`` nodes can be both (a matmul's bias add that also feeds a layernorm):
        the earlier group wins.
        """
        if graph.nodes[nid].op != "add":
            return True
        return self.owner(graph, nid, const) is None

    # ------------------------------------------------------------------ costs
    def node_cost(self, graph: Graph, node: Node, constant: bool = False, const: set[int] | None = None) -> float:
        """Cost in ms of ``node``: its group's time if it anchors one, 0 if it follows in one;
        a graph input carries its share of the fixed cost of one inference call."""
        if node.op == "input":
            return self.run_overhead_ms / max(1, len(graph.inputs))
        if constant:
            return 0.0
        if node.op == "reshape":
            return self.kernel_ms
        if OPS[node.op].layout_only and node.op != "split":
            return 0.0
        if const is None:
            const = graph.constant_nodes()
        if self.owner(graph, node.id, const) is not None:
            return 0.0
        return self.group_ms(graph, self.group(graph, node.id, const), const)

    def node_costs(self, graph: Graph) -> dict[int, float]:
        const = graph.constant_nodes()
        return {nid: self.node_cost(graph, n, nid in const, const) for nid, n in graph.nodes.items()}

    def group_ms(self, graph: Graph, members: list[int], const: set[int]) -> float:
        """Cost (ms) of the group ``members`` (cached in memory and on disk)."""
        fast = group_key(graph, members, const)
        ms = self._fast_ms.get(fast)
        if ms is not None:
            return ms
        sub = group_graph(graph, members, const)
        key = sub.hash()
        ms = self._group_ms.get(key)
        if ms is None:
            table = self._disk.table
            digest = table.get("g:" + key)
            if digest is None or f"b:{digest}" not in table or self._noisy(table, digest):
                digest = self._time(sub, table)
                table["g:" + key] = digest
                self._disk.save()
            weight_bytes = BYTES_PER_ELEMENT * sum(math.prod(w.shape) for w in sub.weights)
            compute = float(table[f"b:{digest}"]) + self.kernel_ms
            self._group_ms[key] = ms = max(compute, weight_bytes / self.bytes_per_ms, self.kernel_ms)
        self._fast_ms[fast] = ms
        return ms

    @property
    def resolution(self) -> float:
        """Relative timing noise of the groups timed on this machine: the sum of their
        medians' standard errors over the sum of their costs (0 before any is timed). A
        predicted change of a graph's cost smaller than this fraction is within the noise of
        the timings it comes from (greedy search takes no such step)."""
        table = self._disk.table
        err = [(float(v), float(table[f"b:{k[2:]}"])) for k, v in table.items()
               if k.startswith("e:") and f"b:{k[2:]}" in table]
        if not err:
            return 0.0
        return sum(e for e, _ in err) / sum(max(b + self.kernel_ms, self.kernel_ms) for _, b in err)

    @property
    def bytes_per_ms(self) -> float:
        """Main-memory read bandwidth of this machine, bytes per ms (measured once, cached on disk)."""
        if self._bandwidth is None:
            from systems_envs.graph.measure import memory_bandwidth

            table = self._disk.table
            if not isinstance(table.get("bandwidth_bytes_per_s"), (int, float)):
                table["bandwidth_bytes_per_s"] = memory_bandwidth()
                self._disk.save()
            self._bandwidth = float(table["bandwidth_bytes_per_s"]) / 1e3
        return self._bandwidth

    @property
    def run_overhead_ms(self) -> float:
        """Fixed cost of one inference call, ms: a one-Relu model on 8 floats less its kernel."""
        return max(self._overheads()[0] - self.kernel_ms, 0.0)

    @property
    def kernel_ms(self) -> float:
        """Cost of one more kernel in a graph, ms: the time a chain of :data:`CHAIN` Relus on 8
        floats takes over a single Relu, per added Relu (onnxruntime's dispatch of a node)."""
        return self._overheads()[1]

    def _overheads(self) -> tuple[float, float]:
        """(time of the one-Relu model, per-kernel cost), ms, measured once per machine (cached on disk)."""
        if "plain" not in self._reference:
            table = self._disk.table
            if not all(isinstance(table.get(k), (int, float)) for k in ("reference_ms:plain", "kernel_ms")):
                from systems_envs.graph.measure import export_for_timing, make_session, session_feeds

                sessions = [make_session(export_for_timing(_relu_chain(n)), self.threads) for n in (1, CHAIN)]
                # timed as whole graphs are (``run``, not bound): the call overhead is what a whole graph pays
                t = self._interleaved(sessions, [session_feeds(s) for s in sessions], 4 * self.repeats, bound=False)
                table["reference_ms:plain"] = float(np.median(t[:, 0]))
                table["kernel_ms"] = max(float(np.median(t[:, 1] - t[:, 0])) / (CHAIN - 1), 0.0)
                self._disk.save()
            self._reference["plain"] = float(table["reference_ms:plain"])
            self._reference["kernel"] = float(table["kernel_ms"])
        return self._reference["plain"], self._reference["kernel"]

    def _interleaved(self, sessions, feeds, rounds: int, bound: bool = True) -> np.ndarray:
        from systems_envs.graph.measure import interleaved_ms, run_clock

        return interleaved_ms(sessions, feeds, rounds, self.warmup, inner=3, clock=run_clock(self.threads),
                              bound=bound)

    def _noisy(self, table: dict, digest: str) -> bool:
        """Whether the timing of ``digest`` in ``table`` is to be taken again with more rounds:
        the standard error of its median is above :data:`NOISY` of its cost and it has not yet
        been re-timed with :data:`RETIME_FACTOR` times the rounds."""
        if f"e:{digest}" not in table or int(table.get(f"n:{digest}", 0)) >= RETIME_FACTOR * self.repeats:
            return False
        cost = max(float(table[f"b:{digest}"]) + self.kernel_ms, self.kernel_ms)
        return float(table[f"e:{digest}"]) > NOISY * cost

    def _time(self, sub: Graph, table: dict) -> str:
        """Optimise ``sub`` with onnxruntime and, unless its optimised form is already timed,
        time it against the smallest group of its kind in the same rounds; returns the digest
        of the optimised form, under which ``table`` holds ``b:`` the median over rounds of
        (group time - reference time), ms, ``e:`` the standard error of that median, ``n:``
        the rounds, and ``k:`` the kind. A timing whose standard error is above
        :data:`NOISY` of the group's cost (a burst of load on a shared machine, one
        preempted round in ten) is taken again, once, with :data:`RETIME_FACTOR` times the
        rounds, and the new figures replace the old.

        The reference (:func:`reference_graph`) runs alternately with the group, so a change of
        the machine's load while the group is timed reaches both; what is left is the group's
        time less a call's fixed costs and one kernel. Both run through onnxruntime's I/O
        binding (:func:`~systems_envs.graph.measure.bound_run`): with ``run``, each further
        input or output of a group added 1-2 us of conversions that a whole graph does not
        pay inside (the zoo transformers, of many small groups, came out at 1.7-2x).
        """
        import onnx

        from systems_envs.graph.measure import export_for_timing, make_session, session_feeds

        fd, path = tempfile.mkstemp(suffix=".onnx", prefix="sysworld_ort_")
        os.close(fd)
        try:
            sess = make_session(export_for_timing(sub), self.threads, optimized_path=path)
            optimised = onnx.load(path, load_external_data=False)
            digest = optimized_digest(optimised)
        except GraphError as e:
            raise GraphError(f"kernel group {sub.name!r}: {e}") from None
        finally:
            os.unlink(path)
        kind = "nchwc" if any(n.domain == NCHWC_DOMAIN for n in optimised.graph.node) else "plain"
        retime = f"b:{digest}" in table and self._noisy(table, digest)
        if f"b:{digest}" not in table or retime:
            rounds = RETIME_FACTOR * self.repeats if retime else self.repeats
            ref = make_session(export_for_timing(reference_graph(kind)), self.threads)
            t = self._interleaved([sess, ref], [session_feeds(sess, seed=0), session_feeds(ref)], rounds)
            diff = t[:, 0] - t[:, 1]
            table[f"b:{digest}"] = float(np.median(diff))
            table[f"e:{digest}"] = median_standard_error(diff)
            table[f"n:{digest}"] = rounds
            self.timed += 1
        table[f"k:{digest}"] = kind
        return digest


CHAIN = 9  # Relus in the chain that measures the per-kernel cost
NOISY = 0.1  # a group timing whose median's standard error exceeds this fraction of its cost is re-timed
RETIME_FACTOR = 4  # ... once, with this many times the rounds (halves the standard error)


def median_standard_error(x: np.ndarray) -> float:
    """Standard error of the median of the samples ``x`` (normal approximation: 1.2533 sigma /
    sqrt(n), sigma estimated from the interquartile range as IQR / 1.349)."""
    q1, q3 = np.percentile(x, [25, 75])
    return float(1.2533 * (q3 - q1) / 1.349 / np.sqrt(len(x)))


def _relu_chain(n: int) -> Graph:
    """``n`` Relus in a chain on 8 floats."""
    g = Graph(f"relu_chain_{n}")
    y = g.input("x", (1, 8))
    for _ in range(n):
        y = g.add("relu", [y])
    g.set_outputs([y])
    return g


def reference_graph(kind: str) -> Graph:
    """The smallest group of a kind: ``plain``, a Relu on 8 floats; ``nchwc``, a 1x1
    convolution of 16 channels on one pixel (onnxruntime wraps a lone convolution in NCHWc
    reorders, which a whole graph pays once per chain of convolutions)."""
    if kind == "plain":
        return _relu_chain(1)
    g = Graph("reference_nchwc")
    y = g.add("conv2d", [g.input("x", (1, 16, 1, 1)), g.weight("w", (16, 16, 1, 1))])
    g.set_outputs([y])
    return g


def _sole_consumer(graph: Graph, nid: int) -> int | None:
    """The only consumer of ``nid`` (single output, not a graph output), else None."""
    if graph.is_output(nid) or len(graph.nodes[nid].shapes) != 1:
        return None
    uses = graph.uses(nid)
    return uses[0][0] if len(uses) == 1 else None


def _conv_chain_anchor(graph: Graph, t: int, const: set[int]) -> int | None:
    """The convolution (no activation, computed) that ``t`` ends a chain of, through up to
    :data:`MAX_AFFINE` constant affine nodes each the sole consumer of the one before; else None."""
    nodes = graph.nodes
    for _ in range(MAX_AFFINE + 1):
        n = nodes[t]
        if t in const:
            return None
        if n.op == "conv2d" and n.attrs.get("activation") == "none":
            return t
        if n.op not in _AFFINE_OPS + ("batchnorm",):
            return None
        preds = [s for s, _ in n.inputs if s not in const]
        if len(preds) != 1 or not _other_inputs_constant(n, preds[0], const) or _sole_consumer(graph, preds[0]) != t:
            return None
        t = preds[0]
    return None


def _sum_slot(graph: Graph, add: Node, const: set[int]) -> int | None:
    """For an ``add`` of two computed tensors of its output's shape: the producer of its first
    input that ends a convolution chain (onnxruntime's NCHWc convolution adds the other
    input as its fused "Sum"), else None."""
    if len(add.inputs) != 2 or any(s in const for s, _ in add.inputs) or \
            any(graph.shape(r) != add.shape for r in add.inputs) or add.inputs[0][0] == add.inputs[1][0]:
        return None
    for s, _ in add.inputs:
        if _sole_consumer(graph, s) == add.id and _conv_chain_anchor(graph, s, const) is not None:
            return s
    return None


def _is_sum(node: Node, const: set[int]) -> bool:
    """A group member that is a residual sum (an ``add`` of two computed tensors)."""
    return node.op == "add" and not any(s in const for s, _ in node.inputs)


def _other_inputs_constant(node: Node, tail: int, const: set[int]) -> bool:
    """``node`` reads ``tail`` once, at slot 0 or 1, and every other input is constant."""
    slots = [k for k, (s, _) in enumerate(node.inputs) if s == tail]
    return len(slots) == 1 and all(s in const for k, (s, _) in enumerate(node.inputs) if k != slots[0])


def group_key(graph: Graph, members: list[int], const: set[int]) -> tuple:
    """Hashable structure of a group, equal for groups with equal :func:`group_graph`: each
    member's signature and, per input, the member it comes from or the external tensor's
    number, constness and (for a weight) its ``init``."""
    pos = {m: j for j, m in enumerate(members)}
    ext: dict[TensorRef, int] = {}
    parts = []
    for m in members:
        node = graph.nodes[m]
        if m != members[0] and _is_sum(node, const):
            parts.append(("sum",))
            continue
        wiring = []
        for r in node.inputs:
            if r[0] in pos:
                wiring.append((pos[r[0]], r[1]))
            else:
                k = ext.setdefault(r, len(ext))
                src = graph.nodes[r[0]]
                wiring.append((-1, k, r[0] in const, src.attrs.get("init") if src.op == "weight" else None,
                               node.op == "batchnorm" and len(wiring) == 4))
        parts.append((signature(graph, node), tuple(wiring)))
    return tuple(parts)


def group_graph(graph: Graph, members: list[int], const: set[int]) -> Graph:
    """The group as a standalone graph: computed inputs become inputs ``x0, x1, ...``, constant
    ones weights ``w0, w1, ...`` (with the source weight's ``init``; ``positive`` for a
    batchnorm variance and for scalars), outputs the last member's outputs. Names depend only on the
    group's structure, so equal groups hash equal."""
    g = Graph(f"group_{graph.nodes[members[0]].op}")
    inside: dict[TensorRef, TensorRef] = {}
    ext: dict[TensorRef, TensorRef] = {}
    mset = set(members)
    for m in members:
        node = graph.nodes[m]
        if m != members[0] and _is_sum(node, const):  # fused into the convolution: not timed
            inside[(m, 0)] = next(inside[r] for r in node.inputs if r[0] in mset)
            continue
        ins = []
        for slot, r in enumerate(node.inputs):
            if r[0] in mset:
                ins.append(inside[r])
                continue
            if r not in ext:
                src = graph.nodes[r[0]]
                if r[0] in const:
                    init = src.attrs.get("init", "normal") if src.op == "weight" else "normal"
                    if (node.op == "batchnorm" and slot == 4) or not graph.shape(r):
                        init = "positive"  # a variance; a scalar (often a divisor)
                    ext[r] = (g.weight(f"w{len(ext)}", graph.shape(r), init=init), 0)
                else:
                    ext[r] = (g.input(f"x{len(ext)}", graph.shape(r)), 0)
            ins.append(ext[r])
        nid = g.add(node.op, ins, **dict(node.attrs))
        for i in range(len(node.shapes)):
            inside[(m, i)] = (nid, i)
    last = graph.nodes[members[-1]]
    g.set_outputs([inside[(members[-1], i)] for i in range(len(last.shapes))])
    return g


def optimized_digest(model) -> str:
    """Digest of an onnxruntime-optimised model's structure: node domains, types, attributes
    and wiring, initializer shapes and types, the values of integer initializers; tensor names
    and floating-point values ignored."""
    from onnx import numpy_helper

    g = model.graph
    token: dict[str, tuple] = {"": ("none",)}
    for k, i in enumerate(g.input):
        token[i.name] = ("in", k, i.type.SerializeToString())
    for t in g.initializer:  # integer initializers (shapes, axes, sizes, indices) carry meaning: keep their values
        v = numpy_helper.to_array(t)
        token[t.name] = ("init", tuple(t.dims), t.data_type, v.tobytes() if v.dtype.kind in "iub" else b"")
    h = hashlib.blake2b(digest_size=16)
    for j, n in enumerate(g.node):
        attrs = sorted((a.name, a.SerializeToString()) for a in n.attribute)
        h.update(repr((n.domain, n.op_type, attrs, [token.get(x, ("?", x)) for x in n.input])).encode())
        for i, o in enumerate(n.output):
            token[o] = ("node", j, i)
    h.update(repr([token.get(o.name) for o in g.output]).encode())
    return h.hexdigest()


class E2ECostModel(CostModel):
    """The whole graph timed end to end in onnxruntime (default optimisations), cached by graph hash.

    ``graph_cost(graph)`` is :class:`~systems_envs.graph.measure.E2ETimer`'s median in ms.
    Per-node costs do not exist (``whole_graph``): ``node_cost`` raises.

    Args:
      cache_dir, threads, warmup, rounds: as :class:`~systems_envs.graph.measure.E2ETimer`.
    """

    whole_graph = True

    def __init__(self, cache_dir: str | Path | None = None, threads: int = 1, warmup: int = 5, rounds: int = 20):
        from systems_envs.graph.measure import E2ETimer

        super().__init__(get_device("cpu"))
        self.name = "e2e"
        self.mode = "e2e"
        self.timer = E2ETimer(cache_dir, threads=threads, warmup=warmup, rounds=rounds)

    def node_cost(self, graph: Graph, node: Node, constant: bool = False, const: set[int] | None = None) -> float:
        raise ValueError("the e2e cost model times whole graphs only: use graph_cost")

    def node_costs(self, graph: Graph) -> dict[int, float]:
        raise ValueError("the e2e cost model times whole graphs only: use graph_cost")

    def graph_cost(self, graph: Graph) -> float:
        return self.timer(graph)
