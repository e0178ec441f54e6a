"""Non-learned rewrite searches: greedy, TASO's cost-based backtracking, random.

All searches work on a copy of the input graph, cost it with a
:class:`~systems_envs.graph.cost.CostModel` (analytic roofline on ``v100`` by default;
costs in ms, kept up to date incrementally by the :class:`CandidateIndex`) and return a
:class:`SearchResult` holding the best graph seen.

Backtracking search (TASO, Jia et al. 2019): a priority queue of graphs ordered by cost;
each dequeued graph is expanded: every candidate rewrite of it gives a child graph, queued
if its cost is below ``alpha * best_cost`` (alpha 1.05 by default) and its op count is at
most ``max_ops_factor`` times the input's (ops that run: compute nodes that are not
constant-folded, since constant subgraphs such as folded batchnorm weights are computed
once at load time); graphs already seen (structural hash) are not
expanded again. The search stops after ``budget`` expansions, when the queue is empty, or
after ``time_limit`` seconds. The result is never worse than the input (the input is the
initial best).

How a child's cost is obtained cheaply: a rewrite changes the graph locally, so most
candidates of a child are the very same matches (same ``Match`` objects, not re-matched
by the :class:`CandidateIndex`) as in its parent, and their cost deltas are reused from
the parent; only candidates re-matched near the last change are evaluated exactly with
:meth:`CandidateIndex.preview`. Reused deltas are estimates (exact unless a rewrite's
pruning or constant folding reaches the other's nodes); they only order the queue and
gate it by ``alpha``: the cost of every expanded graph, and so of the returned best, is
exact (incremental cost of the materialised graph), as is every previewed child (which
may become the best without being expanded). Queue entries store only (parent,
candidate number); a queued graph is materialised from its parent when dequeued, and
deduplicated then (structural hash), so duplicates cost one rewrite, not an expansion.

Where this differs from TASO (``Graph::optimize`` in TASO's src/core/graph.cc): TASO
costs every child exactly and deduplicates at push time; it updates the best graph only
when a graph is dequeued (we also take exactly previewed children); its node cap is
``2 x`` the input's op count, all ops (ours: ``max_ops_factor = 2.0`` of the ops that run;
TASO folds constant ops only after the search, and its conv-batchnorm fusion is not among
the substitutions it searches); its
Python API's default budget is 1000 dequeues (ours: 1000, plus ``time_limit``). On this
2-core CPU an expansion of a ~400-op graph costs a few to tens of ms (one rewrite and
re-match plus the exact previews near the change), so the default budget takes roughly
10-60 s.
"""
from __future__ import annotations

import dataclasses
import heapq
import time
from typing import Callable, Sequence

import numpy as np

from systems_envs.graph.cost import CostModel
from systems_envs.graph.ir import Graph
from systems_envs.rewrite.candidates import CandidateIndex, Change, live_ops
from systems_envs.rewrite.deltas import CandidateDeltas
from systems_envs.rewrite.rule import Rule

Location = tuple[int, ...]


@dataclasses.dataclass
class SearchResult:
    """Outcome of a search.

    Attributes:
      graph: the best graph found.
      cost_before, cost_after: costs in ms of the input and of ``graph``.
      rewrites: ``(rule name, matched node ids)`` applied, in order, from the input to ``graph``.
      seconds: wall-clock time of the search.
      expanded: graphs whose candidates were enumerated (greedy: steps evaluated;
        backtracking: dequeues; random: steps).
    """

    graph: Graph
    cost_before: float
    cost_after: float
    rewrites: list[tuple[str, Location]]
    seconds: float
    expanded: int

    @property
    def reduction(self) -> float:
        """Relative cost reduction, ``1 - after / before``."""
        return 1.0 - self.cost_after / self.cost_before if self.cost_before > 0 else 0.0


# ----------------------------------------------------------------------------- hashing
class StructuralHasher:
    """Structural graph hashes for deduplication, updated incrementally after a rewrite.

    A node's hash combines its op, attributes and shapes with its inputs' hashes (so it
    does not depend on node ids); the graph hash is the sum of node hashes (a multiset)
    plus the output hashes. After a rewrite only the changed nodes and their descendants
    are re-hashed. Hashes use Python's ``hash`` (64 bit, stable within one process).
    """

    def __init__(self):
        self._local: dict[int, tuple[object, int]] = {}  # id(node) -> (node, local hash)

    def _local_hash(self, node) -> int:
        hit = self._local.get(id(node))
        if hit is None or hit[0] is not node:
            hit = (node, hash((node.op, node.attr_key(), node.shapes)))
            self._local[id(node)] = hit
        return hit[1]

    def full(self, g: Graph) -> tuple[dict[int, int], int]:
        """Node hashes and their sum."""
        h: dict[int, int] = {}
        for nid in g.topo_order():
            n = g.nodes[nid]
            h[nid] = hash((self._local_hash(n),) + tuple((h[s], i) for s, i in n.inputs))
        return h, sum(h.values())

    def update(self, g: Graph, parent: dict[int, int], parent_sum: int, change: Change) -> tuple[dict[int, int], int]:
        """Hashes of ``g`` = the parent graph after ``change``; ``parent_sum`` = sum of parent node hashes."""
        dirty = set(change.added | change.changed)
        stack = list(dirty)
        while stack:  # every descendant of a changed node changes too
            for c, _ in g._uses[stack.pop()]:
                if c not in dirty:
                    dirty.add(c)
                    stack.append(c)
        h = dict(parent)
        total = parent_sum
        for n in change.removed:
            total -= h.pop(n)
        for n in dirty:
            total -= h.pop(n, 0)
        for start in dirty:
            if start in h:
                continue
            stack = [start]
            while stack:
                n = stack[-1]
                node = g.nodes[n]
                todo = [s for s, _ in node.inputs if s not in h]
                if todo:
                    stack.extend(todo)
                    continue
                stack.pop()
                if n not in h:
                    h[n] = hash((self._local_hash(node),) + tuple((h[s], i) for s, i in node.inputs))
                    total += h[n]
        return h, total

    @staticmethod
    def graph_key(g: Graph, h: dict[int, int], s: int) -> tuple:
        """Dedup key: node-hash sum and the output hashes."""
        return (s & 0xFFFFFFFFFFFFFFFF, tuple((h[n], i) for n, i in g.outputs))


# ----------------------------------------------------------------------------- searches
def _start(graph: Graph, rules: Sequence[Rule], cost_model: CostModel | None) -> CandidateIndex:
    return CandidateIndex(graph.copy(), rules, cost_model or CostModel())


def greedy(graph: Graph, rules: Sequence[Rule], cost_model: CostModel | None = None, *,
           max_steps: int = 10_000, eps: float = 1e-9, min_gain: float | None = None,
           progress: Callable[[str], None] | None = None) -> SearchResult:
    """Repeatedly apply the candidate that lowers the cost most (by more than ``eps * max(1,
    cost)`` and more than ``min_gain * cost``); stop when none does.

    ``min_gain`` (a fraction of the current cost) defaults to ``cost_model.resolution``, the
    smallest change the cost model can tell from its own timing noise (0 for analytic
    models). A lower value takes steps whose predicted gain is within that noise, one by one;
    whether their sum is real is for a measurement to say (``optimize --verify``).

    Each candidate's cost change is exact (:class:`~systems_envs.rewrite.deltas.CandidateDeltas`:
    a look-ahead over the nodes it touches, summed exactly, so equal changes tie exactly),
    and is re-evaluated only when a rewrite touches what it depends on. Ties go to the
    lowest candidate index (deterministic).
    """
    t0 = time.perf_counter()
    idx = _start(graph, rules, cost_model)
    cost0 = idx.cost
    if min_gain is not None and not min_gain >= 0.0:
        raise ValueError(f"min_gain must be >= 0, got {min_gain}")
    resolution = float(getattr(idx.cost_model, "resolution", 0.0)) if min_gain is None else min_gain
    rewrites: list[tuple[str, Location]] = []
    deltas = CandidateDeltas()
    steps = 0
    while steps < max_steps:
        steps += 1
        d = deltas.compute(idx)
        best_i = int(np.argmin(d)) if len(d) else -1
        if best_i < 0 or not d[best_i] < -max(eps * max(1.0, idx.cost), resolution * idx.cost):
            break
        effect = deltas.effect(idx, best_i)
        rewrites.append(idx.describe(best_i))
        idx.apply(best_i)
        deltas.applied(effect)
        if progress:
            progress(f"greedy step {steps}: {rewrites[-1][0]} -> {idx.cost:.4f} ms")
    return SearchResult(idx.graph, cost0, idx.cost, rewrites, time.perf_counter() - t0, steps)


def backtracking(graph: Graph, rules: Sequence[Rule], cost_model: CostModel | None = None, *,
                 alpha: float = 1.05, budget: int = 1000, max_ops_factor: float = 2.0,
                 time_limit: float | None = None,
                 progress: Callable[[str], None] | None = None) -> SearchResult:
    """TASO's cost-based backtracking search (see the module docstring)."""
    if alpha < 1.0:
        raise ValueError(f"alpha must be >= 1, got {alpha}")
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    t0 = time.perf_counter()
    root = _start(graph, rules, cost_model)
    max_ops = int(max_ops_factor * root.live_ops())
    hasher = StructuralHasher()
    cost0 = root.cost
    # expanded states: index, node hashes, hash sum, rewrites from the input, and the
    # (cost delta, op-count delta) of each of its candidates keyed by id(match)
    states: list[tuple[CandidateIndex, dict, int, list, dict]] = []
    seen: set = set()
    best = (cost0, root.graph, [])
    queue: list[tuple[float, int, int, int]] = [(cost0, 0, -1, -1)]  # (estimated cost, seq, parent, candidate)
    seq = 1
    expanded = 0
    while queue and expanded < budget:
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
        _, _, parent, k = heapq.heappop(queue)
        if parent < 0:
            idx, path, deltas = root, [], {}
            h, s = hasher.full(root.graph)
        else:
            pidx, ph, ps, ppath, deltas = states[parent]
            idx = pidx.apply(k, copy=True)
            h, s = hasher.update(idx.graph, ph, ps, idx.last_change)
            path = ppath + [pidx.describe(k)]
        key = hasher.graph_key(idx.graph, h, s)
        if key in seen:
            continue  # reached before along another order of the same rewrites
        seen.add(key)
        cost, n_ops = idx.cost, idx.live_ops()
        if cost < best[0]:
            best = (cost, idx.graph, path)
        mine: dict[int, tuple[float, int]] = {}
        states.append((idx, h, s, path, mine))
        me = len(states) - 1
        expanded += 1
        for i, (_, match) in enumerate(idx.candidates):
            d = deltas.get(id(match))
            if d is None:  # re-matched near the last change: evaluate exactly
                pv = idx.preview(i)
                d = (pv.cost - cost, live_ops(pv.graph, pv.const) - n_ops)
                if pv.cost < best[0] and n_ops + d[1] <= max_ops:
                    best = (pv.cost, pv.graph, path + [idx.describe(i)])
            mine[id(match)] = d
            est = cost + d[0]
            if est < alpha * best[0] and n_ops + d[1] <= max_ops:
                heapq.heappush(queue, (est, seq, me, i))
                seq += 1
        if progress:
            progress(f"backtrack {expanded}/{budget}: queue {len(queue)}, best {best[0]:.4f} ms")
    return SearchResult(best[1], cost0, best[0], best[2], time.perf_counter() - t0, expanded)


def random_search(graph: Graph, rules: Sequence[Rule], cost_model: CostModel | None = None, *,
                  steps: int = 100, seed: int = 0,
                  progress: Callable[[str], None] | None = None) -> SearchResult:
    """Apply uniformly random candidates for ``steps`` steps; return the cheapest graph seen."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    idx = _start(graph, rules, cost_model)
    cost0 = idx.cost
    best = (cost0, idx.graph.copy(), [])
    path: list[tuple[str, Location]] = []
    n = 0
    while n < steps and len(idx):
        n += 1
        i = int(rng.integers(len(idx)))
        path.append(idx.describe(i))
        idx.apply(i)
        if idx.cost < best[0]:
            best = (idx.cost, idx.graph.copy(), list(path))
        if progress and n % 10 == 0:
            progress(f"random step {n}/{steps}: best {best[0]:.4f} ms")
    return SearchResult(best[1], cost0, best[0], best[2], time.perf_counter() - t0, n)


SEARCHES: dict[str, Callable[..., SearchResult]] = {
    "greedy": greedy,
    "backtrack": backtracking,
    "random": random_search,
}
