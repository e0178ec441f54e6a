"""Controllers over the world model's observation of a state (model-based mode).

A model observation is ``{"latent": [Z], "slot_rule": int32 [A], "slot_features": [A, Fs],
"action_mask": int8 [A+1]}``: the encoder latent and the descriptions of the A action slots
(rewriting: the candidate rewrites' pooled node embeddings and immediate reward, rule id;
placement: one-hot slot identities, rule -1), last action = stop (never legal in placement).
Real and imagined states look the same, so one network acts on both.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from controllers.base import get_mask
from controllers.ppo import PPO, PPOState


class LatentPolicyValue(nn.Module):
    """Policy/value over the model observation: score of slot j = MLP([rule emb, slot
    features, latent]); stop and value from the latent. Returns (logits [A+1], value [])."""

    hidden: int = 64
    num_rules: int = 256

    @nn.compact
    def __call__(self, obs):
        z = jnp.asarray(obs["latent"], jnp.float32)
        f = jnp.asarray(obs["slot_features"], jnp.float32)
        rule = jnp.asarray(obs["slot_rule"], jnp.int32)
        a = rule.shape[0]
        emb = nn.Embed(self.num_rules + 1, self.hidden, name="rule_emb")(jnp.clip(rule + 1, 0, self.num_rules))
        zb = nn.relu(nn.Dense(self.hidden, name="z_in")(z))
        x = jnp.concatenate([emb, f, jnp.broadcast_to(zb, (a, self.hidden))], -1)
        x = nn.relu(nn.Dense(self.hidden, name="slot_h1")(x))
        x = nn.relu(nn.Dense(self.hidden, name="slot_h2")(x))
        scores = nn.Dense(1, name="slot_out")(x)[:, 0]
        stop = nn.Dense(1, name="stop_out")(nn.relu(nn.Dense(self.hidden, name="stop_h")(zb)))
        value = nn.Dense(1, name="value_out")(nn.relu(nn.Dense(self.hidden, name="value_h")(zb)))[0]
        return jnp.concatenate([scores, stop]), value


class LatentPPO(PPO):
    """`controllers.ppo.PPO` (same update, same hyper-parameters) over model observations."""

    def __init__(self, **kw):
        if kw.get("gain_prior", 0.0):
            raise ValueError("--controller.ppo.gain_prior: the model-based (latent) policy has no immediate-reward "
                             "input to add; use it with --loop.mode model_free")
        super().__init__(**kw)
        self.net = LatentPolicyValue(hidden=kw.get("hidden", 64), num_rules=kw.get("num_rules", 256))

    def init(self, key, example_obs) -> PPOState:
        get_mask(example_obs)
        params = self.net.init(key, example_obs)
        return PPOState(params=params, opt_state=self.tx.init(params), step=jnp.zeros((), jnp.int32))


def latent_features(obs):
    """CMA-ES features of a model observation: context = latent, action descriptions =
    [slot features, sin/cos(rule), stop indicator]."""
    ctx = jnp.concatenate([jnp.asarray(obs["latent"], jnp.float32).reshape(-1), jnp.ones(1)])
    f = jnp.asarray(obs["slot_features"], jnp.float32)
    rule = jnp.asarray(obs["slot_rule"], jnp.float32)[:, None]
    cand = jnp.concatenate([f, jnp.sin(rule), jnp.cos(rule), jnp.zeros((f.shape[0], 1))], -1)
    stop = jnp.zeros((1, cand.shape[1])).at[0, -1].set(1.0)
    return ctx, jnp.concatenate([cand, stop], 0)
