"""Functional wrapper shared by the dynamics models (M).

Every model is a Flax linen module with methods ``initial_carry``, ``step`` and ``train_step``;
`DynamicsModel` turns it into pure functions (all for ONE example, no batch dim; vmap them):

    dyn = make_dynamics("rssm", latent_dim=Z, ...)
    params = dyn.init(key, latent [Z], slots: SlotDescription [A])
    carry = dyn.initial_carry(params, latent [Z], slots)        # slots of the start state
    carry, pred = dyn.step(params, carry, action int32 [], key)   # pred: heads.Predictions
    loss, metrics = dyn.loss(params, batch: SequenceBatch [B, T], key)

`loss` unrolls the model for T steps with `lax.scan` from the first latent of each sequence:
``unroll="teacher"`` feeds the observed latent of s_t back in (RSSM: posterior filtering),
``unroll="open"`` feeds the model's own prediction (multi-step, open loop). Target latents
are used as given; the world model decides whether to stop their gradient. When the batch's
slots carry ``conflicts`` (rewriting with the consumed-slot prior), the mask loss covers only
the slots the actions so far have not consumed (`dynamics.heads.consume`): the prior decides
those in imagination, so the mask head learns the residual.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynamics.heads import (Predictions, SequenceBatch, SlotDescription, check_batch, consume, head_losses,
                            masked_mean)

UNROLLS = ("teacher", "open")


@dataclasses.dataclass(frozen=True)
class DynamicsModel:
    """module: the linen model; unroll: "teacher" | "open"; coefs: loss weights by term name
    (terms: "latent", "reward", "terminated", "mask", and "kl" for the RSSM)."""

    module: nn.Module
    unroll: str = "teacher"
    coefs: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"latent": 1.0, "reward": 1.0, "terminated": 1.0, "mask": 1.0, "kl": 1.0})

    def __post_init__(self):
        if self.unroll not in UNROLLS:
            raise ValueError(f"dynamics unroll must be one of {UNROLLS}, got {self.unroll!r}")

    def init(self, key: jax.Array, latent: jnp.ndarray, slots: SlotDescription) -> Any:
        """Parameters from one example latent [Z] and slot description [A, ...]."""
        if latent.ndim != 1:
            raise ValueError(f"dynamics init: latent must be [Z] (one example), got shape {latent.shape}")
        k1, k2 = jax.random.split(key)
        return self.module.init(k1, latent, slots, jnp.int32(0), k2)

    def initial_carry(self, params, latent: jnp.ndarray, slots: SlotDescription):
        """Carry at a real state with encoder latent [Z] and slot description [A, ...]; deterministic."""
        return self.module.apply(params, latent, slots, None, method="initial_carry")

    def step(self, params, carry, action: jnp.ndarray, key: jax.Array, **kw) -> tuple[Any, Predictions]:
        """One imagined step: action = slot index in [0, A] (A = stop). Pure; same key, same output."""
        return self.module.apply(params, carry, action, key, **kw, method="step")

    def sequence_losses(self, params, seq: SequenceBatch, key: jax.Array) -> dict:
        """Per-term mean losses of ONE sequence (no batch dim)."""
        k0, ks = jax.random.split(key)
        carry = self.module.apply(params, seq.latent[0], seq.slots, k0, method="initial_carry")
        open_loop = self.unroll == "open"

        conflicts = seq.slots.conflicts

        def body(state, xs):
            carry, consumed = state
            action, z_next, reward, term, mask, k = xs
            carry, terms, (rew, tl, ml) = self.module.apply(
                params, carry, action, z_next, k, open_loop, method="train_step")
            if conflicts is not None:
                consumed = consume(consumed, conflicts, action)
            terms = dict(terms, **head_losses(rew, tl, ml, carry.slot_valid & ~consumed, reward, term, mask))
            return (carry, consumed), terms

        t = seq.action.shape[0]
        xs = (seq.action, seq.latent[1:], seq.reward, seq.terminated, seq.next_mask, jax.random.split(ks, t))
        _, terms = jax.lax.scan(body, (carry, jnp.zeros(seq.next_mask.shape[-1:], bool)), xs)
        return {k: masked_mean(v, seq.valid) for k, v in terms.items()}

    def loss(self, params, batch: SequenceBatch, key: jax.Array) -> tuple[jnp.ndarray, dict]:
        """Mean over the B sequences of sum_k coefs[k] * term_k; metrics hold every term and "loss"."""
        check_batch(batch, type(self.module).__name__)
        keys = jax.random.split(key, batch.latent.shape[0])
        terms = jax.vmap(self.sequence_losses, (None, 0, 0))(params, batch, keys)
        metrics = {k: v.mean() for k, v in terms.items()}
        total = sum(self.coefs.get(k, 0.0) * v for k, v in metrics.items() if k in self.coefs)
        metrics["loss"] = total
        return total, metrics
