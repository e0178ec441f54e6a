"""Device placement simulator: the step time of a graph whose operators are placed on devices.

Compile a graph once (:func:`compile_graph`) into flat arrays, then evaluate many
placements with :func:`simulate`. A *placement* is an int array ``[n_ops]``: the device
index of every placed operator, operators listed in ``CompiledGraph.op_ids`` order (a
topological order of the graph's compute nodes).

What is placed and what costs time
  * Placed operators: every compute node except constant-folded ones. Inputs, weights
    and nodes that depend only on weights (folded at load time) are not placed: they
    are *resident* tensors, present before the step on every device that has a consumer
    of them, costing no time and no transfer (weights are loaded once, graph inputs are
    fed to the devices that read them).
  * Duration of operator ``i`` on device ``d``: the analytic roofline of
    :class:`~systems_envs.graph.cost.CostModel` on ``d``'s :class:`DeviceSpec` (which
    includes its kernel-launch overhead) plus a fixed ``per_op_overhead_ms``; layout-only
    operators (reshape, split, identity) take 0 ms.

Schedule semantics (exactly what is implemented)
  Every device is an in-order stream: it executes the operators placed on it one at a
  time, in the global topological order ``op_ids`` (a fixed priority, as a framework
  issues kernels onto one CUDA stream in program order). Operator ``i`` on device ``d``
  starts at ``max(device d free, all inputs arrived on d)``. An input produced on the
  same device arrives when its producer finishes. An input produced on device ``s != d``
  is sent once per (tensor, destination) over the link ``s -> d``; the first consumer
  (in topological order) on ``d`` issues the transfer, later consumers on ``d`` reuse it.
  Each link is serialised and FIFO in issue order: a transfer starts at
  ``max(link free, producer finished)`` and takes ``latency + bytes / bandwidth``.
  This is a discrete-event simulation whose event order is fixed by the priority, so it
  runs as one pass of list scheduling with per-device and per-link availability times.
  Step time (makespan) = the latest operator finish.

Memory semantics
  Per device, the peak over time of: resident tensors (the weights and graph inputs
  that its operators read; each counted once per device) plus live activations. An
  activation (every output tensor of a placed operator, at its full size, views
  included) lives on its producer's device from the producer's start until the last of:
  its local consumers finish, its outgoing transfers complete, the producer finishes;
  graph outputs live to the end of the step. A transferred copy lives on the
  destination from the transfer's start until its last consumer there finishes. Frees
  at a time instant happen before allocations at that instant. A device whose peak
  exceeds its capacity makes the placement invalid: ``valid=False``,
  ``step_time_ms=inf`` (never a runtime).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from systems_envs.graph.cost import BYTES_PER_ELEMENT, CostModel
from systems_envs.graph.ir import Graph, GraphError
from systems_envs.graph.ops import OPS, SOURCE_OPS
from systems_envs.placement.devices import DeviceSet, get_device_set

DEFAULT_OP_OVERHEAD_MS = 0.01


@dataclasses.dataclass
class CompiledGraph:
    """A graph flattened for fast simulation on one device set.

    Attributes (n = placed ops, T = activation tensors, C = resident tensors, D = devices):
      name: graph name.
      devices: the DeviceSet.
      op_ids: [n] graph node ids of the placed ops, in topological order.
      op_types: [n] op type strings.
      dur_ms: [n, D] duration of op i on device d, ms.
      op_inputs: n lists of activation tensor indices read by op i (unique).
      tensor_producer: [T] op index producing tensor t; tensor_bytes: [T] bytes.
      tensor_is_output: [T] bool, graph outputs.
      cons_tensor, cons_op: [E] every (tensor, consumer op) pair.
      res_bytes: [C] bytes of resident tensors (weights, inputs, folded constants).
      res_tensor, res_op: [R] every (resident tensor, consumer op) pair.
      edges: [(i, j, bytes)] op-to-op data edges (i produces a tensor j reads).
    """

    name: str
    devices: DeviceSet
    op_ids: list[int]
    op_types: list[str]
    dur_ms: np.ndarray
    op_inputs: list[list[int]]
    tensor_producer: np.ndarray
    tensor_bytes: np.ndarray
    tensor_is_output: np.ndarray
    cons_tensor: np.ndarray
    cons_op: np.ndarray
    res_bytes: np.ndarray
    res_tensor: np.ndarray
    res_op: np.ndarray
    edges: list[tuple[int, int, float]]

    def __post_init__(self):
        d = len(self.devices)
        self.n = len(self.op_ids)
        self.num_devices = d
        # Python-level views for the hot loop.
        self._dur = self.dur_ms.tolist()
        self._tprod = self.tensor_producer.tolist()
        self._tbytes = self.tensor_bytes.tolist()
        self._lat_ms = (self.devices.latency * 1e3).ravel().tolist()
        with np.errstate(divide="ignore"):
            self._ms_per_byte = (1e3 / self.devices.bandwidth).ravel().tolist()
        self._out_keys = None

    @property
    def op_index(self) -> dict[int, int]:
        """Graph node id -> op index."""
        return {nid: i for i, nid in enumerate(self.op_ids)}

    def serial_ms(self) -> np.ndarray:
        """[D] step time of the whole graph on each single device (ignoring memory)."""
        return self.dur_ms.sum(axis=0)

    def check_placement(self, placement) -> np.ndarray:
        """Return the placement as an int64 array, or raise ValueError saying what is wrong."""
        p = np.asarray(placement)
        if p.shape != (self.n,):
            raise ValueError(f"placement for {self.name!r} must have shape ({self.n},), got {p.shape}")
        if p.size and (not np.issubdtype(p.dtype, np.integer) or p.min() < 0 or p.max() >= self.num_devices):
            raise ValueError(f"placement for {self.name!r} must hold device indices in 0..{self.num_devices - 1}")
        return p.astype(np.int64)


@dataclasses.dataclass
class SimResult:
    """Result of one simulated step.

    Attributes:
      valid: False when some device runs out of memory.
      step_time_ms: makespan in ms (``inf`` when invalid).
      makespan_ms: the schedule's makespan even when invalid (for diagnostics only).
      busy_ms: [D] time each device spends computing, ms.
      peak_memory_bytes: [D] peak memory per device, bytes.
      transferred_bytes: total bytes sent over links.
      oom_devices: indices of the devices over capacity.
      start_ms, finish_ms: [n] schedule of every op.
    """

    valid: bool
    step_time_ms: float
    makespan_ms: float
    busy_ms: np.ndarray
    peak_memory_bytes: np.ndarray
    transferred_bytes: float
    oom_devices: list[int]
    start_ms: np.ndarray
    finish_ms: np.ndarray


def compile_graph(graph: Graph, devices: DeviceSet | str,
                  per_op_overhead_ms: float = DEFAULT_OP_OVERHEAD_MS) -> CompiledGraph:
    """Flatten ``graph`` for simulation on ``devices`` (see the module docstring)."""
    devices = get_device_set(devices)
    if per_op_overhead_ms < 0:
        raise ValueError(f"per_op_overhead_ms must be >= 0, got {per_op_overhead_ms}")
    const = graph.constant_nodes()
    order = graph.topo_order()
    op_ids = [nid for nid in order if graph.nodes[nid].op not in SOURCE_OPS and nid not in const]
    if not op_ids:
        raise GraphError(f"graph {graph.name!r} has no operators to place")
    index = {nid: i for i, nid in enumerate(op_ids)}
    models = {}
    for s in devices.specs:
        models.setdefault(s.name, CostModel(s))
    dur = np.zeros((len(op_ids), len(devices)))
    for i, nid in enumerate(op_ids):
        node = graph.nodes[nid]
        if OPS[node.op].layout_only:
            continue
        for d, s in enumerate(devices.specs):
            dur[i, d] = models[s.name].node_cost(graph, node) + per_op_overhead_ms

    tensors: dict[tuple[int, int], int] = {}
    residents: dict[tuple[int, int], int] = {}
    t_prod, t_bytes, r_bytes = [], [], []
    for i, nid in enumerate(op_ids):
        for k, shape in enumerate(graph.nodes[nid].shapes):
            tensors[(nid, k)] = len(t_prod)
            t_prod.append(i)
            t_bytes.append(float(math.prod(shape) * BYTES_PER_ELEMENT))
    op_inputs, cons_t, cons_o, res_t, res_o = [], [], [], [], []
    edges: dict[tuple[int, int], float] = {}
    for i, nid in enumerate(op_ids):
        ins: list[int] = []
        for ref in dict.fromkeys(graph.nodes[nid].inputs):
            if ref in tensors:
                t = tensors[ref]
                if t not in ins:
                    ins.append(t)
                    cons_t.append(t)
                    cons_o.append(i)
                    key = (t_prod[t], i)
                    edges[key] = edges.get(key, 0.0) + t_bytes[t]
            else:  # input, weight or constant-folded tensor
                if ref not in residents:
                    residents[ref] = len(r_bytes)
                    r_bytes.append(float(math.prod(graph.shape(ref)) * BYTES_PER_ELEMENT))
                res_t.append(residents[ref])
                res_o.append(i)
        op_inputs.append(ins)
    is_out = np.zeros(len(t_prod), dtype=bool)
    for ref in graph.outputs:
        if ref in tensors:
            is_out[tensors[ref]] = True
    return CompiledGraph(
        name=graph.name, devices=devices, op_ids=op_ids,
        op_types=[graph.nodes[nid].op for nid in op_ids], dur_ms=dur, op_inputs=op_inputs,
        tensor_producer=np.array(t_prod, dtype=np.int64), tensor_bytes=np.array(t_bytes),
        tensor_is_output=is_out, cons_tensor=np.array(cons_t, dtype=np.int64),
        cons_op=np.array(cons_o, dtype=np.int64), res_bytes=np.array(r_bytes),
        res_tensor=np.array(res_t, dtype=np.int64), res_op=np.array(res_o, dtype=np.int64),
        edges=[(i, j, b) for (i, j), b in edges.items()],
    )


def resident_bytes(cg: CompiledGraph, placement: np.ndarray) -> np.ndarray:
    """[D] bytes of resident tensors (weights, inputs) each device holds under ``placement``."""
    d = cg.num_devices
    if not len(cg.res_tensor):
        return np.zeros(d)
    mark = np.zeros(len(cg.res_bytes) * d, dtype=bool)
    mark[cg.res_tensor * d + placement[cg.res_op]] = True
    return (mark.reshape(-1, d) * cg.res_bytes[:, None]).sum(axis=0)


def schedule(cg: CompiledGraph, placement) -> tuple[list, list, list]:
    """Run the list-scheduling event loop. Returns (start, finish, transfers): lists of
    op start and finish times (ms) and a flat list of transfers, 5 entries each:
    ``tensor, src, dst, start_ms, end_ms``."""
    p = placement.tolist() if isinstance(placement, np.ndarray) else list(placement)
    D = cg.num_devices
    dur, tprod, tbytes = cg._dur, cg._tprod, cg._tbytes
    lat, mpb = cg._lat_ms, cg._ms_per_byte
    n = cg.n
    start = [0.0] * n
    fin = [0.0] * n
    dev_free = [0.0] * D
    link_free = [0.0] * (D * D)
    arrival: dict[int, float] = {}
    xfers = []
    for i, ins in enumerate(cg.op_inputs):
        d = p[i]
        ready = dev_free[d]
        for t in ins:
            j = tprod[t]
            s = p[j]
            if s == d:
                a = fin[j]
            else:
                key = t * D + d
                a = arrival.get(key)
                if a is None:
                    link = s * D + d
                    st = fin[j]
                    lf = link_free[link]
                    if lf > st:
                        st = lf
                    a = st + lat[link] + tbytes[t] * mpb[link]
                    link_free[link] = a
                    arrival[key] = a
                    xfers += (t, s, d, st, a)
            if a > ready:
                ready = a
        f = ready + dur[i][d]
        start[i] = ready
        fin[i] = f
        dev_free[d] = f
    return start, fin, xfers


def peak_memory(cg: CompiledGraph, p: np.ndarray, start: np.ndarray, fin: np.ndarray,
                xfers: list, makespan: float) -> np.ndarray:
    """[D] peak memory in bytes (resident + live activations), see the module docstring."""
    D = cg.num_devices
    T = len(cg.tensor_bytes)
    prod = cg.tensor_producer
    home = np.arange(T) * D + p[prod]
    free = np.full(T * D, -np.inf)
    free[home] = fin[prod]
    np.maximum.at(free, cg.cons_tensor * D + p[cg.cons_op], fin[cg.cons_op])
    alloc = np.full(T * D, np.nan)
    alloc[home] = start[prod]
    if xfers:
        x = np.array(xfers, dtype=np.float64).reshape(-1, 5)
        xt, xs, xd = x[:, 0].astype(np.int64), x[:, 1].astype(np.int64), x[:, 2].astype(np.int64)
        np.maximum.at(free, xt * D + xs, x[:, 4])
        alloc[xt * D + xd] = x[:, 3]
    free[home[cg.tensor_is_output]] = makespan
    live = np.flatnonzero(~np.isnan(alloc))
    dev = live % D
    nbytes = cg.tensor_bytes[live // D]
    # events: all frees, then all allocations; a stable sort by (device, time) keeps
    # frees before allocations at equal times
    span = 2.0 * makespan + 1.0
    key = np.concatenate([dev * span + free[live], dev * span + alloc[live]])
    order = np.argsort(key, kind="stable")
    delta = np.concatenate([-nbytes, nbytes])[order]
    sdev = np.concatenate([dev, dev])[order]
    cs = np.cumsum(delta)
    bounds = np.searchsorted(sdev, np.arange(D + 1))
    starts = bounds[:-1]
    nonempty = bounds[1:] > starts
    peak = np.zeros(D)
    if nonempty.any():
        seg_max = np.maximum.reduceat(cs, starts[nonempty])
        base = np.where(starts[nonempty] > 0, cs[np.maximum(starts[nonempty] - 1, 0)], 0.0)
        peak[nonempty] = np.maximum(seg_max - base, 0.0)
    return peak + resident_bytes(cg, p)


def simulate(cg: CompiledGraph, placement, check: bool = True) -> SimResult:
    """Simulate one step of ``cg`` under ``placement`` ([n] device indices)."""
    p = cg.check_placement(placement) if check else np.asarray(placement, dtype=np.int64)
    D = cg.num_devices
    cap = cg.devices.capacity
    start_l, fin_l, xfers = schedule(cg, p)
    start, fin = np.array(start_l), np.array(fin_l)
    makespan = float(fin.max())
    peak = peak_memory(cg, p, start, fin, xfers, makespan)
    oom = [int(d) for d in np.flatnonzero(peak > cap)]
    busy = np.bincount(p, weights=cg.dur_ms[np.arange(cg.n), p], minlength=D)
    moved = float(cg.tensor_bytes[np.array(xfers[0::5], dtype=np.int64)].sum()) if xfers else 0.0
    valid = not oom
    return SimResult(valid, makespan if valid else math.inf, makespan, busy, peak, moved, oom, start, fin)


def step_time(cg: CompiledGraph, placement) -> float:
    """Step time in ms of a placement; ``inf`` when it runs out of memory.

    Cheaper than :func:`simulate`: skips the memory sweep when resident tensors alone
    already exceed a capacity.
    """
    p = np.asarray(placement, dtype=np.int64)
    if np.any(resident_bytes(cg, p) > cg.devices.capacity):
        return math.inf
    start_l, fin_l, xfers = schedule(cg, p)
    fin = np.array(fin_l)
    makespan = float(fin.max())
    peak = peak_memory(cg, p, np.array(start_l), fin, xfers, makespan)
    return makespan if not np.any(peak > cg.devices.capacity) else math.inf
