"""Observation dicts -> `jraph.GraphsTuple`, padded to a few fixed capacity buckets.

An environment observation (NumPy) is a dict with

- ``node_features``  float32 [max_nodes, F]   (only the first ``n_node[0]`` rows are real)
- ``edge_features``  float32 [max_edges, E]   (only the first ``n_edge[0]`` rows are real)
- ``senders``, ``receivers`` int32 [max_edges] (dense node positions)
- ``n_node``, ``n_edge`` int32 [1]
- ``globals``        float32 [G]
- optional ``action_mask`` int8 [A+1] (last slot = stop), ``candidate_rule`` int32 [A]
  (-1 pad), ``candidate_nodes`` int32 [A, K] (dense node positions, -1 pad),
  ``candidate_reward`` float32 [A] (immediate reward of each candidate, 0 pad).

`to_graphs_tuple` trims one observation to its real rows; `batch_graphs` concatenates a
list of graphs and pads the result with `jraph.pad_with_graphs` to a capacity bucket
``(n_node, n_edge, n_graph)`` taken from a small fixed set (`Buckets`), so a jitted encoder
compiles once per bucket. jraph's padding appends one padding graph that holds all padding
nodes and edges (padding edges connect padding nodes only), followed by empty graphs: segment
operations keyed by graph or receiver therefore never mix padding into real graphs.

`batch_observations` additionally stacks the candidate arrays and offsets candidate node
positions into the batched node array (see `Batch`).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, NamedTuple, Sequence, Union

import jax.numpy as jnp
import jraph
import numpy as np

_REQUIRED = ("node_features", "edge_features", "senders", "receivers", "n_node", "n_edge", "globals")


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Allowed total capacities. A batch is padded to the smallest node bucket with room
    for all real nodes plus one padding node, and likewise for edges (jraph needs >= 1
    padding node; padding edges are allowed to be 0). The graph capacity is
    ``n_graphs + 1`` unless given explicitly to `batch_graphs`."""

    nodes: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
    edges: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)

    def __post_init__(self):
        for name in ("nodes", "edges"):
            vals = getattr(self, name)
            if not vals or list(vals) != sorted(vals) or vals[0] < 1:
                raise ValueError(f"Buckets.{name} must be a non-empty increasing tuple of positive ints, got {vals}")

    def pick(self, total_nodes: int, total_edges: int) -> tuple[int, int]:
        """Smallest (node, edge) capacity holding ``total_nodes + 1`` nodes and ``total_edges`` edges."""
        n = next((b for b in self.nodes if b >= total_nodes + 1), None)
        e = next((b for b in self.edges if b >= total_edges), None)
        if n is None or e is None:
            raise ValueError(
                f"batch of {total_nodes} nodes / {total_edges} edges exceeds the largest bucket "
                f"({self.nodes[-1]} nodes incl. 1 padding, {self.edges[-1]} edges)")
        return n, e


DEFAULT_BUCKETS = Buckets()

GraphLike = Union[Mapping[str, np.ndarray], jraph.GraphsTuple]


def _check_obs(obs: Mapping[str, np.ndarray]) -> None:
    missing = [k for k in _REQUIRED if k not in obs]
    if missing:
        raise ValueError(f"observation is missing keys {missing} (has {sorted(obs)})")
    nf, ef = np.asarray(obs["node_features"]), np.asarray(obs["edge_features"])
    if nf.ndim != 2 or ef.ndim != 2:
        raise ValueError(f"observation node_features/edge_features must be 2-D, got shapes {nf.shape}/{ef.shape}")
    n, e = int(np.asarray(obs["n_node"]).reshape(-1)[0]), int(np.asarray(obs["n_edge"]).reshape(-1)[0])
    if not 0 <= n <= nf.shape[0]:
        raise ValueError(f"observation n_node={n} out of range [0, {nf.shape[0]}]")
    if not 0 <= e <= ef.shape[0]:
        raise ValueError(f"observation n_edge={e} out of range [0, {ef.shape[0]}]")
    s, r = np.asarray(obs["senders"])[:e], np.asarray(obs["receivers"])[:e]
    if e and (s.min() < 0 or r.min() < 0 or s.max() >= n or r.max() >= n):
        raise ValueError(f"observation senders/receivers must index the {n} real nodes")


def to_graphs_tuple(obs: Mapping[str, np.ndarray]) -> jraph.GraphsTuple:
    """One observation -> a single-graph `GraphsTuple` of NumPy arrays trimmed to the real
    rows: nodes [n, F], edges [e, E], senders/receivers [e], n_node/n_edge [1], globals [1, G]."""
    _check_obs(obs)
    n, e = int(np.asarray(obs["n_node"]).reshape(-1)[0]), int(np.asarray(obs["n_edge"]).reshape(-1)[0])
    return jraph.GraphsTuple(
        nodes=np.asarray(obs["node_features"], np.float32)[:n],
        edges=np.asarray(obs["edge_features"], np.float32)[:e],
        senders=np.asarray(obs["senders"], np.int32)[:e],
        receivers=np.asarray(obs["receivers"], np.int32)[:e],
        n_node=np.array([n], np.int32),
        n_edge=np.array([e], np.int32),
        globals=np.asarray(obs["globals"], np.float32).reshape(1, -1),
    )


def _as_graph(g: GraphLike) -> jraph.GraphsTuple:
    return g if isinstance(g, jraph.GraphsTuple) else to_graphs_tuple(g)


def batch_graphs(graphs: Sequence[GraphLike], buckets: Buckets = DEFAULT_BUCKETS,
                 n_graph: int | None = None) -> jraph.GraphsTuple:
    """Concatenate observations / single graphs and pad to a bucket.

    Returns a NumPy `GraphsTuple` with ``n_graph`` graphs (default ``len(graphs) + 1``):
    the real graphs first, then jraph's padding graphs. Node/edge capacities come from
    ``buckets.pick``. Use `node_mask` / `edge_mask` / `graph_mask` to select real rows.
    """
    if len(graphs) == 0:
        raise ValueError("batch_graphs needs at least one graph")
    gs = [_as_graph(g) for g in graphs]
    for name in ("nodes", "edges", "globals"):
        widths = {np.shape(getattr(g, name))[-1] for g in gs}
        if len(widths) != 1:
            raise ValueError(f"batch_graphs: graphs disagree on {name} feature width: {sorted(widths)}")
    empty = [i for i, g in enumerate(gs) if int(np.asarray(g.n_node).sum()) == 0]
    if empty:
        raise ValueError(f"batch_graphs: graphs {empty} have no nodes (cannot be told apart from padding)")
    n_graph = len(gs) + 1 if n_graph is None else n_graph
    if n_graph < len(gs) + 1:
        raise ValueError(f"batch_graphs: n_graph={n_graph} must be >= number of graphs + 1 = {len(gs) + 1}")
    batched = jraph.batch_np(gs)
    n_cap, e_cap = buckets.pick(int(batched.n_node.sum()), int(batched.n_edge.sum()))
    return jraph.pad_with_graphs(batched, n_cap, e_cap, n_graph)


def node_mask(graphs: jraph.GraphsTuple) -> jnp.ndarray:
    """bool [total_nodes]: True for nodes of real graphs (all graphs but the last are real;
    the graph tuple must come from `batch_graphs`/`jraph.pad_with_graphs`)."""
    return jraph.get_node_padding_mask(graphs)


def edge_mask(graphs: jraph.GraphsTuple) -> jnp.ndarray:
    """bool [total_edges]: True for edges of real graphs (padded graph tuple)."""
    return jraph.get_edge_padding_mask(graphs)


def graph_mask(graphs: jraph.GraphsTuple) -> jnp.ndarray:
    """bool [n_graph]: True for real graphs (padded graph tuple). jraph counts the trailing
    graphs with zero nodes plus the one before them (which holds the padding nodes) as
    padding, so a padded batch must not end with an empty real graph."""
    return jraph.get_graph_padding_mask(graphs)


class Batch(NamedTuple):
    """A padded batch of observations with candidate arrays aligned to it.

    graphs: padded `GraphsTuple` (``n_graph = B + 1`` by default).
    candidate_rule: int32 [B, A], -1 = empty slot.
    candidate_nodes: int32 [B, A, K], positions into ``graphs.nodes`` (already offset by
      each graph's first node), -1 = pad.
    action_mask: int8 [B, A+1] (last = stop).
    candidate_reward: float32 [B, A], each candidate's immediate reward (zeros for
      observations without ``candidate_reward``).
    For observations without candidates (e.g. placement) the candidate fields are None
    and ``action_mask`` is the stacked mask (or None if absent).
    """

    graphs: jraph.GraphsTuple
    candidate_rule: np.ndarray | None
    candidate_nodes: np.ndarray | None
    action_mask: np.ndarray | None
    candidate_reward: np.ndarray | None = None


def batch_observations(observations: Sequence[Mapping[str, np.ndarray]], buckets: Buckets = DEFAULT_BUCKETS,
                       n_graph: int | None = None) -> Batch:
    """`batch_graphs` plus candidate arrays stacked over the B observations, with candidate
    node positions offset into the batched node array (pad entries stay -1)."""
    graphs = batch_graphs(observations, buckets, n_graph)
    n_real = len(observations)
    offsets = np.concatenate([[0], np.cumsum(np.asarray(graphs.n_node[:n_real]))[:-1]]).astype(np.int32)
    has_cand = ["candidate_nodes" in o for o in observations]
    if any(has_cand) and not all(has_cand):
        raise ValueError("batch_observations: some observations have candidate arrays and some do not")
    rule = nodes = reward = None
    if all(has_cand):
        shapes = {np.shape(o["candidate_nodes"]) for o in observations}
        if len(shapes) != 1:
            raise ValueError(f"batch_observations: candidate_nodes shapes differ: {sorted(shapes)}")
        nodes = np.stack([np.asarray(o["candidate_nodes"], np.int32) for o in observations])
        for b, o in enumerate(observations):
            n = int(np.asarray(o["n_node"]).reshape(-1)[0])
            if nodes[b].size and nodes[b].max() >= n:
                raise ValueError(f"batch_observations: observation {b} candidate_nodes index beyond n_node={n}")
        nodes = np.where(nodes >= 0, nodes + offsets[:, None, None], -1).astype(np.int32)
        rule = np.stack([np.asarray(o["candidate_rule"], np.int32) for o in observations])
        reward = np.stack([np.asarray(o["candidate_reward"], np.float32) if "candidate_reward" in o
                           else np.zeros(rule.shape[1], np.float32) for o in observations])
    mask = None
    if all("action_mask" in o for o in observations):
        shapes = {np.shape(o["action_mask"]) for o in observations}
        if len(shapes) != 1:
            raise ValueError(f"batch_observations: action_mask shapes differ: {sorted(shapes)}")
        mask = np.stack([np.asarray(o["action_mask"], np.int8) for o in observations])
    return Batch(graphs, rule, nodes, mask, reward)
