"""Building blocks shared by the encoders: MLPs, per-graph segment reductions, readout.

All reductions are segment operations keyed by graph (or receiver) index, so the nodes and
edges of jraph's padding graph never mix into real graphs; empty segments reduce to 0.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph


class MLP(nn.Module):
    """Dense layers with SiLU between them; ``activate_final`` applies SiLU after the last."""

    features: Sequence[int]
    activate_final: bool = False

    @nn.compact
    def __call__(self, x):
        for i, f in enumerate(self.features):
            x = nn.Dense(f)(x)
            if i < len(self.features) - 1 or self.activate_final:
                x = nn.silu(x)
        return x


def node_graph_index(graphs: jraph.GraphsTuple) -> jnp.ndarray:
    """int32 [total_nodes]: index of the graph each node belongs to."""
    n_graph = graphs.n_node.shape[0]
    return jnp.repeat(jnp.arange(n_graph), graphs.n_node, total_repeat_length=graphs.nodes.shape[0])


def edge_graph_index(graphs: jraph.GraphsTuple) -> jnp.ndarray:
    """int32 [total_edges]: index of the graph each edge belongs to."""
    n_graph = graphs.n_edge.shape[0]
    return jnp.repeat(jnp.arange(n_graph), graphs.n_edge, total_repeat_length=graphs.senders.shape[0])


def segment_mean(x: jnp.ndarray, seg: jnp.ndarray, num: int) -> jnp.ndarray:
    """Mean of rows of ``x`` [R, D] per segment -> [num, D]; empty segments give 0."""
    total = jax.ops.segment_sum(x, seg, num)
    count = jax.ops.segment_sum(jnp.ones((x.shape[0], 1), x.dtype), seg, num)
    return total / jnp.maximum(count, 1.0)


def segment_max0(x: jnp.ndarray, seg: jnp.ndarray, num: int) -> jnp.ndarray:
    """Max of rows of ``x`` per segment -> [num, D]; empty segments give 0 (not -inf)."""
    m = jax.ops.segment_max(x, seg, num)
    count = jax.ops.segment_sum(jnp.ones((x.shape[0], 1), x.dtype), seg, num)
    return jnp.where(count > 0, m, 0.0)


def with_self_loops_and_reverse(graphs: jraph.GraphsTuple, reverse: bool):
    """senders/receivers extended with reversed edges (if ``reverse``) and one self-loop per
    node; returns (senders, receivers, edge_kind) where edge_kind is 0 forward, 1 reverse,
    2 self-loop. Padding nodes get self-loops too; they stay inside the padding graph."""
    n = graphs.nodes.shape[0]
    s, r = jnp.asarray(graphs.senders, jnp.int32), jnp.asarray(graphs.receivers, jnp.int32)
    loop = jnp.arange(n, dtype=jnp.int32)
    parts_s, parts_r, kinds = [s], [r], [jnp.zeros_like(s)]
    if reverse:
        parts_s.append(r); parts_r.append(s); kinds.append(jnp.ones_like(s))
    parts_s.append(loop); parts_r.append(loop); kinds.append(jnp.full_like(loop, 2))
    return jnp.concatenate(parts_s), jnp.concatenate(parts_r), jnp.concatenate(kinds)


class Readout(nn.Module):
    """Global latent z [n_graph, latent_dim] = MLP(concat(mean_nodes, max_nodes, globals_emb))
    per graph; rows of padding graphs are computed but meaningless (mask with graph_mask)."""

    latent_dim: int
    hidden: int

    @nn.compact
    def __call__(self, node_emb, globals_emb, graphs):
        g = graphs.n_node.shape[0]
        idx = node_graph_index(graphs)
        pooled = jnp.concatenate(
            [segment_mean(node_emb, idx, g), segment_max0(node_emb, idx, g), globals_emb], axis=-1)
        return MLP((self.hidden, self.latent_dim))(pooled)


def node_latent(x: jnp.ndarray, graphs: jraph.GraphsTuple, width: int, latent_dim: int) -> jnp.ndarray:
    """The encoders' latent [n_graph, latent_dim]: `Readout` of node embeddings ``x`` [N, width] and
    globals embedded by a one-layer SiLU MLP. Call inside an ``nn.compact`` method: its modules
    belong to the calling encoder (named ``MLP_*``/``Readout_*`` there)."""
    u = MLP((width,), activate_final=True)(graphs.globals)
    return Readout(latent_dim, width)(x, u, graphs)


def check_graphs(graphs: jraph.GraphsTuple, who: str) -> None:
    """Static (trace-time) shape checks with a one-line error naming the problem."""
    if graphs.nodes is None or graphs.globals is None:
        raise ValueError(f"{who}: graphs need node features and globals (got None)")
    if graphs.nodes.ndim != 2:
        raise ValueError(f"{who}: nodes must be [total_nodes, F], got shape {graphs.nodes.shape}")
    if graphs.globals.ndim != 2 or graphs.globals.shape[0] != graphs.n_node.shape[0]:
        raise ValueError(f"{who}: globals must be [n_graph, G] with n_graph={graphs.n_node.shape[0]}, "
                         f"got shape {graphs.globals.shape}")
