"""Graph convolutional encoder (Kipf & Welling, 2017), `depth` residual layers.

Each layer: x' = D^-1/2 (A + I) D^-1/2 (x W), with self-loops for every node and, if
``bidirectional`` (default), the reverse of every edge (the computation graph treated as
undirected); D is the degree of the augmented graph (each node's count of incident edges,
self-loop included, so every degree is >= 1). Then SiLU, residual, LayerNorm. Edge features
are not used by GCN (that is what the GN and GAT encoders are for). Padding nodes only
connect to padding nodes, so normalisation never mixes padding into real nodes.

Usage: ``enc = make_encoder("gcn", width=32, depth=2, latent_dim=16)``; then
``params = enc.init(key, graphs)``, ``node_emb, latent = enc.apply(params, graphs)``.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from encoders.layers import check_graphs, node_latent, with_self_loops_and_reverse


class GCNLayer(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x, senders, receivers):
        n = x.shape[0]
        h = nn.Dense(self.width)(x)
        ones = jnp.ones(senders.shape[0], h.dtype)
        deg_s = jax.ops.segment_sum(ones, senders, n)
        deg_r = jax.ops.segment_sum(ones, receivers, n)
        norm = jax.lax.rsqrt(jnp.maximum(deg_s[senders], 1.0)) * jax.lax.rsqrt(jnp.maximum(deg_r[receivers], 1.0))
        out = jax.ops.segment_sum(h[senders] * norm[:, None], receivers, n)
        return nn.LayerNorm()(x + nn.silu(out))


class GCNEncoder(nn.Module):
    """apply(params, graphs) -> (node_embeddings [N, width], latent [n_graph, latent_dim])."""

    width: int = 64
    depth: int = 3
    latent_dim: int = 64
    bidirectional: bool = True

    @nn.compact
    def __call__(self, graphs: jraph.GraphsTuple):
        check_graphs(graphs, "GCNEncoder")
        s, r, _ = with_self_loops_and_reverse(graphs, self.bidirectional)
        x = nn.Dense(self.width)(graphs.nodes)
        for _ in range(self.depth):
            x = GCNLayer(self.width)(x, s, r)
        return x, node_latent(x, graphs, self.width, self.latent_dim)
