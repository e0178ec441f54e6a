"""MDN-RNN (Ha & Schmidhuber, 2018): an LSTM over (latent, action embedding) whose output
parametrises a mixture of `n_mixtures` diagonal Gaussians over the next latent.

Carry: LSTM state (c, h) [hidden], the current latent z [Z], and the carried slots with their
mask-head keys (computed once per rollout, `dynamics.heads.Heads`).
step: advance the LSTM with [z, slots[action]] (as in World Models, no input layer); sample a component with logits / temperature
and z_next = mu + sigma * sqrt(temperature) * eps (`sample_component_and_noise`); reward /
termination / mask heads read h.
Loss: mixture negative log-likelihood of the next latent (per latent dimension) + heads.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynamics.heads import Heads, Predictions, SlotDescription, SlotEmbed

LOG_2PI = jnp.log(2.0 * jnp.pi)


class MDNCarry(NamedTuple):
    c: jnp.ndarray            # [hidden]
    h: jnp.ndarray            # [hidden]
    z: jnp.ndarray            # [Z] current latent
    slots: jnp.ndarray        # [A+1, S]
    slot_valid: jnp.ndarray   # bool [A+1]
    keys: jnp.ndarray         # [A+1, rank + 1] mask-head keys of the slots (`Heads.keys`), fixed per rollout


def mixture_log_prob(logits, means, log_std, x):
    """log p(x) under sum_m softmax(logits)_m N(x; means[m], exp(log_std[m])^2); x [Z]."""
    comp = (-0.5 * ((x - means) * jnp.exp(-log_std)) ** 2 - log_std - 0.5 * LOG_2PI).sum(-1)  # [M]
    return jax.nn.logsumexp(jax.nn.log_softmax(logits) + comp)


def sample_component_and_noise(key, logits, dim):
    """One random draw for a mixture sample: (component ~ softmax(logits) [M], int32 [];
    standard normal noise [dim]). ``dim + 1`` uniforms on (-1, 1) come from ONE call (one
    threefry pass instead of a key split plus two draws); the first ``dim`` map to normals
    exactly as in ``jax.random.normal`` (sqrt(2) erfinv(u)), the last picks the component
    by inverting the mixture's cumulative distribution."""
    u = jax.random.uniform(key, (dim + 1,), minval=jnp.nextafter(-1.0, 0.0), maxval=1.0)
    eps = jnp.sqrt(2.0) * jax.scipy.special.erfinv(u[:dim])
    cdf = jnp.cumsum(jax.nn.softmax(logits))[:-1]                 # [M-1]
    comp = (cdf < 0.5 * (u[dim] + 1.0)).sum().astype(jnp.int32)
    return comp, eps


class LSTMCell(nn.Module):
    """An LSTM cell whose four gates come from ONE matmul over [x, h] (one kernel
    [in + features, 4 features]); forget-gate bias +1 (Jozefowicz et al., 2015).
    (carry (c, h) [features], x [in]) -> ((c, h), h)."""

    features: int

    @nn.compact
    def __call__(self, carry, x):
        c, h = carry
        i, f, g, o = jnp.split(nn.Dense(4 * self.features)(jnp.concatenate([x, h])), 4)
        c = nn.sigmoid(f + 1.0) * c + nn.sigmoid(i) * jnp.tanh(g)
        h = nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h


class MDNRNN(nn.Module):
    latent_dim: int
    hidden: int = 64
    n_mixtures: int = 5
    slot_width: int = 32
    num_rules: int = 0
    temperature: float = 1.0
    mask_rank: int = 8

    def setup(self):
        self.slot_embed = SlotEmbed(self.slot_width, self.num_rules)
        self.cell = LSTMCell(self.hidden)
        self.mdn = nn.Dense(self.n_mixtures * (1 + 2 * self.latent_dim))
        self.heads = Heads(self.hidden, self.mask_rank)

    def __call__(self, latent, desc, action, key):  # used by init only: touches every submodule
        carry = self.initial_carry(latent, desc, key)
        carry, _ = self.step(carry, action, key)
        return self.train_step(carry, action, latent, key, False)

    def initial_carry(self, latent, desc: SlotDescription, key=None) -> MDNCarry:
        slots, valid = self.slot_embed(desc)
        zeros = jnp.zeros((self.hidden,), latent.dtype)
        return MDNCarry(zeros, zeros, latent, slots, valid, self.heads.keys(slots))

    def _advance(self, carry: MDNCarry, action):
        (c, h), out = self.cell((carry.c, carry.h), jnp.concatenate([carry.z, carry.slots[action]]))
        m, z = self.n_mixtures, self.latent_dim
        p = self.mdn(out)
        logits, means, log_std = p[:m], p[m:m + m * z].reshape(m, z), p[m + m * z:].reshape(m, z)
        log_std = jnp.clip(log_std, -7.0, 3.0)
        return c, h, (logits, means, log_std), self.heads(h, carry.keys, carry.slot_valid)

    def step(self, carry: MDNCarry, action, key, temperature=None):
        tau = self.temperature if temperature is None else temperature
        c, h, (logits, means, log_std), (rew, term, mask) = self._advance(carry, action)
        comp, eps = sample_component_and_noise(key, logits / tau, self.latent_dim)
        z = means[comp] + jnp.exp(log_std[comp]) * jnp.sqrt(tau) * eps
        z_mean = (jax.nn.softmax(logits)[:, None] * means).sum(0)
        return carry._replace(c=c, h=h, z=z), Predictions(z, rew, term, mask, {"z_mean": z_mean})

    def train_step(self, carry: MDNCarry, action, latent_next, key, open_loop: bool):
        c, h, (logits, means, log_std), heads = self._advance(carry, action)
        nll = -mixture_log_prob(logits, means, log_std, latent_next) / self.latent_dim
        z_next = (jax.nn.softmax(logits)[:, None] * means).sum(0) if open_loop else latent_next
        return carry._replace(c=c, h=h, z=z_next), {"latent": nll}, heads
