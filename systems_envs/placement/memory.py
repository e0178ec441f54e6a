"""EGRL-style memory mapping on a *modelled* accelerator (not a measured one).

Each layer (a placed, non-layout-only operator of the graph) has its weights (all
constant inputs: weights and constant-folded tensors) and its activation (all its
outputs) mapped to one level of a memory hierarchy. Nothing here is measured: the
accelerator, its memories and their bandwidths are a model.

Model
  * Default hierarchy: ``sram`` 4 MB at 10 TB/s, ``cache`` 24 MB shared cache 10x
    slower (1 TB/s), ``dram`` 64 GB 100x slower than SRAM (100 GB/s); compute peak
    100 TFLOP/s. Layers execute one after another in topological order.
  * Capacity: weights stay resident for the whole inference; a layer's activation is
    live from its layer until its last consumer layer (inclusive). For every level and
    every layer index, resident weights + live activations must fit the capacity.
  * Time of a layer (roofline with per-tensor bandwidths):
    ``max(flops / peak, sum over tensors of bytes / bandwidth(level of the tensor))``,
    the tensors being its weights, its input activations (graph inputs live in the
    slowest level) and its output activation. Throughput = 1000 / total ms
    (inferences per second); layout-only ops (reshape, split) are views and cost 0.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from systems_envs.graph.cost import BYTES_PER_ELEMENT, flops_and_bytes
from systems_envs.graph.ir import Graph, GraphError
from systems_envs.graph.ops import OPS, SOURCE_OPS

MB = 1e6


@dataclasses.dataclass(frozen=True)
class MemoryLevel:
    """One memory: capacity in bytes, bandwidth in bytes/s."""

    name: str
    capacity: float
    bandwidth: float


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """A modelled accelerator: compute peak (FLOP/s) and memory levels, fastest first."""

    peak_flops: float = 100e12
    levels: tuple[MemoryLevel, ...] = (
        MemoryLevel("sram", 4 * MB, 10e12),
        MemoryLevel("cache", 24 * MB, 1e12),
        MemoryLevel("dram", 64e9, 100e9),
    )


@dataclasses.dataclass
class LayerGraph:
    """The layers of a graph for memory mapping (L layers).

    Attributes:
      name: graph name; node_ids: [L] graph node ids; op_types: [L].
      flops, w_bytes, a_bytes: [L] FLOPs, weight bytes, activation (output) bytes.
      inputs: L lists of producer layer indices (-1: a graph input) and their bytes.
      last_use: [L] index of the last layer reading each activation (itself if none).
      edges: [(producer, consumer)] layer pairs.
    """

    name: str
    node_ids: list[int]
    op_types: list[str]
    flops: np.ndarray
    w_bytes: np.ndarray
    a_bytes: np.ndarray
    inputs: list[list[tuple[int, float]]]
    last_use: np.ndarray
    edges: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.node_ids)


def layer_graph(graph: Graph) -> LayerGraph:
    """Extract the layers of ``graph``; views (layout-only ops) alias their input's layer."""
    const = graph.constant_nodes()
    owner: dict[int, int] = {}  # node id -> layer index owning its storage (-1: graph input)
    ids, types, fl, wb, ab, ins = [], [], [], [], [], []
    seen_w: set = set()
    for nid in graph.topo_order():
        n = graph.nodes[nid]
        if n.op == "input":
            owner[nid] = -1
            continue
        if n.op in SOURCE_OPS or nid in const:
            continue
        if OPS[n.op].layout_only:
            srcs = [s for s, _ in n.inputs if s in owner]
            owner[nid] = owner[srcs[0]] if srcs else -1
            continue
        li = len(ids)
        owner[nid] = li
        in_shapes = [graph.shape(r) for r in n.inputs]
        f, _ = flops_and_bytes(n.op, n.attrs, in_shapes, list(n.shapes))
        w, acts = 0.0, []
        for ref, shp in zip(n.inputs, in_shapes):
            nbytes = float(math.prod(shp) * BYTES_PER_ELEMENT)
            if ref[0] in owner:
                acts.append((owner[ref[0]], nbytes))
            elif ref not in seen_w:
                seen_w.add(ref)
                w += nbytes
        ids.append(nid)
        types.append(n.op)
        fl.append(f)
        wb.append(w)
        ab.append(float(sum(math.prod(s) for s in n.shapes) * BYTES_PER_ELEMENT))
        ins.append(acts)
    if not ids:
        raise GraphError(f"graph {graph.name!r} has no layers to map")
    last = np.arange(len(ids))
    edges = []
    for li, acts in enumerate(ins):
        for p, _ in acts:
            if p >= 0:
                last[p] = max(last[p], li)
                edges.append((p, li))
    for ref in graph.outputs:
        if owner.get(ref[0], -1) >= 0:
            last[owner[ref[0]]] = len(ids) - 1
    return LayerGraph(graph.name, ids, types, np.array(fl), np.array(wb), np.array(ab), ins, last,
                      sorted(set(edges)))


def check_capacity(lg: LayerGraph, acc: Accelerator, w_level, a_level) -> np.ndarray:
    """[M] peak bytes per level over the inference (placed layers only: level -1 = unplaced)."""
    L, M = len(lg), len(acc.levels)
    usage = np.zeros((M, L))
    for li in range(L):
        if w_level[li] >= 0:
            usage[w_level[li]] += lg.w_bytes[li]
        if a_level[li] >= 0:
            usage[a_level[li], li:lg.last_use[li] + 1] += lg.a_bytes[li]
    return usage.max(axis=1)


def layer_times_ms(lg: LayerGraph, acc: Accelerator, w_level, a_level) -> np.ndarray:
    """[L] roofline time of every layer in ms under a full mapping."""
    bw = np.array([lv.bandwidth for lv in acc.levels])
    slow = len(acc.levels) - 1
    out = np.empty(len(lg))
    for li in range(len(lg)):
        mem_s = lg.w_bytes[li] / bw[w_level[li]] + lg.a_bytes[li] / bw[a_level[li]]
        for p, nbytes in lg.inputs[li]:
            mem_s += nbytes / bw[a_level[p] if p >= 0 else slow]
        out[li] = 1e3 * max(lg.flops[li] / acc.peak_flops, mem_s)
    return out


@dataclasses.dataclass
class MappingResult:
    """valid: capacities respected; throughput: inferences/s (0 when invalid); latency_ms;
    peak_bytes: [M] per level."""

    valid: bool
    throughput: float
    latency_ms: float
    peak_bytes: np.ndarray


def evaluate_mapping(lg: LayerGraph, acc: Accelerator, w_level, a_level) -> MappingResult:
    """Throughput of a full mapping ([L] level indices for weights and activations)."""
    w_level, a_level = np.asarray(w_level, dtype=np.int64), np.asarray(a_level, dtype=np.int64)
    M = len(acc.levels)
    for name, arr in (("w_level", w_level), ("a_level", a_level)):
        if arr.shape != (len(lg),) or arr.min() < 0 or arr.max() >= M:
            raise ValueError(f"{name} must be {len(lg)} level indices in 0..{M - 1}")
    peak = check_capacity(lg, acc, w_level, a_level)
    valid = bool(np.all(peak <= np.array([lv.capacity for lv in acc.levels])))
    lat = float(layer_times_ms(lg, acc, w_level, a_level).sum())
    return MappingResult(valid, 1e3 / lat if valid else 0.0, lat if valid else math.inf, peak)


def greedy_mapping(lg: LayerGraph, acc: Accelerator) -> tuple[np.ndarray, np.ndarray]:
    """A compiler-like heuristic: tensors in order of bytes (smallest first) go to the
    fastest level where they still fit."""
    L, M = len(lg), len(acc.levels)
    w, a = np.full(L, -1), np.full(L, -1)
    caps = np.array([lv.capacity for lv in acc.levels])
    items = [(lg.w_bytes[i], 0, i) for i in range(L)] + [(lg.a_bytes[i], 1, i) for i in range(L)]
    for _, kind, i in sorted(items):
        for m in range(M):
            (w if kind == 0 else a)[i] = m
            if np.all(check_capacity(lg, acc, np.where(w < 0, -1, w), np.where(a < 0, -1, a)) <= caps):
                break
        # the slowest level is the fallback even if over capacity
    return w, a
