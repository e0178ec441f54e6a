"""Candidate rewrites of a graph, kept up to date incrementally as rewrites are applied.

:class:`CandidateIndex` owns a graph and lists every applicable ``(rule, match)`` in a
deterministic order: sorted by (rule id, topological position of the anchor, matched
node ids), ties in the order ``rule.match_at`` returned them. Rule id = index in
``rules``.

After a rewrite it does not re-match the whole graph. It diffs the node table (nodes are
immutable, so a changed node is a new object), prunes dead nodes locally, drops the
matches of every ``(rule, anchor)`` near the change and re-runs ``rule.match_at`` only
for anchors within ``rule.radius + 1`` undirected edges of the touched nodes (added,
changed and removed nodes and the former inputs of changed/removed ones). The extra edge
covers patterns that test how many consumers a node at their border has.

Optionally (``cost_model``) it also keeps per-node costs up to date, recomputing only
changed nodes and those whose constant-folded status flips (and, for a cost model whose
node costs depend on their neighbours, every node within its ``context_radius`` of
those), so ``cost`` is cheap. A ``whole_graph`` cost model (measured end to end) has no
per-node costs: ``cost`` and each preview's cost are one ``graph_cost`` call.

A rule may declare ``anchor_ops`` (a set of op names): it is then only tried at nodes of
those ops. Rules without it are tried at every node. A rule may also declare
``anchor_guard = (key, fn)``: ``fn(graph, node)`` is a necessary condition for a match
anchored at ``node`` (``match_at`` returns nothing when it is false), shared by every
rule with the same hashable ``key``; the index evaluates it once per (node, key) and skips
those rules where it is false (TASO pattern rules use their root op's signature). A rule whose matches are not local
(``disconnected`` or ``global_match`` true, e.g. a TASO pattern with two unconnected
roots) is re-matched over the whole graph after every rewrite.
"""
from __future__ import annotations

import dataclasses
from collections import deque
from typing import NamedTuple, Sequence

from systems_envs.graph.cost import CostModel
from systems_envs.graph.ir import Graph
from systems_envs.graph.ops import SOURCE_OPS
from systems_envs.rewrite.rule import Match, Rule


class Candidate(NamedTuple):
    """One applicable rewrite: the rule's id (index in the rule list) and its match."""

    rule_id: int
    match: Match


@dataclasses.dataclass(frozen=True)
class Change:
    """What one rewrite (plus pruning) did to the node table (node ids)."""

    added: frozenset[int]
    changed: frozenset[int]
    removed: frozenset[int]


def live_ops(graph: Graph, const: set[int]) -> int:
    """Number of compute nodes (not inputs/weights) outside ``const``: the ops left to run
    once constant subgraphs are folded at load time."""
    return sum(1 for nid, n in graph.nodes.items() if n.op not in SOURCE_OPS and nid not in const)


def prune_dead(graph: Graph, seeds: Sequence[int] | None = None) -> set[int]:
    """Remove nodes (compute nodes and weights, never inputs) no graph output depends on.

    With ``seeds``, only nodes reachable upward from the seeds are considered (enough
    after a local rewrite of a graph that had no dead nodes). Returns the removed ids.
    """
    if seeds is None:
        live: set[int] = set()
        stack = [s for s, _ in graph.outputs]
        while stack:
            nid = stack.pop()
            if nid not in live:
                live.add(nid)
                stack.extend(s for s, _ in graph.nodes[nid].inputs)
        seeds = [n for n in graph.nodes if n not in live]
    removed: set[int] = set()
    work = list(seeds)
    outputs = {s for s, _ in graph.outputs}
    while work:
        nid = work.pop()
        node = graph.nodes.get(nid)
        if node is None or node.op == "input" or nid in outputs or graph._uses[nid]:
            continue
        graph.remove(nid)
        removed.add(nid)
        work.extend(s for s, _ in node.inputs)
    return removed


class CandidateIndex:
    """All applicable rewrites of ``graph`` under ``rules``, updated incrementally.

    The index owns ``graph``: it prunes it on construction and mutates it in
    :meth:`apply` (pass a copy if you need the original).

    Args:
      graph: the graph (pruned in place of dead nodes).
      rules: the rule list; rule id = index.
      cost_model: if given, :attr:`cost` tracks the graph cost in ms incrementally.
    """

    def __init__(self, graph: Graph, rules: Sequence[Rule], cost_model: CostModel | None = None):
        self.graph = graph
        self.rules = list(rules)
        self.cost_model = cost_model
        self.last_change: Change | None = None
        prune_dead(graph)
        # (rule id, anchor) -> matches; only non-empty entries are stored
        self._table: dict[tuple[int, int], list[Match]] = {}
        # node -> keys of ``_table`` whose anchor or matched nodes include it (a superset:
        # entries are only added, never removed while the node lives; frozensets so that
        # ``copy`` can share them)
        self._refs: dict[int, frozenset[tuple[int, int]]] = {}
        self._anchor_ops = [getattr(r, "anchor_ops", None) for r in self.rules]
        self._global = [bool(getattr(r, "disconnected", False) or getattr(r, "global_match", False))
                        for r in self.rules]
        self._radii = [r.radius + 1 for r in self.rules]
        self._guards = [getattr(r, "anchor_guard", None) for r in self.rules]
        self._op_rules: dict[str, list[tuple[int, int, tuple | None]]] = {}  # op -> [(rule id, radius + 1, guard)]
        self._sorted: list[Candidate] | None = None
        for nid, node in graph.nodes.items():
            self._match_node(nid, node, None)
        for rid in range(len(self.rules)):
            if self._global[rid]:
                for nid in graph.nodes:
                    self._match(rid, nid)
        if cost_model is not None:
            self._const = graph.constant_nodes()
            self._costs = {} if cost_model.whole_graph else {
                nid: cost_model.node_cost(graph, n, nid in self._const, self._const) for nid, n in graph.nodes.items()}
            self._cost_total: float | None = None

    # ------------------------------------------------------------------ queries
    @property
    def candidates(self) -> list[Candidate]:
        """Every applicable rewrite, in the deterministic order described in the module doc."""
        if self._sorted is None:
            pos = {nid: i for i, nid in enumerate(self.graph.topo_order())}
            items = [(rid, pos[a], m.nodes, k, Candidate(rid, m))
                     for (rid, a), ms in self._table.items() for k, m in enumerate(ms)]
            items.sort(key=lambda t: t[:4])
            self._sorted = [t[4] for t in items]
        return self._sorted

    def __len__(self) -> int:
        return len(self.candidates)

    def __getitem__(self, i: int) -> Candidate:
        return self.candidates[i]

    def describe(self, i: int) -> tuple[str, tuple[int, ...]]:
        """``(rule name, matched node ids)`` of candidate ``i``."""
        c = self.candidates[i]
        return self.rules[c.rule_id].name, c.match.nodes

    @property
    def cost(self) -> float:
        """Graph cost in ms (requires ``cost_model``)."""
        if self.cost_model is None:
            raise ValueError("CandidateIndex was built without a cost_model")
        if self._cost_total is None:
            self._cost_total = float(self.cost_model.graph_cost(self.graph) if self.cost_model.whole_graph
                                     else sum(self._costs.values()))
        return self._cost_total

    def node_cost(self, nid: int) -> float:
        """Cost in ms of one node (requires ``cost_model``); 0 for sources and constants, and
        for every node under a ``whole_graph`` cost model (it has no per-node costs)."""
        return self._costs.get(nid, 0.0) if self.cost_model.whole_graph else self._costs[nid]

    def is_constant(self, nid: int) -> bool:
        """Whether a node is constant-folded (requires ``cost_model``)."""
        return nid in self._const

    def live_ops(self) -> int:
        """Compute nodes that are not constant-folded (requires ``cost_model``): see :func:`live_ops`."""
        if self.cost_model is None:
            raise ValueError("CandidateIndex was built without a cost_model")
        return live_ops(self.graph, self._const)

    def full_rematch(self) -> list[Candidate]:
        """Re-match the whole graph from scratch (for checking the incremental update)."""
        return CandidateIndex(self.graph.copy(), self.rules).candidates

    # ------------------------------------------------------------------ rewriting
    def copy(self) -> "CandidateIndex":
        """An independent index over a copy of the graph (match lists are shared, never mutated)."""
        new = CandidateIndex.__new__(CandidateIndex)
        new.graph = self.graph.copy()
        new.rules = self.rules
        new.cost_model = self.cost_model
        new.last_change = self.last_change
        new._table = dict(self._table)
        new._refs = dict(self._refs)
        new._anchor_ops = self._anchor_ops
        new._global = self._global
        new._radii = self._radii
        new._op_rules = self._op_rules
        new._guards = self._guards
        new._sorted = self._sorted
        if self.cost_model is not None:
            new._const = set(self._const)
            new._costs = dict(self._costs)
            new._cost_total = self._cost_total
        return new

    def _candidate(self, i: int) -> Candidate:
        cands = self.candidates
        if not 0 <= i < len(cands):
            raise IndexError(f"candidate {i} out of range (there are {len(cands)})")
        return cands[i]

    def apply(self, i: int, copy: bool = False) -> "CandidateIndex":
        """Apply candidate ``i``, prune, and update the candidates incrementally.

        With ``copy`` the result is a new index over a copied graph and ``self`` is left
        untouched; otherwise ``self`` is updated in place and returned.
        Raises IndexError if ``i`` is not a candidate index.
        """
        rid, match = self._candidate(i)
        idx = self.copy() if copy else self
        before, change = rewrite(idx.graph, self.rules[rid], match)
        idx.last_change = change
        idx._update_candidates(before, set(change.added), set(change.changed), set(change.removed))
        if idx.cost_model is not None:
            update_costs(idx.cost_model, idx.graph, idx._const, idx._costs, change, before)
            idx._cost_total = None
        idx._sorted = None
        return idx

    def preview(self, i: int) -> "Preview":
        """Apply candidate ``i`` to a copy of the graph without re-matching (cheap look-ahead).

        Returns the new graph, its cost (if the index has a cost model, else nan) and the change.
        """
        rid, match = self._candidate(i)
        g = self.graph.copy()
        before, change = rewrite(g, self.rules[rid], match)
        cost, const = float("nan"), None
        if self.cost_model is not None:
            const, costs = set(self._const), dict(self._costs)
            update_costs(self.cost_model, g, const, costs, change, before)
            cost = float(self.cost_model.graph_cost(g) if self.cost_model.whole_graph else sum(costs.values()))
        return Preview(g, cost, change, const)

    def _rules_for(self, op: str) -> list[tuple[int, int, tuple | None]]:
        """``[(rule id, radius + 1, anchor guard)]`` of the local (non-global) rules that may anchor at an ``op`` node."""
        hit = self._op_rules.get(op)
        if hit is None:
            hit = [(rid, self._radii[rid], self._guards[rid]) for rid, ops in enumerate(self._anchor_ops)
                   if not self._global[rid] and (ops is None or op in ops)]
            self._op_rules[op] = hit
        return hit

    def _match_node(self, nid: int, node, d: int | None) -> None:
        """Match every local rule at ``nid`` (only those with ``radius + 1 >= d`` unless ``d`` is None)."""
        ok: dict = {}
        for rid, r, guard in self._rules_for(node.op):
            if d is not None and d > r:
                continue
            if guard is not None:
                v = ok.get(guard[0])
                if v is None:
                    v = ok[guard[0]] = bool(guard[1](self.graph, node))
                if not v:
                    continue
            self._match_fast(rid, nid)

    def _match(self, rid: int, nid: int) -> None:
        ops = self._anchor_ops[rid]
        if ops is not None and self.graph.nodes[nid].op not in ops:
            return
        self._match_fast(rid, nid)

    def _match_fast(self, rid: int, nid: int) -> None:
        """Match rule ``rid`` at ``nid`` (anchor op already checked) and record non-empty results."""
        ms = self.rules[rid].match_at(self.graph, nid)
        if ms:
            key = (rid, nid)
            self._table[key] = list(ms)
            refs = self._refs
            for n in {nid, *(n for m in ms for n in m.nodes)}:
                ks = refs.get(n)
                if ks is None:
                    refs[n] = frozenset((key,))
                elif key not in ks:
                    refs[n] = ks | {key}

    def _update_candidates(self, before, added, changed, removed) -> None:
        g = self.graph
        nodes, uses = g.nodes, g._uses
        seeds = set(added) | changed
        for n in changed | removed:
            seeds.update(s for s, _ in before[n].inputs)
        seeds = {n for n in seeds if n in nodes}
        radii = self._radii
        depth = max(radii, default=0)
        dist = {n: 0 for n in seeds}
        frontier = deque(seeds)
        while frontier:
            n = frontier.popleft()
            d = dist[n]
            if d >= depth:
                continue
            for nb, _ in nodes[n].inputs:
                if nb not in dist:
                    dist[nb] = d + 1
                    frontier.append(nb)
            for nb, _ in uses[n]:
                if nb not in dist:
                    dist[nb] = d + 1
                    frontier.append(nb)
        dead = removed | changed
        table, refs = self._table, self._refs

        def near(key):
            d = dist.get(key[1])
            return d is not None and d <= radii[key[0]]

        # Only keys that reference a node near the change or a dead node can be affected.
        keys: set[tuple[int, int]] = set()
        for n in dist:
            keys.update(refs.get(n, ()))
        for n in dead:
            keys.update(refs.get(n, ()))
        for n in removed:
            refs.pop(n, None)
        for key in sorted(keys):
            ms = table.get(key)
            if ms is None:
                continue
            if near(key) or key[1] in removed or any(n in dead for m in ms for n in m.nodes):
                del table[key]
                if key[1] in nodes and not near(key):
                    self._match(*key)  # a match reached beyond the rule's radius: re-match it too
        for rid in range(len(self.rules)):
            if self._global[rid]:
                for key in [k for k in table if k[0] == rid]:
                    del table[key]
                for n in nodes:
                    self._match(rid, n)
        for n, d in dist.items():
            self._match_node(n, nodes[n], d)


class Preview(NamedTuple):
    """Result of :meth:`CandidateIndex.preview`: the rewritten copy, its cost (ms) and the change."""

    graph: Graph
    cost: float
    change: Change
    const: set[int] | None = None  # constant-folded node ids of ``graph`` (None without a cost model)


def rewrite(graph: Graph, rule: Rule, match: Match) -> tuple[dict, Change]:
    """Apply ``match`` in place and prune locally; return the old node table and the change."""
    before = dict(graph.nodes)
    touched = set(rule.apply(graph, match))
    nodes = graph.nodes
    # dict item views diff in C: (id, node) pairs that are new or whose node object changed
    touched.update(n for n, _ in nodes.items() - before.items())
    seeds = touched | set(match.nodes)
    for n in list(seeds):
        if n in before:
            seeds.update(s for s, _ in before[n].inputs)
    prune_dead(graph, [n for n in seeds if n in nodes])
    fresh = [n for n, _ in nodes.items() - before.items()]
    added = frozenset(n for n in fresh if n not in before)
    changed = frozenset(n for n in fresh if n in before)
    removed = frozenset(before.keys() - nodes.keys())
    return before, Change(added, changed, removed)


def update_costs(cost_model: CostModel, g: Graph, const: set[int], costs: dict[int, float], change: Change,
                 before: dict | None = None) -> None:
    """Update constant-folded flags and per-node costs (ms) in place after ``change``.

    Only added/changed nodes are recomputed, plus consumers whose constant status flips,
    plus, if the cost model has a ``context_radius`` r > 0, every node within r
    undirected edges of those and of the former inputs of changed and removed nodes
    (``before``: the node table before the change). A ``whole_graph`` cost model keeps
    no per-node costs: only the constant flags are updated.
    """
    per_node = not cost_model.whole_graph
    for n in change.removed:
        costs.pop(n, None)
        const.discard(n)
    pending = change.added | change.changed
    # local topological order of the pending nodes (their inputs inside the set first)
    order, seen = [], set()
    for start in sorted(pending):
        stack = [(start, False)]
        while stack:
            n, done = stack.pop()
            if done:
                order.append(n)
                continue
            if n in seen:
                continue
            seen.add(n)
            stack.append((n, True))
            stack.extend((s, False) for s, _ in g.nodes[n].inputs if s in pending and s not in seen)
    work = deque(order)
    queued = set(order)
    recomputed = set(pending)
    while work:
        n = work.popleft()
        queued.discard(n)
        node = g.nodes[n]
        if node.op == "weight":
            is_const = True
        elif node.op == "input":
            is_const = False
        else:
            is_const = bool(node.inputs) and all(s in const for s, _ in node.inputs)
        flipped = is_const != (n in const)
        if is_const:
            const.add(n)
        else:
            const.discard(n)
        if flipped:
            recomputed.add(n)
        if per_node and (flipped or n in pending):
            costs[n] = cost_model.node_cost(g, node, is_const, const)
        if flipped:
            for c, _ in g._uses[n]:
                if c not in queued:
                    queued.add(c)
                    work.append(c)
    if per_node and cost_model.context_radius > 0:
        seeds = recomputed | {s for n in change.changed | change.removed if before is not None and n in before
                              for s, _ in before[n].inputs if s in g.nodes}
        for n in _within(g, seeds, cost_model.context_radius):
            costs[n] = cost_model.node_cost(g, g.nodes[n], n in const, const)


def _within(g: Graph, seeds: set[int], radius: int) -> set[int]:
    """Nodes of ``g`` within ``radius`` undirected edges of ``seeds`` (seeds included)."""
    dist = {n: 0 for n in seeds}
    frontier = deque(seeds)
    while frontier:
        n = frontier.popleft()
        d = dist[n]
        if d >= radius:
            continue
        for nb in [s for s, _ in g.nodes[n].inputs] + [c for c, _ in g._uses[n]]:
            if nb not in dist:
                dist[nb] = d + 1
                frontier.append(nb)
    return set(dist)
