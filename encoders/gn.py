"""Full Graph Network encoder (Battaglia et al., 2018), `depth` residual blocks.

Each block updates, in order (x = nodes [N, D], e = edges [E, D], u = globals [n_graph, D]):

- edges:   e' = MLP([e, x[senders], x[receivers], u[graph(e)]])
- nodes:   x' = MLP([x, mean_in(e'), mean_out(e'), u[graph(x)]]) where mean_in averages the
           updated edges arriving at a node (by receiver) and mean_out those leaving it (by
           sender; computation graphs are DAGs, so this lets information flow both ways)
- globals: u' = MLP([u, mean_nodes(x'), mean_edges(e')]) per graph

followed by residual + LayerNorm on each of e, x, u. The latent is `Readout` of the final
node embeddings and globals. Padding stays inside jraph's padding graph because every
aggregation is a segment op keyed by receiver/sender/graph index.

Usage::

    enc = make_encoder("gn", width=32, depth=2, latent_dim=16)
    params = enc.init(key, graphs)               # graphs from batch_graphs
    node_emb, latent = enc.apply(params, graphs)  # [N, width], [n_graph, latent_dim]
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import jraph

from encoders.layers import MLP, Readout, check_graphs, edge_graph_index, node_graph_index, segment_mean


class GNBlock(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x, e, u, graphs: jraph.GraphsTuple):
        n, g = x.shape[0], u.shape[0]
        s, r = graphs.senders, graphs.receivers
        n_idx, e_idx = node_graph_index(graphs), edge_graph_index(graphs)
        e_new = MLP((self.width, self.width))(jnp.concatenate([e, x[s], x[r], u[e_idx]], -1))
        agg_in = segment_mean(e_new, r, n)
        agg_out = segment_mean(e_new, s, n)
        x_new = MLP((self.width, self.width))(jnp.concatenate([x, agg_in, agg_out, u[n_idx]], -1))
        u_new = MLP((self.width, self.width))(
            jnp.concatenate([u, segment_mean(x_new, n_idx, g), segment_mean(e_new, e_idx, g)], -1))
        e = nn.LayerNorm()(e + e_new)
        x = nn.LayerNorm()(x + x_new)
        u = nn.LayerNorm()(u + u_new)
        return x, e, u


class GNEncoder(nn.Module):
    """apply(params, graphs) -> (node_embeddings [N, width], latent [n_graph, latent_dim])."""

    width: int = 64
    depth: int = 3
    latent_dim: int = 64

    @nn.compact
    def __call__(self, graphs: jraph.GraphsTuple):
        check_graphs(graphs, "GNEncoder")
        if graphs.edges is None:
            raise ValueError("GNEncoder: graphs need edge features (got None)")
        x = nn.Dense(self.width)(graphs.nodes)
        e = nn.Dense(self.width)(graphs.edges)
        u = nn.Dense(self.width)(graphs.globals)
        for _ in range(self.depth):
            x, e, u = GNBlock(self.width)(x, e, u, graphs)
        return x, Readout(self.latent_dim, self.width)(x, u, graphs)
