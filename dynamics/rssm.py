"""Recurrent state-space model (Dreamer; Hafner et al., 2019-2023).

State = deterministic GRU state h [deter] + stochastic z, either Gaussian [stoch] or
categorical (``classes`` > 0: ``stoch`` groups of one-hot vectors, flattened to
[stoch * classes], straight-through gradients, 1% uniform mix).

- prior      p(z_t | h_t),       h_t = GRU(h_{t-1}, [z_{t-1}, slots[a_{t-1}]])
- posterior  q(z_t | h_t, e_t),  e_t = the encoder latent of the observed state
- z_next prediction = decoder(h_t, z_t) in encoder-latent space; heads read (h_t, z_t).

step (imagination) samples z from the prior. `observe` replaces z by a posterior sample
given a real latent (filtering). Loss per step: squared error of the decoded latent,
balanced KL with free bits: alpha * max(free, KL(sg(q) || p)) + (1 - alpha) * max(free,
KL(q || sg(p))), plus the heads. ``unroll="open"`` carries prior samples instead of
posterior ones (multi-step prediction) while still fitting the posterior/prior KL.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynamics.heads import Heads, Predictions, SlotDescription, SlotEmbed
from encoders.layers import MLP

sg = jax.lax.stop_gradient


class RSSMCarry(NamedTuple):
    h: jnp.ndarray            # [deter]
    z: jnp.ndarray            # [stoch] or [stoch * classes]
    slots: jnp.ndarray        # [A+1, S]
    slot_valid: jnp.ndarray   # bool [A+1]
    keys: jnp.ndarray         # [A+1, rank + 1] mask-head keys of the slots (`Heads.keys`), fixed per rollout


class RSSM(nn.Module):
    latent_dim: int
    deter: int = 64
    stoch: int = 16
    classes: int = 0          # 0: Gaussian z; > 0: categorical z with `stoch` groups of `classes`
    hidden: int = 64
    slot_width: int = 32
    num_rules: int = 0
    min_std: float = 0.1
    unimix: float = 0.01
    free_bits: float = 1.0
    kl_balance: float = 0.8
    mask_rank: int = 8

    def setup(self):
        stats = 2 * self.stoch if self.classes == 0 else self.stoch * self.classes
        self.slot_embed = SlotEmbed(self.slot_width, self.num_rules)
        self.img_in = nn.Dense(self.hidden)
        self.gru = nn.GRUCell(self.deter)
        self.prior_net = MLP((self.hidden, stats))
        self.post_net = MLP((self.hidden, stats))
        self.decoder = MLP((self.hidden, self.latent_dim))
        self.heads = Heads(self.hidden, self.mask_rank)

    # -- distributions over z (stats are raw network outputs) --
    def _dist(self, stats):
        if self.classes == 0:
            mean, raw = jnp.split(stats, 2)
            return mean, nn.softplus(raw) + self.min_std
        logits = stats.reshape(self.stoch, self.classes)
        probs = (1 - self.unimix) * jax.nn.softmax(logits) + self.unimix / self.classes
        return jnp.log(probs), probs

    def _sample(self, stats, key):
        """A sample (key) or the mode (key None), flattened."""
        if self.classes == 0:
            mean, std = self._dist(stats)
            return mean if key is None else mean + std * jax.random.normal(key, mean.shape)
        logp, probs = self._dist(stats)
        idx = jnp.argmax(logp, -1) if key is None else jax.random.categorical(key, logp)
        onehot = jax.nn.one_hot(idx, self.classes)
        return (onehot + probs - sg(probs)).reshape(-1)

    def _kl(self, q_stats, p_stats):
        """KL(q || p) summed over latent dims / groups."""
        if self.classes == 0:
            (mq, sq), (mp, sp) = self._dist(q_stats), self._dist(p_stats)
            return (jnp.log(sp / sq) + (sq ** 2 + (mq - mp) ** 2) / (2 * sp ** 2) - 0.5).sum()
        (lq, q), (lp, _) = self._dist(q_stats), self._dist(p_stats)
        return (q * (lq - lp)).sum()

    def __call__(self, latent, desc, action, key):  # used by init only
        carry = self.initial_carry(latent, desc, key)
        carry, _ = self.step(carry, action, key)
        carry = self.observe(carry, latent, key)
        return self.train_step(carry, action, latent, key, False)

    def initial_carry(self, latent, desc: SlotDescription, key=None) -> RSSMCarry:
        """h = 0, z = posterior sample (key) or mode (key None) given the encoder latent."""
        slots, valid = self.slot_embed(desc)
        h = jnp.zeros((self.deter,), latent.dtype)
        z = self._sample(self.post_net(jnp.concatenate([h, latent])), key)
        return RSSMCarry(h, z, slots, valid, self.heads.keys(slots))

    def observe(self, carry: RSSMCarry, latent, key=None) -> RSSMCarry:
        """Filtering: z = posterior sample given the real encoder latent of the current state."""
        return carry._replace(z=self._sample(self.post_net(jnp.concatenate([carry.h, latent])), key))

    def _img(self, carry: RSSMCarry, action):
        x = nn.silu(self.img_in(jnp.concatenate([carry.z, carry.slots[action]])))
        h, _ = self.gru(carry.h, x)
        return h, self.prior_net(h)

    def step(self, carry: RSSMCarry, action, key):
        h, prior = self._img(carry, action)
        z = self._sample(prior, key)
        feat = jnp.concatenate([h, z])
        rew, term, mask = self.heads(feat, carry.keys, carry.slot_valid)
        return carry._replace(h=h, z=z), Predictions(self.decoder(feat), rew, term, mask, {})

    def train_step(self, carry: RSSMCarry, action, latent_next, key, open_loop: bool):
        h, prior = self._img(carry, action)
        post = self.post_net(jnp.concatenate([h, latent_next]))
        kq, kp = jax.random.split(key)
        z = self._sample(prior, kp) if open_loop else self._sample(post, kq)
        feat = jnp.concatenate([h, z])
        recon = ((self.decoder(feat) - latent_next) ** 2).mean()
        dyn = self._kl(sg(post), prior)
        rep = self._kl(post, sg(prior))
        a = self.kl_balance
        kl_loss = a * jnp.maximum(dyn, self.free_bits) + (1 - a) * jnp.maximum(rep, self.free_bits)
        heads = self.heads(feat, carry.keys, carry.slot_valid)
        return carry._replace(h=h, z=z), {"latent": recon, "kl": kl_loss, "kl_value": dyn}, heads
