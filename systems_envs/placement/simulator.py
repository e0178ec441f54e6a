"""Device placement simulator: the step time of a graph whose operators are placed on devices.

Compile a graph once (:func:`compile_graph`) into flat arrays, then evaluate placements
with :func:`simulate` (one, full result), :func:`step_time` (one, step time only) or
:func:`evaluate_many` (a batch ``[B, n_ops]``, vectorised over the batch with NumPy; the
fastest per placement, with results identical to :func:`simulate` row by row). A
*placement* is an int array ``[n_ops]``: the device index of every placed operator,
operators listed in ``CompiledGraph.op_ids`` order (a topological order of the graph's
compute nodes).

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
_I64_MIN = np.iinfo(np.int64).min


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

    Derived (E = number of (tensor, consumer) pairs, listed in consumer-op order):
      cons_prod: [E] producer op of cons_tensor; cons_bytes: [E] its bytes.
      edge_ptr: [n + 1] op i reads through pairs edge_ptr[i]:edge_ptr[i + 1].
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
        self._lat_ms = (self.devices.latency * 1e3).ravel().tolist()
        with np.errstate(divide="ignore"):
            self._ms_per_byte = (1e3 / self.devices.bandwidth).ravel().tolist()
        # edges (every (tensor, consumer op) pair) are listed in op order: op i owns
        # edges edge_ptr[i]:edge_ptr[i + 1]
        self.cons_prod = self.tensor_producer[self.cons_tensor]
        self.cons_bytes = self.tensor_bytes[self.cons_tensor]
        self.edge_ptr = np.searchsorted(self.cons_op, np.arange(self.n + 1))
        if np.any(np.diff(self.cons_op) < 0):
            raise ValueError(f"compiled graph {self.name!r}: cons_op must be sorted by op index")
        ptr, ct, cp, cb = self.edge_ptr.tolist(), self.cons_tensor.tolist(), self.cons_prod.tolist(), self.cons_bytes.tolist()
        self._op_edges = [[(e, ct[e], cp[e], cb[e]) for e in range(ptr[i], ptr[i + 1])] for i in range(self.n)]
        # constants of the vectorised paths
        self._op_range = np.arange(self.n)
        self._tbytes_i64 = self.tensor_bytes.astype(np.int64)   # bytes are whole numbers: exact sums
        self._cbytes_i64 = self.cons_bytes.astype(np.int64)
        self._ctD = self.cons_tensor * d
        self._tD = np.arange(len(self.tensor_bytes)) * d
        self._out_idx = np.flatnonzero(self.tensor_is_output)

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


@dataclasses.dataclass
class BatchResult:
    """Results of :func:`evaluate_many` for B placements (identical to :func:`simulate` row by row).

    Attributes:
      step_time_ms: [B] makespan in ms, ``inf`` where invalid.
      valid: [B] bool, False where some device runs out of memory.
      makespan_ms: [B] the schedule's makespan even when invalid.
      busy_ms: [B, D] compute time per device, ms.
      peak_memory_bytes: [B, D] peak memory per device, bytes.
      transferred_bytes: [B] total bytes sent over links.
    """

    step_time_ms: np.ndarray
    valid: np.ndarray
    makespan_ms: np.ndarray
    busy_ms: np.ndarray
    peak_memory_bytes: np.ndarray
    transferred_bytes: np.ndarray


def resident_bytes(cg: CompiledGraph, placement: np.ndarray) -> np.ndarray:
    """Bytes of resident tensors (weights, inputs) each device holds: [D] for a placement
    [n], [B, D] for placements [B, n]."""
    P = np.asarray(placement, dtype=np.int64)
    one = P.ndim == 1
    P = P.reshape(-1, cg.n)
    B, D, C = len(P), cg.num_devices, len(cg.res_bytes)
    out = np.zeros((B, D))
    if C:
        mark = np.zeros(B * C * D, dtype=bool)
        mark[(np.arange(B)[:, None] * (C * D) + cg.res_tensor * D + P[:, cg.res_op]).ravel()] = True
        out = (mark.reshape(B, C, D) * cg.res_bytes[None, :, None]).sum(axis=1)
    return out[0] if one else out


def _busy(cg: CompiledGraph, P: np.ndarray) -> np.ndarray:
    """[B, D] compute time per device (ms) of placements P [B, n]."""
    B, D = len(P), cg.num_devices
    idx = (np.arange(B)[:, None] * D + P).ravel()
    return np.bincount(idx, weights=cg.dur_ms[cg._op_range, P].ravel(), minlength=B * D).reshape(B, D)


def schedule(cg: CompiledGraph, placement) -> tuple[list, list, list]:
    """Run the list-scheduling event loop for one placement. Returns (start, finish,
    transfers): lists of op start and finish times (ms) and a flat list of transfers, 3
    entries each: ``edge, start_ms, end_ms`` where ``edge`` indexes ``cg.cons_tensor`` /
    ``cg.cons_op`` (the first consumer on the destination, which issues the transfer)."""
    p = placement.tolist() if isinstance(placement, np.ndarray) else list(placement)
    D = cg.num_devices
    dur, lat, mpb = cg._dur, cg._lat_ms, cg._ms_per_byte
    n = cg.n
    start = [0.0] * n
    fin = [0.0] * n
    dev_free = [0.0] * D
    link_free = [0.0] * (D * D)
    arrival = [None] * (len(cg.tensor_bytes) * D)
    xfers = []
    for i, edges in enumerate(cg._op_edges):
        d = p[i]
        ready = dev_free[d]
        for e, t, j, tb in edges:
            s = p[j]
            if s == d:
                a = fin[j]
            else:
                key = t * D + d
                a = arrival[key]
                if a is None:
                    link = s * D + d
                    st = fin[j]
                    lf = link_free[link]
                    if lf > st:
                        st = lf
                    a = st + lat[link] + tb * mpb[link]
                    link_free[link] = a
                    arrival[key] = a
                    xfers += (e, st, a)
            if a > ready:
                ready = a
        f = ready + dur[i][d]
        start[i] = ready
        fin[i] = f
        dev_free[d] = f
    return start, fin, xfers


def _schedule_many(cg: CompiledGraph, P: np.ndarray):
    """The event loop of :func:`schedule` for placements P [B, n], vectorised over B
    (same arithmetic in the same order, so the times are bit-identical). Returns start,
    fin [B, n] (ms) and, per edge, xs, xe [B, E] (transfer start/end, ms; xe = -inf and
    need = False where the edge issues no transfer) and need [B, E] bool."""
    B, n, D, E = len(P), cg.n, cg.num_devices, len(cg.cons_op)
    T = len(cg.tensor_bytes)
    ar = np.arange(B)
    PT = np.ascontiguousarray(P.T)                               # [n, B]
    dest, src = PT[cg.cons_op], PT[cg.cons_prod]                 # [E, B]
    remote = src != dest
    key = (cg.cons_tensor[:, None] * D + dest) * B + ar          # (tensor, dest, b) slot
    eidx = np.broadcast_to(np.arange(E)[:, None], (E, B))
    first = np.full(T * D * B, E, dtype=np.int64)
    np.minimum.at(first, key.ravel(), eidx.ravel())
    need = remote & (first[key] == eidx)                         # this edge issues the transfer
    # per-transfer constants, edge-major: edge e issues transfers off[e]:off[e + 1]
    link = (src * D + dest)[need]
    rows_n = np.nonzero(need)[1]
    LK, key_n = link * B + rows_n, key[need]
    LAT = (cg.devices.latency * 1e3).ravel()[link]
    with np.errstate(divide="ignore"):
        XB = cg.cons_bytes[np.nonzero(need)[0]] * (1e3 / cg.devices.bandwidth).ravel()[link]
    off = np.concatenate([[0], np.cumsum(need.sum(axis=1))]).tolist()
    xs_n, xe_n = np.empty(len(link)), np.empty(len(link))
    DB = PT * B + ar
    DUR = cg.dur_ms[np.arange(n)[:, None], PT]
    start, fin = np.empty((n, B)), np.empty((n, B))
    dev_free, link_free, arrival = np.zeros(D * B), np.zeros(D * D * B), np.zeros(T * D * B)
    any_rem, all_rem = remote.any(axis=1).tolist(), remote.all(axis=1).tolist()
    ptr, prod = cg.edge_ptr.tolist(), cg.cons_prod.tolist()
    for i in range(n):
        ready = dev_free[DB[i]]
        for e in range(ptr[i], ptr[i + 1]):
            fj = fin[prod[e]]
            if not any_rem[e]:
                np.maximum(ready, fj, out=ready)
                continue
            lo, hi = off[e], off[e + 1]
            if hi > lo:  # same arithmetic as schedule(): (start + latency) + bytes * ms_per_byte
                lk = LK[lo:hi]
                st = np.maximum(fj[rows_n[lo:hi]], link_free[lk])
                a = st + LAT[lo:hi] + XB[lo:hi]
                link_free[lk] = a
                arrival[key_n[lo:hi]] = a
                xs_n[lo:hi] = st
                xe_n[lo:hi] = a
            a = arrival[key[e]]
            if not all_rem[e]:
                a = np.where(remote[e], a, fj)
            np.maximum(ready, a, out=ready)
        start[i] = ready
        f = ready + DUR[i]
        fin[i] = f
        dev_free[DB[i]] = f
    xs, xe = np.zeros((E, B)), np.full((E, B), -np.inf)
    xs[need], xe[need] = xs_n, xe_n
    return tuple(np.ascontiguousarray(a.T) for a in (start, fin, xs, xe, need))


def _take_rows(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``x[b, idx[b, k]]`` for [B, L] arrays (plain 1-D indexing when B == 1: much cheaper)."""
    return x[0][idx[0]][None] if len(x) == 1 else np.take_along_axis(x, idx, axis=1)


def _peak_memory(cg: CompiledGraph, P, start, fin, cedge, xs, xe, need) -> np.ndarray:
    """[B, D] peak memory in bytes (resident + live activations); semantics in the module docstring.

    Args:
      P: [B, n] placements; start, fin: [B, n] their schedules (ms).
      cedge: [K] edges (indices into ``cg.cons_op``) that may issue a transfer;
      xs, xe: [B, K] start and end (ms) of those transfers; need: [B, K] bool, whether
        edge ``cedge[k]`` issues one in row b (xe must be -inf where not).

    Every (tensor, device) copy is an allocation event (+bytes) and a free event
    (-bytes); per row the events are stably sorted by (device, time), frees listed
    before allocations so that they come first at equal times, and each device's peak
    is the largest prefix sum of its run of events. Byte counts are integers, so the
    sums are exact whatever the batch size.
    """
    B, D, T, K = len(P), cg.num_devices, len(cg.tensor_bytes), len(cedge)
    if D > 127:
        raise ValueError(f"the memory sweep supports at most 127 devices, got {D}")
    L = 2 * (T + K)
    ct, co, prod = cg.cons_tensor, cg.cons_op, cg.tensor_producer
    row = np.arange(B)[:, None]
    # latest finish of the consumers of tensor t on device d: [B * T * D]
    cons_free = np.full(B * T * D, -np.inf)
    np.maximum.at(cons_free, (row * (T * D) + (ct * D + P[:, co])).ravel(), fin[:, co].ravel())
    home_dev = P[:, prod]                                         # [B, T]
    home_free = np.ascontiguousarray(np.maximum(fin[:, prod], cons_free[row * (T * D) + (np.arange(T) * D + home_dev)]))
    np.maximum.at(home_free.reshape(-1), (row * T + ct[cedge]).ravel(), xe.ravel())  # outgoing transfers done
    if cg.tensor_is_output.any():
        home_free[:, cg.tensor_is_output] = fin.max(axis=1)[:, None]  # outputs live to the end
    # copies; edges without a transfer get zero-byte events at their consumer's times
    # (keeps each block of events nearly sorted, which the merge sort below likes)
    copy_dev = P[:, co[cedge]]                                    # [B, K]
    copy_free = np.where(need, cons_free[row * (T * D) + (ct[cedge] * D + copy_dev)], fin[:, co[cedge]])
    copy_alloc = np.where(need, xs, start[:, co[cedge]])
    times = np.concatenate([home_free, copy_free, start[:, prod], copy_alloc], axis=1)
    dev = np.concatenate([home_dev, copy_dev, home_dev, copy_dev], axis=1).astype(np.int8)
    # stable: frees first at ties (the 1-D call is much cheaper for a single row)
    order = np.lexsort((times[0], dev[0]))[None] if B == 1 else np.lexsort((times, dev), axis=-1)
    hb = np.broadcast_to(cg._tbytes_i64, (B, T))
    cb = np.where(need, cg._cbytes_i64[cedge], 0)
    delta = np.concatenate([-hb, -cb, hb, cb], axis=1)
    cs = np.empty((B, L + 1), dtype=np.int64)
    cs[:, L] = _I64_MIN                                           # pad: ends every row's last run
    np.cumsum(_take_rows(delta, order), axis=1, out=cs[:, :L])
    counts = 2 * (np.bincount((row * D + home_dev).ravel(), minlength=B * D)
                  + np.bincount((row * D + copy_dev).ravel(), minlength=B * D)).reshape(B, D)
    first = np.cumsum(counts, axis=1) - counts                    # run start per device
    run_max = np.maximum.reduceat(cs.reshape(-1), (row * (L + 1) + first).ravel()).reshape(B, D)
    base = np.where(first > 0, _take_rows(cs, np.maximum(first - 1, 0)), 0)
    peak = np.where(counts > 0, np.maximum(run_max - base, 0), 0).astype(np.float64)
    return peak + resident_bytes(cg, P)


def _peak_memory_one(cg: CompiledGraph, p: np.ndarray, start: list, fin: list, xfers: list):
    """:func:`_peak_memory` for one placement and the output of :func:`schedule`, in 1-D
    (fewer, cheaper NumPy calls; the same events, order and exact integer sums).
    Returns ([D] peak bytes, [n] start, [n] finish, transferred bytes)."""
    D, T = cg.num_devices, len(cg.tensor_bytes)
    if D > 127:
        raise ValueError(f"the memory sweep supports at most 127 devices, got {D}")
    st, fi = np.array(start), np.array(fin)
    co, prod = cg.cons_op, cg.tensor_producer
    slot = cg._ctD + p[co]                                        # (tensor, consumer device) per edge
    cons_free = np.full(T * D, -np.inf)
    np.maximum.at(cons_free, slot, fi[co])
    home_dev = p[prod]
    home_free = np.maximum(fi[prod], cons_free[cg._tD + home_dev])
    if xfers:
        x = np.array(xfers).reshape(-1, 3)
        ce = x[:, 0].astype(np.int64)
        np.maximum.at(home_free, cg.cons_tensor[ce], x[:, 2])     # outgoing transfers done
        copy_dev, copy_free, copy_alloc, cb = p[co[ce]], cons_free[slot[ce]], x[:, 1], cg._cbytes_i64[ce]
    else:
        copy_dev, copy_free, copy_alloc, cb = np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    home_free[cg._out_idx] = fi.max()
    times = np.concatenate([home_free, copy_free, st[prod], copy_alloc])
    dev = np.concatenate([home_dev, copy_dev, home_dev, copy_dev]).astype(np.int8)
    order = np.lexsort((times, dev))                             # stable: frees first at ties
    cs = np.cumsum(np.concatenate([-cg._tbytes_i64, -cb, cg._tbytes_i64, cb])[order])
    ends = np.cumsum(np.bincount(dev, minlength=D)).tolist()
    peak = np.zeros(D)
    lo = 0
    for d, hi in enumerate(ends):
        if hi > lo:
            peak[d] = max(int(cs[lo:hi].max()) - (int(cs[lo - 1]) if lo else 0), 0)
        lo = hi
    return peak + resident_bytes(cg, p), st, fi, float(cb.sum())


def simulate(cg: CompiledGraph, placement, check: bool = True) -> SimResult:
    """Simulate one step of ``cg`` under ``placement`` ([n] device indices)."""
    p = cg.check_placement(placement) if check else np.asarray(placement, dtype=np.int64)
    peak, start, fin, moved = _peak_memory_one(cg, p, *schedule(cg, p))
    makespan = float(fin.max())
    oom = [int(d) for d in np.flatnonzero(peak > cg.devices.capacity)]
    busy = _busy(cg, p[None])[0]
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
    peak, _, fin, _ = _peak_memory_one(cg, p, *schedule(cg, p))
    return float(fin.max()) if not np.any(peak > cg.devices.capacity) else math.inf


def evaluate_many(cg: CompiledGraph, placements, check: bool = True, chunk: int = 256) -> BatchResult:
    """Simulate B placements at once (vectorised over the batch, ``chunk`` at a time).

    Args:
      placements: [B, n] int device indices, rows in ``cg.op_ids`` order.
    Returns a :class:`BatchResult` whose rows equal :func:`simulate` on each placement.
    """
    P = np.asarray(placements)
    if P.ndim != 2 or P.shape[1] != cg.n:
        raise ValueError(f"placements for {cg.name!r} must have shape (B, {cg.n}), got {P.shape}")
    if check and P.size and (not np.issubdtype(P.dtype, np.integer) or P.min() < 0 or P.max() >= cg.num_devices):
        raise ValueError(f"placements for {cg.name!r} must hold device indices in 0..{cg.num_devices - 1}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    P = P.astype(np.int64)
    B, D = len(P), cg.num_devices
    makespan, moved = np.zeros(B), np.zeros(B)
    peak, busy = np.zeros((B, D)), np.zeros((B, D))
    for lo in range(0, B, chunk):
        Pc = P[lo:lo + chunk]
        start, fin, xs, xe, need = _schedule_many(cg, Pc)
        makespan[lo:lo + chunk] = fin.max(axis=1)
        used = np.flatnonzero(need.any(axis=0))                  # edges that transfer in some row
        peak[lo:lo + chunk] = _peak_memory(cg, Pc, start, fin, used, xs[:, used], xe[:, used], need[:, used])
        busy[lo:lo + chunk] = _busy(cg, Pc)
        moved[lo:lo + chunk] = (need * cg.cons_bytes).sum(axis=1)
    valid = ~np.any(peak > cg.devices.capacity, axis=1)
    return BatchResult(np.where(valid, makespan, np.inf), valid, makespan, busy, peak, moved)
