"""M: latent dynamics with reward / termination / action-mask heads.

    dyn = make_dynamics(name, latent_dim=Z, unroll="teacher", **model_cfg)
    params = dyn.init(key, latent [Z], slots)          # slots: heads.SlotDescription [A]
    carry = dyn.initial_carry(params, latent, slots)
    carry, pred = dyn.step(params, carry, action, key)  # pred.z_next/reward/terminated/mask_logits
    loss, metrics = dyn.loss(params, batch, key)         # batch: heads.SequenceBatch [B, T]

Names: "mdnrnn", "ensemble", "rssm". See dynamics.heads for the action-slot design and
dynamics.base for the functional wrapper.
"""
from __future__ import annotations

import dataclasses
import difflib

import flax.linen as nn
import jax.numpy as jnp

from dynamics.base import DynamicsModel
from dynamics.ensemble import Ensemble
from dynamics.heads import Predictions, SequenceBatch, SlotDescription, feature_slots, reward_feature, rewrite_slots
from dynamics.mdnrnn import MDNRNN
from dynamics.rssm import RSSM


@dataclasses.dataclass(frozen=True)
class EnsembleDynamics(DynamicsModel):
    """DynamicsModel plus the ensemble's epistemic-uncertainty signal."""

    def disagreement(self, params, carry, action) -> jnp.ndarray:
        """Mean over latent dims of the std across members of the predicted next-latent means []."""
        means, _ = self.module.apply(params, carry, action, method="predict_members")
        return means.std(0).mean()


DYNAMICS: dict[str, tuple[type[nn.Module], type[DynamicsModel]]] = {
    "mdnrnn": (MDNRNN, DynamicsModel),
    "ensemble": (Ensemble, EnsembleDynamics),
    "rssm": (RSSM, DynamicsModel),
}


def make_dynamics(name: str, *, unroll: str = "teacher", coefs: dict | None = None, **cfg) -> DynamicsModel:
    """Build the dynamics model registered as ``name``; ``cfg`` are the module's fields
    (``latent_dim`` is required), ``unroll`` and ``coefs`` configure the loss."""
    if name not in DYNAMICS:
        close = difflib.get_close_matches(name, DYNAMICS, n=1)
        raise ValueError(f"unknown dynamics {name!r}; valid: {sorted(DYNAMICS)}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    cls, wrapper = DYNAMICS[name]
    fields = {f for f in cls.__dataclass_fields__ if f not in ("parent", "name")}
    bad = sorted(set(cfg) - fields)
    if bad:
        raise ValueError(f"dynamics {name!r}: unknown config fields {bad}; valid: {sorted(fields)}")
    if "latent_dim" not in cfg:
        raise ValueError(f"dynamics {name!r}: latent_dim is required")
    kw = {} if coefs is None else {"coefs": dict(DynamicsModel.__dataclass_fields__["coefs"].default_factory(), **coefs)}
    return wrapper(cls(**cfg), unroll=unroll, **kw)


__all__ = ["make_dynamics", "DYNAMICS", "DynamicsModel", "EnsembleDynamics", "MDNRNN", "Ensemble", "RSSM",
           "Predictions", "SequenceBatch", "SlotDescription", "rewrite_slots", "feature_slots", "reward_feature"]
