"""A small self-contained GNN policy/value network over padded graph observations.

Input: one (unbatched) observation dict, see :mod:`controllers.base`. Nodes at index
``>= n_node[0]`` and edges at index ``>= n_edge[0]`` are padding and are masked out, so
the same parameters work on graphs of any size (vmap over a batch padded to one bucket).

Output: ``logits`` float32 [A+1] (candidate rewrites then stop; NOT yet masked) and
``value`` float32 []. With ``gain_prior`` beta > 0 a candidate's logit is the network's score
plus beta times its immediate reward on `candidate_reward_feature`'s unit scale (a fixed,
not learned, term): before any training the policy is a softened greedy, and what training
learns is when to deviate from greedy's ranking. An observation without candidate arrays
(placement: ``action_mask`` [A+1] with the stop slot never legal) gets its A action scores
from the global embedding.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from controllers.base import candidate_reward_feature


class GraphPolicyValue(nn.Module):
    hidden: int = 64
    message_steps: int = 2
    num_rules: int = 256
    gain_prior: float = 0.0     # beta: candidate logits = MLP(...) + beta * candidate_reward_feature

    @nn.compact
    def __call__(self, obs: dict) -> tuple[jax.Array, jax.Array]:
        H = self.hidden
        x = jnp.asarray(obs["node_features"], jnp.float32)               # [N, F]
        N = x.shape[0]
        snd = jnp.asarray(obs["senders"], jnp.int32)                      # [M]
        M = snd.shape[0]
        node_mask = (jnp.arange(N) < jnp.asarray(obs["n_node"]).reshape(-1)[0]).astype(jnp.float32)
        edge_mask = (jnp.arange(M) < jnp.asarray(obs["n_edge"]).reshape(-1)[0]).astype(jnp.float32)
        snd = jnp.clip(snd, 0, N - 1)
        rcv = jnp.clip(jnp.asarray(obs["receivers"], jnp.int32), 0, N - 1)
        ef = jnp.asarray(obs.get("edge_features", jnp.zeros((M, 0))), jnp.float32).reshape(M, -1)
        gl = jnp.asarray(obs.get("globals", jnp.zeros((0,))), jnp.float32).reshape(-1)

        h = nn.relu(nn.Dense(H, name="node_in")(x)) * node_mask[:, None]
        e = nn.relu(nn.Dense(H, name="edge_in")(ef))
        g = nn.relu(nn.Dense(H, name="glob_in")(gl))
        n_real = jnp.maximum(node_mask.sum(), 1.0)
        deg_in = jnp.maximum(jax.ops.segment_sum(edge_mask, rcv, N), 1.0)[:, None]
        deg_out = jnp.maximum(jax.ops.segment_sum(edge_mask, snd, N), 1.0)[:, None]
        for i in range(self.message_steps):
            fwd = nn.relu(nn.Dense(H, name=f"msg_fwd{i}")(jnp.concatenate([h[snd], e], -1))) * edge_mask[:, None]
            bwd = nn.relu(nn.Dense(H, name=f"msg_bwd{i}")(jnp.concatenate([h[rcv], e], -1))) * edge_mask[:, None]
            agg_in = jax.ops.segment_sum(fwd, rcv, N) / deg_in
            agg_out = jax.ops.segment_sum(bwd, snd, N) / deg_out
            upd = nn.Dense(H, name=f"node_upd{i}")(
                jnp.concatenate([h, agg_in, agg_out, jnp.broadcast_to(g, (N, H))], -1))
            h = nn.LayerNorm(name=f"node_ln{i}")(h + nn.relu(upd)) * node_mask[:, None]
            pooled = h.sum(0) / n_real
            g = nn.LayerNorm(name=f"glob_ln{i}")(g + nn.relu(nn.Dense(H, name=f"glob_upd{i}")(jnp.concatenate([g, pooled]))))

        stop = nn.Dense(1, name="stop_out")(nn.relu(nn.Dense(H, name="stop_hidden")(g)))       # [1]
        value = nn.Dense(1, name="value_out")(nn.relu(nn.Dense(H, name="value_hidden")(g)))[0]
        if "candidate_rule" not in obs:
            # placement: A fixed actions (devices, memory levels, cells), scored from the
            # graph's global embedding (the node features say what is placed where and next)
            A = jnp.asarray(obs["action_mask"]).shape[-1] - 1
            scores = nn.Dense(A, name="slot_out")(nn.relu(nn.Dense(H, name="slot_hidden")(g)))
            return jnp.concatenate([scores, stop]), value

        # candidate actions: rule embedding + mean of location node embeddings + global +
        # the candidate's immediate reward (what greedy ranks by)
        rule = jnp.clip(jnp.asarray(obs["candidate_rule"], jnp.int32), 0, self.num_rules - 1)  # [A]
        cand = jnp.asarray(obs["candidate_nodes"], jnp.int32)                                  # [A, K]
        cand = cand.reshape(cand.shape[0], -1)
        loc_mask = (cand >= 0).astype(jnp.float32)
        loc = (h[jnp.clip(cand, 0, N - 1)] * loc_mask[..., None]).sum(1) / jnp.maximum(loc_mask.sum(1), 1.0)[:, None]
        A = rule.shape[0]
        gain = candidate_reward_feature(obs, A)[:, None]                                       # [A, 1]
        feats = jnp.concatenate([nn.Embed(self.num_rules, H, name="rule_emb")(rule), loc,
                                 jnp.broadcast_to(g, (A, H)), gain], -1)
        a = nn.relu(nn.Dense(H, name="act_hidden")(feats))
        scores = nn.Dense(1, name="act_out")(a)[:, 0] + self.gain_prior * gain[:, 0]            # [A]
        return jnp.concatenate([scores, stop]), value
