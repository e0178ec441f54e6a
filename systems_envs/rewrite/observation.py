"""Graph -> fixed-shape NumPy arrays for the GraphRewrite environment.

Nodes are laid out in the graph's topological order (all nodes, inputs and weights
included), dense positions ``0..n_node-1``. The last node slot ``max_nodes - 1`` is
reserved as the padding node: padding edges have sender = receiver = ``max_nodes - 1``
(jraph's convention of one extra padding node), so a graph may hold at most
``max_nodes - 1`` real nodes.

Arrays (shapes with ``N = max_nodes``, ``E = max_edges``, ``C = max_candidates``):

* ``node_features`` float32 [N, NODE_FEATURES]: one-hot op type (``ops.OPS`` order),
  log2 of the output-0 dims right-aligned to rank 4 (leading dims folded into the first,
  missing dims 0 = log2 1), log1p of the output bytes (float32), log1p of the node's cost
  in ms, and 1.0 if the node is constant-folded.
* ``edge_features`` float32 [E, EDGE_FEATURES]: log1p of the tensor's bytes, the input
  slot divided by max(1, arity - 1) of the consumer.
* ``senders``, ``receivers`` int32 [E]; ``n_node``, ``n_edge`` int32 [1].
* ``globals`` float32 [GLOBAL_FEATURES]: cost / initial cost, step / max_steps,
  number of candidates / C.
* ``action_mask`` int8 [C + 1] (last = stop, always 1), ``candidate_rule`` int32 [C]
  (rule id, -1 padding), ``candidate_nodes`` int32 [C, K] (positions of the first K
  matched nodes, anchor first, -1 padding), ``candidate_reward`` float32 [C] (the reward
  applying the candidate gives: its relative cost decrease ``(cost - cost after) /
  initial cost``, the quantity greedy ranks by; 0 padding, and 0 everywhere when the
  environment is built with ``candidate_rewards=False``).

If a graph outgrows the capacity mid-episode, the builder keeps the first nodes/edges in
topological order and reports ``clipped``; the environment then truncates the episode.
"""
from __future__ import annotations

import math

import numpy as np
from gymnasium import spaces

from systems_envs.graph.ir import Node
from systems_envs.graph.ops import OPS
from systems_envs.rewrite.candidates import CandidateIndex

OP_INDEX = {op: i for i, op in enumerate(OPS)}
NODE_FEATURES = len(OPS) + 4 + 3
EDGE_FEATURES = 2
GLOBAL_FEATURES = 3
MATCH_NODES = 4  # K
_LOG_BYTES = math.log1p


def observation_space(max_nodes: int, max_edges: int, max_candidates: int) -> spaces.Dict:
    """The gymnasium space of the observations built by :class:`ObservationBuilder`."""
    f32 = np.float32
    big = np.finfo(f32).max
    return spaces.Dict({
        "node_features": spaces.Box(-big, big, (max_nodes, NODE_FEATURES), f32),
        "edge_features": spaces.Box(-big, big, (max_edges, EDGE_FEATURES), f32),
        "senders": spaces.Box(0, max_nodes - 1, (max_edges,), np.int32),
        "receivers": spaces.Box(0, max_nodes - 1, (max_edges,), np.int32),
        "n_node": spaces.Box(0, max_nodes, (1,), np.int32),
        "n_edge": spaces.Box(0, max_edges, (1,), np.int32),
        "globals": spaces.Box(-big, big, (GLOBAL_FEATURES,), f32),
        "action_mask": spaces.Box(0, 1, (max_candidates + 1,), np.int8),
        "candidate_rule": spaces.Box(-1, np.iinfo(np.int32).max, (max_candidates,), np.int32),
        "candidate_nodes": spaces.Box(-1, max_nodes - 1, (max_candidates, MATCH_NODES), np.int32),
        "candidate_reward": spaces.Box(-big, big, (max_candidates,), f32),
    })


def _static_features(node: Node) -> np.ndarray:
    row = np.zeros(len(OPS) + 5, np.float32)
    row[OP_INDEX[node.op]] = 1.0
    shape = node.shape
    dims = list(shape[-4:]) if len(shape) <= 4 else [math.prod(shape[:-3])] + list(shape[-3:])
    for j, d in enumerate(dims):
        row[len(OPS) + 4 - len(dims) + j] = math.log2(d)
    row[len(OPS) + 4] = _LOG_BYTES(4.0 * sum(math.prod(s) for s in node.shapes))
    return row


class ObservationBuilder:
    """Builds observations; caches per-node feature rows (nodes are immutable objects)."""

    def __init__(self, max_nodes: int, max_edges: int, max_candidates: int):
        self.max_nodes, self.max_edges, self.max_candidates = max_nodes, max_edges, max_candidates
        self._rows: dict[Node, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def clear_cache(self) -> None:
        self._rows.clear()

    def _node(self, index: CandidateIndex, node: Node):
        hit = self._rows.get(node)
        if hit is None:
            g = index.graph
            ins = node.inputs
            srcs = np.array([s for s, _ in ins], np.int64)
            ef = np.empty((len(ins), EDGE_FEATURES), np.float32)
            denom = max(1, len(ins) - 1)
            for slot, (s, i) in enumerate(ins):
                ef[slot, 0] = _LOG_BYTES(4.0 * math.prod(g.nodes[s].shapes[i]))
                ef[slot, 1] = slot / denom
            hit = (_static_features(node), srcs, ef)
            self._rows[node] = hit
        return hit

    def build(self, index: CandidateIndex, initial_cost: float, step: int, max_steps: int,
              cost_changes: np.ndarray | None = None) -> tuple[dict, bool]:
        """The observation of ``index`` (which needs a cost model) and whether it was clipped.

        ``cost_changes``: float [>= min(len(index), C)], cost change in ms (after - before) of
        the first candidates (`systems_envs.rewrite.deltas.CandidateDeltas`); None = zeros."""
        g = index.graph
        N, E, C = self.max_nodes, self.max_edges, self.max_candidates
        order = g.topo_order()
        clipped = len(order) > N - 1
        order = order[: N - 1]
        n = len(order)
        nodes = g.nodes
        rows = [self._node(index, nodes[nid]) for nid in order]
        # node id -> position, -1 if clipped; the extra last entry maps id -1 (padding) to -1
        pos = np.full(g._next_id + 1, -1, np.int64)
        pos[np.asarray(order, np.int64)] = np.arange(n)

        nf = np.zeros((N, NODE_FEATURES), np.float32)
        if n:
            nf[:n, : len(OPS) + 5] = np.stack([r[0] for r in rows])
            nf[:n, len(OPS) + 5] = np.log1p([index.node_cost(nid) for nid in order])
            const = index._const
            nf[:n, len(OPS) + 6] = [nid in const for nid in order]

        senders = np.full(E, N - 1, np.int32)
        receivers = np.full(E, N - 1, np.int32)
        ef = np.zeros((E, EDGE_FEATURES), np.float32)
        counts = [len(r[1]) for r in rows]
        m = 0
        if n and sum(counts):
            src_ids = np.concatenate([r[1] for r in rows])
            dst = np.repeat(np.arange(n, dtype=np.int32), counts)
            feats = np.concatenate([r[2] for r in rows])
            lookup = pos[src_ids]
            keep = lookup >= 0
            if not keep.all():
                clipped = True
            src, dst, feats = lookup[keep], dst[keep], feats[keep]
            if len(src) > E:
                clipped = True
            m = min(len(src), E)
            senders[:m], receivers[:m], ef[:m] = src[:m], dst[:m], feats[:m]

        cands = index.candidates
        nc = min(len(cands), C)
        mask = np.zeros(C + 1, np.int8)
        mask[:nc] = 1
        mask[C] = 1
        crule = np.full(C, -1, np.int32)
        cnodes = np.full((C, MATCH_NODES), -1, np.int32)
        creward = np.zeros(C, np.float32)
        if nc and cost_changes is not None and initial_cost > 0:
            creward[:nc] = -np.asarray(cost_changes[:nc], np.float64) / initial_cost
        if nc:
            pad = (-1,) * MATCH_NODES
            crule[:nc] = [c[0] for c in cands[:nc]]
            cnodes[:nc] = pos[np.array([(c[1].nodes + pad)[:MATCH_NODES] for c in cands[:nc]], np.int64)]
        glob = np.array([index.cost / initial_cost if initial_cost > 0 else 1.0,
                         step / max_steps, nc / C], np.float32)
        obs = {
            "node_features": nf, "edge_features": ef, "senders": senders, "receivers": receivers,
            "n_node": np.array([n], np.int32), "n_edge": np.array([m], np.int32), "globals": glob,
            "action_mask": mask, "candidate_rule": crule, "candidate_nodes": cnodes, "candidate_reward": creward,
        }
        return obs, clipped
