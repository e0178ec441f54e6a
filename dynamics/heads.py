"""Action slots, their embedding, and the reward / termination / action-mask heads.

Design of actions in imagination (the "slot" design)
----------------------------------------------------
An action is chosen among a fixed set of A *slots* plus one stop slot (index A), the same
layout as the environment's ``action_mask`` [A+1]. A slot is *described*, not just indexed:

- graph rewriting: slot j = (rule id ``candidate_rule[j]``, the masked mean of the encoder's
  node embeddings at ``candidate_nodes[j]`` and the candidate's immediate reward
  ``candidate_reward[j]`` on the `reward_feature` scale), i.e. "apply rule r at this place,
  which saves this much now";
- placement: slot j = a feature vector of device j (one-hot or device features), rule -1.

`SlotDescription` holds these per-slot descriptions, `SlotEmbed` maps them (plus a learned
stop vector) to slot vectors [A+1, S]; the embedding of action ``a`` is ``slots[a]``.

A carried slot keeps the immediate reward of the start state. It stays exact for a slot
whose candidate reads nothing the rollout's rewrites changed (see
`systems_envs.rewrite.deltas`); the model does not re-predict it after imagined steps.

In imagination the slots are *carried*: the slot set of the real state where imagination
starts (its candidate rewrites) stays fixed for the whole imagined rollout, because the model
does not generate new graphs and therefore cannot invent new candidate locations. The mask
head predicts, for the state reached after each imagined step, which of these carried slots
are still legal (a logit per slot, over the *described* slots; padded slots get -1e9).
Its training target ``next_mask[t, j]`` is "slot j of the sequence's first state is legal in
state t+1" (for rewriting: the same rule still matches at the same nodes, matched by stable
node identity; for placement: device j is still allowed). The stop slot is a slot like the
others. This is honest about what the model can know: legality of known candidates after
some rewrites (some disappear because their nodes were rewritten, others stay), not the
discovery of new ones; a controller re-grounds on a real state to get fresh candidates.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import optax

from encoders.layers import MLP

NEG_LOGIT = -1e9  # mask logit of a padded (non-existent) slot


class SlotDescription(NamedTuple):
    """Descriptions of the A non-stop action slots of one state (add leading batch dims freely).

    rule: int32 [A], rule id per slot, -1 = no rule (placement) or padded slot.
    features: float32 [A, Fs], per-slot features (pooled node embeddings or device features).
    valid: bool [A], the slot exists (padded slots are False).
    conflicts: bool [A, A] or None: slots i and j matched a common node (rewriting, see
    `rewrite_slots`); None where slots never exclude each other (placement).
    """

    rule: jnp.ndarray
    features: jnp.ndarray
    valid: jnp.ndarray
    conflicts: jnp.ndarray | None = None


REWARD_SCALE = 1e3  # a candidate reward (relative cost decrease) of 1e-3 maps to symlog(1) = 0.69


def reward_feature(r: jnp.ndarray) -> jnp.ndarray:
    """Candidate rewards (relative cost decreases, typically 1e-4..1e-1, negative for a
    rewrite that costs more) on a unit scale: ``sign(x) log(1 + |x|)``, ``x = REWARD_SCALE r``.
    Strictly increasing, so it ranks candidates as the rewards do."""
    x = REWARD_SCALE * jnp.asarray(r, jnp.float32)
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def rewrite_slots(node_embeddings: jnp.ndarray, candidate_rule: jnp.ndarray,
                  candidate_nodes: jnp.ndarray, candidate_reward: jnp.ndarray | None = None) -> SlotDescription:
    """Slots of one rewriting state: node_embeddings [N, D] (the batched node array),
    candidate_rule int32 [A] (-1 pad), candidate_nodes int32 [A, K] (positions into the
    node array, e.g. `encoders.graphs.Batch.candidate_nodes[b]`; -1 pad), candidate_reward
    float32 [A] (the observation's ``candidate_reward``; None = zeros).
    Returns features [A, D+1] = (masked mean of the candidate's node embeddings,
    `reward_feature` of its reward) and the conflicts [A, A] = "the two candidates' matches
    share a node" (a candidate conflicts with itself): applying one rewrites its matched
    nodes, which removes the other."""
    m = (candidate_nodes >= 0).astype(node_embeddings.dtype)                 # [A, K]
    gathered = node_embeddings[jnp.maximum(candidate_nodes, 0)]              # [A, K, D]
    pooled = (gathered * m[..., None]).sum(1) / jnp.maximum(m.sum(1, keepdims=True), 1.0)
    if candidate_reward is None:
        candidate_reward = jnp.zeros(candidate_rule.shape, jnp.float32)
    valid = candidate_rule >= 0
    reward = jnp.where(valid, reward_feature(candidate_reward), 0.0).astype(pooled.dtype)
    features = jnp.concatenate([pooled, reward[:, None]], -1)
    n = candidate_nodes
    shared = (n[:, None, :, None] == n[None, :, None, :]) & (n[:, None, :, None] >= 0)   # [A, A, K, K]
    return SlotDescription(candidate_rule.astype(jnp.int32), features, valid, shared.any((2, 3)))


def consume(consumed: jnp.ndarray, conflicts: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
    """The bool [A+1] set of slots consumed so far, updated after applying ``action`` (int32
    [], A = stop): or-ed with row ``action`` of ``conflicts`` [A, A] (the slot itself and every
    slot whose match shares a node with it); stop consumes nothing."""
    a = conflicts.shape[-1]
    row = conflicts[jnp.minimum(action, a - 1)] & (action < a)                  # [A]
    return consumed | jnp.concatenate([row, jnp.zeros((1,), bool)])


def feature_slots(features: jnp.ndarray, valid: jnp.ndarray | None = None) -> SlotDescription:
    """Slots described by feature vectors only (placement: device one-hot / device features [A, Fs])."""
    valid = jnp.ones(features.shape[:-1], bool) if valid is None else valid.astype(bool)
    return SlotDescription(jnp.full(features.shape[:-1], -1, jnp.int32), features, valid)


class SlotEmbed(nn.Module):
    """SlotDescription [A, ...] -> (slots [A+1, width], slot_valid bool [A+1]); the last slot is
    the learned stop vector (always valid). ``num_rules`` = 0 disables the rule embedding."""

    width: int
    num_rules: int = 0

    @nn.compact
    def __call__(self, desc: SlotDescription):
        f = MLP((self.width, self.width))(desc.features)
        if self.num_rules > 0:
            f = f + nn.Embed(self.num_rules + 1, self.width)(jnp.clip(desc.rule + 1, 0, self.num_rules))
        stop = self.param("stop", nn.initializers.normal(1.0), (self.width,))
        slots = jnp.concatenate([f, stop[None]], 0)
        valid = jnp.concatenate([desc.valid.astype(bool), jnp.ones((1,), bool)])
        return jnp.where(valid[:, None], slots, 0.0), valid


class Heads(nn.Module):
    """Reward, termination and action-mask heads.

    ``keys(slots [A+1, S]) -> [A+1, rank + 1]``: per-slot mask keys from the key MLP
    (``slot -> width -> rank + 1``). They depend only on the carried slots, so the models
    compute them ONCE in ``initial_carry`` and keep them in the carry.
    ``__call__(feat [F], keys [A+1, rank + 1], slot_valid [A+1]) -> (reward [], terminated
    logit [], mask_logits [A+1])``: one MLP ``feat -> 2 width -> 2 + rank`` gives the reward,
    the termination logit and a query q [rank]; mask logit j ("slot j is legal in the
    predicted state") is ``keys[j, :rank] . q + keys[j, rank]``, a rank-``rank`` bilinear
    score plus a per-slot bias: (A+1) * rank multiply-adds per step instead of an MLP per
    slot (slots consumed by the rollout are handled by `WorldModel.legal_slots`)."""

    width: int
    rank: int = 8

    def setup(self):
        self.out = MLP((2 * self.width, 2 + self.rank))
        self.key = MLP((self.width, self.rank + 1))

    def keys(self, slots):
        return self.key(slots)

    def __call__(self, feat, keys, slot_valid):
        y = self.out(feat)
        q = y[2:]
        # the rank-r contraction as r multiply-adds over [A+1], which XLA fuses into one
        # elementwise loop (under vmap a batched matrix-vector product is ~3x slower on CPU)
        logits = keys[:, self.rank]
        for i in range(self.rank):
            logits = logits + keys[:, i] * q[i]
        return y[0], y[1], jnp.where(slot_valid, logits, NEG_LOGIT)


class Predictions(NamedTuple):
    """One step's predictions (no batch dim). z_next [Z] is in the encoder's latent space;
    reward []; terminated [] (a logit); mask_logits [A+1] over the carried slots of the next
    state; info: model-specific extras (e.g. ``disagreement`` for the ensemble)."""

    z_next: jnp.ndarray
    reward: jnp.ndarray
    terminated: jnp.ndarray
    mask_logits: jnp.ndarray
    info: dict


class SequenceBatch(NamedTuple):
    """Training sequences for `loss` (leading batch dim B, T steps).

    latent: float32 [B, T+1, Z], encoder latents of states s_0 .. s_T.
    slots: SlotDescription with leading dim B, the slots of s_0 (carried for T steps).
    action: int32 [B, T], slot index in [0, A] (A = stop).
    reward: float32 [B, T]; terminated: float32 [B, T] (1 if s_{t+1} is terminal).
    next_mask: float32 [B, T, A+1], legality of each carried slot in s_{t+1}.
    valid: float32 [B, T], 1 for real steps, 0 for steps after the episode ended / padding.
    """

    latent: jnp.ndarray
    slots: SlotDescription
    action: jnp.ndarray
    reward: jnp.ndarray
    terminated: jnp.ndarray
    next_mask: jnp.ndarray
    valid: jnp.ndarray


def head_losses(reward, term_logit, mask_logits, slot_valid, reward_t, term_t, mask_t) -> dict:
    """Per-step losses of the heads (no batch dim): squared reward error, termination BCE,
    mask BCE averaged over existing slots (padded slots do not count)."""
    m = slot_valid.astype(jnp.float32)
    mask_bce = optax.sigmoid_binary_cross_entropy(jnp.where(slot_valid, mask_logits, 0.0), mask_t)
    return {
        "reward": (reward - reward_t) ** 2,
        "terminated": optax.sigmoid_binary_cross_entropy(term_logit, term_t),
        "mask": (mask_bce * m).sum() / jnp.maximum(m.sum(), 1.0),
    }


def masked_mean(x, valid):
    """Mean of x over entries where valid (same shape); 0 if none."""
    return (x * valid).sum() / jnp.maximum(valid.sum(), 1.0)


def check_batch(batch: SequenceBatch, who: str) -> None:
    """Trace-time shape checks with one-line errors."""
    if batch.latent.ndim != 3:
        raise ValueError(f"{who}: batch.latent must be [B, T+1, Z], got {batch.latent.shape}")
    b, t1, _ = batch.latent.shape
    for name in ("action", "reward", "terminated", "valid"):
        if getattr(batch, name).shape != (b, t1 - 1):
            raise ValueError(f"{who}: batch.{name} must be [B, T] = {(b, t1 - 1)}, got {getattr(batch, name).shape}")
    a1 = batch.slots.rule.shape[-1] + 1
    if batch.next_mask.shape != (b, t1 - 1, a1):
        raise ValueError(f"{who}: batch.next_mask must be [B, T, A+1] = {(b, t1 - 1, a1)}, got {batch.next_mask.shape}")
