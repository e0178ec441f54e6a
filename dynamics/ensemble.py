"""Ensemble of E MLP dynamics members (PETS, Chua et al., 2018; MBPO), vectorised with nn.vmap.

Member e maps (z, slots[action]) to a next-latent mean z + delta_e and, if ``probabilistic``,
a log-variance soft-bounded between learned per-member min/max (PETS). Training: each member
regresses the next latent (MSE if deterministic, Gaussian NLL if probabilistic); members
differ through their random initialisation. step: pick a member uniformly at random (key),
take its mean (plus a Gaussian sample if probabilistic). ``info["disagreement"]`` = mean over
latent dims of the std across members of the predicted means: an epistemic uncertainty signal.
Heads (reward, termination, mask) are shared and read (z_next, action embedding).

Carry z is [E, Z]: in imagination all rows hold the one sampled trajectory; in open-loop
training each member unrolls its own predictions.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynamics.heads import Heads, Predictions, SlotDescription, SlotEmbed
from encoders.layers import MLP


class EnsembleCarry(NamedTuple):
    z: jnp.ndarray            # [E, Z]
    slots: jnp.ndarray        # [A+1, S]
    slot_valid: jnp.ndarray   # bool [A+1]
    keys: jnp.ndarray         # [A+1, rank + 1] mask-head keys of the slots (`Heads.keys`), fixed per rollout


class Member(nn.Module):
    latent_dim: int
    hidden: int
    probabilistic: bool

    @nn.compact
    def __call__(self, z, a):
        x = MLP((self.hidden, self.hidden), activate_final=True)(jnp.concatenate([z, a]))
        mean = z + nn.Dense(self.latent_dim)(x)
        if not self.probabilistic:
            return mean, jnp.zeros_like(mean)
        max_lv = self.param("max_logvar", nn.initializers.constant(0.5), (self.latent_dim,))
        min_lv = self.param("min_logvar", nn.initializers.constant(-10.0), (self.latent_dim,))
        lv = nn.Dense(self.latent_dim)(x)
        lv = max_lv - nn.softplus(max_lv - lv)
        lv = min_lv + nn.softplus(lv - min_lv)
        return mean, lv


class Ensemble(nn.Module):
    latent_dim: int
    n_members: int = 5
    hidden: int = 64
    slot_width: int = 32
    num_rules: int = 0
    probabilistic: bool = True
    logvar_bound_coef: float = 0.01
    mask_rank: int = 8

    def setup(self):
        self.slot_embed = SlotEmbed(self.slot_width, self.num_rules)
        members = nn.vmap(Member, variable_axes={"params": 0}, split_rngs={"params": True},
                          in_axes=(0, None), out_axes=0, axis_size=self.n_members)
        self.members = members(self.latent_dim, self.hidden, self.probabilistic)
        self.heads = Heads(self.hidden, self.mask_rank)

    def __call__(self, latent, desc, action, key):  # used by init only
        carry = self.initial_carry(latent, desc, key)
        carry, _ = self.step(carry, action, key)
        return self.train_step(carry, action, latent, key, False)

    def initial_carry(self, latent, desc: SlotDescription, key=None) -> EnsembleCarry:
        slots, valid = self.slot_embed(desc)
        return EnsembleCarry(jnp.broadcast_to(latent, (self.n_members, latent.shape[-1])), slots, valid,
                             self.heads.keys(slots))

    def predict_members(self, carry: EnsembleCarry, action):
        """Per-member (means, logvars) [E, Z] for the action embedding slots[action]."""
        return self.members(carry.z, carry.slots[action])

    def step(self, carry: EnsembleCarry, action, key):
        a = carry.slots[action]
        means, logvars = self.members(carry.z, a)
        km, kn = jax.random.split(key)
        e = jax.random.randint(km, (), 0, self.n_members)
        z = means[e]
        if self.probabilistic:
            z = z + jnp.exp(0.5 * logvars[e]) * jax.random.normal(kn, z.shape)
        rew, term, mask = self.heads(jnp.concatenate([z, a]), carry.keys, carry.slot_valid)
        info = {"disagreement": means.std(0).mean(), "member": e, "z_mean": means.mean(0)}
        return carry._replace(z=jnp.broadcast_to(z, carry.z.shape)), Predictions(z, rew, term, mask, info)

    def train_step(self, carry: EnsembleCarry, action, latent_next, key, open_loop: bool):
        a = carry.slots[action]
        means, logvars = self.members(carry.z, a)
        if self.probabilistic:
            nll = 0.5 * ((means - latent_next) ** 2 * jnp.exp(-logvars) + logvars).mean()
            p = self.members.variables["params"]
            nll = nll + self.logvar_bound_coef * (p["max_logvar"].sum() - p["min_logvar"].sum()) / (
                self.n_members * self.latent_dim)
        else:
            nll = ((means - latent_next) ** 2).mean()
        z_next = means if open_loop else jnp.broadcast_to(latent_next, means.shape)
        heads = self.heads(jnp.concatenate([z_next.mean(0), a]), carry.keys, carry.slot_valid)
        return carry._replace(z=z_next), {"latent": nll, "disagreement": means.std(0).mean()}, heads
