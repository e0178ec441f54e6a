"""Graph attention encoder (multi-head GAT, Velickovic et al., 2018), `depth` residual layers.

Per layer and head h, for every edge s -> r (plus reversed edges if ``bidirectional`` and one
self-loop per node): logit = LeakyReLU(a_h . [W_h x_s, W_h x_r, W^e_h e_sr]) where e_sr is the
projected edge feature (a learned vector per kind for reversed edges and self-loops);
alpha = softmax of logits over the edges arriving at r (`jraph.segment_softmax`, so padding
edges, which arrive only at padding nodes, never enter a real node's softmax); message
m_r = sum alpha * W_h x_s. Heads are concatenated, projected to `width`, then residual +
LayerNorm + a feed-forward MLP. The latent is `Readout` of node embeddings and globals.

Usage: ``enc = make_encoder("gat", width=32, depth=2, heads=4, latent_dim=16)``; then
``params = enc.init(key, graphs)``, ``node_emb, latent = enc.apply(params, graphs)``.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from encoders.layers import MLP, check_graphs, node_latent, with_self_loops_and_reverse


class GATLayer(nn.Module):
    width: int
    heads: int

    @nn.compact
    def __call__(self, x, e_feat, senders, receivers):
        n = x.shape[0]
        hd = max(self.width // self.heads, 1)
        q = nn.Dense(self.heads * hd, use_bias=False)(x).reshape(n, self.heads, hd)
        ke = nn.Dense(self.heads * hd, use_bias=False)(e_feat).reshape(-1, self.heads, hd)
        a_s = self.param("a_src", nn.initializers.lecun_normal(), (self.heads, hd))
        a_r = self.param("a_dst", nn.initializers.lecun_normal(), (self.heads, hd))
        a_e = self.param("a_edge", nn.initializers.lecun_normal(), (self.heads, hd))
        logits = ((q[senders] * a_s).sum(-1) + (q[receivers] * a_r).sum(-1) + (ke * a_e).sum(-1))
        logits = jax.nn.leaky_relu(logits, 0.2)                                   # [E', H]
        alpha = jraph.segment_softmax(logits, receivers, n)                        # [E', H]
        msg = jax.ops.segment_sum(alpha[..., None] * q[senders], receivers, n)     # [N, H, hd]
        out = nn.Dense(self.width)(jax.nn.elu(msg.reshape(n, self.heads * hd)))
        x = nn.LayerNorm()(x + out)
        return nn.LayerNorm()(x + MLP((self.width, self.width))(x))


class GATEncoder(nn.Module):
    """apply(params, graphs) -> (node_embeddings [N, width], latent [n_graph, latent_dim])."""

    width: int = 64
    depth: int = 3
    heads: int = 4
    latent_dim: int = 64
    bidirectional: bool = True

    @nn.compact
    def __call__(self, graphs: jraph.GraphsTuple):
        check_graphs(graphs, "GATEncoder")
        s, r, kind = with_self_loops_and_reverse(graphs, self.bidirectional)
        n_e = graphs.senders.shape[0]
        if graphs.edges is not None and graphs.edges.shape[-1] > 0:
            ef = nn.Dense(self.width)(graphs.edges)
        else:
            ef = jnp.zeros((n_e, self.width), jnp.float32)
        kind_emb = nn.Embed(3, self.width)(kind)                 # forward / reverse / self-loop
        fwd = jnp.concatenate([ef] + ([ef] if self.bidirectional else [])
                              + [jnp.zeros((graphs.nodes.shape[0], self.width), ef.dtype)])
        e_all = fwd + kind_emb
        x = nn.Dense(self.width)(graphs.nodes)
        for _ in range(self.depth):
            x = GATLayer(self.width, self.heads)(x, e_all, s, r)
        return x, node_latent(x, graphs, self.width, self.latent_dim)
