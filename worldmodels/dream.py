"""Imagination with model observations: the imagined env (`worldmodels.imagined_env`) as
the controllers see it in model-based mode.

A *model observation* (`model_obs`) is ``{"latent": [Z], "slot_rule": int32 [A],
"slot_features": [A, Fs], "action_mask": int8 [A+1]}`` (see `controllers.latent`); the
last action is stop, never legal in placement. In imagination the latent is the predicted
one and the slots are those carried from the start state. A start-pool entry
(`start_entry`) is a model observation plus what a reset needs besides: the slot conflicts,
the dynamics' initial carry and (placement with an outcome model) the placed graph.

`DreamEnv` truncates after ``h`` steps where the environment parameters are
`DreamParams` ``(world-model params, h, outcome params or None)``, all traced: no recompile
per horizon or per outcome-model update.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from controllers.base import TimeStep
from dynamics import SlotDescription


class DreamParams(NamedTuple):
    wm: Any                 # world-model params
    horizon: Any            # int32 []: truncate after this many imagined steps
    outcome: Any = None     # outcome-model params (placement final reward) or None


def model_obs(latent, slots: SlotDescription, mask) -> dict:
    """A model observation; a placement mask [A] gets the (never legal) stop slot appended."""
    mask = jnp.asarray(mask)
    a = slots.features.shape[-2]
    if mask.shape[-1] == a:
        mask = jnp.concatenate([mask, jnp.zeros(mask.shape[:-1] + (1,), mask.dtype)], -1)
    return {"latent": latent, "slot_rule": jnp.where(slots.valid, slots.rule, -1).astype(jnp.int32),
            "slot_features": slots.features, "action_mask": mask.astype(jnp.int8)}


def start_entry(start) -> dict:
    """An encoded `worldmodels.imagined_env.Start` (any leading dims) -> start-pool entry."""
    out = dict(model_obs(start.latent, start.slots, start.action_mask), slot_conflicts=start.slots.conflicts,
               carry=start.carry)
    if start.placed is not None:
        out["placed"] = start.placed
    return out


def obs_to_start(obs, identity_slots: bool = False):
    """A model observation or start-pool entry -> `worldmodels.imagined_env.Start`.
    ``identity_slots`` (placement): every slot exists (their rule is -1); rewriting: a slot
    exists where it has a rule."""
    from worldmodels.imagined_env import Start
    rule = jnp.asarray(obs["slot_rule"], jnp.int32)
    valid = jnp.ones(rule.shape, bool) if identity_slots else rule >= 0
    slots = SlotDescription(rule, jnp.asarray(obs["slot_features"]), valid, obs.get("slot_conflicts"))
    return Start(jnp.asarray(obs["latent"]), slots, jnp.asarray(obs["action_mask"]) > 0, obs.get("carry"),
                 obs.get("placed"))


class DreamEnv:
    """The imagined env with model observations (module docstring); ``outcome``: the
    `worldmodels.outcome.OutcomeModel` paying placement's final reward (its params come in
    `DreamParams.outcome`), None for the dynamics' reward head."""

    def __init__(self, wm, max_steps: int, outcome=None):
        from worldmodels.imagined_env import ImaginedEnv
        self.outcome = outcome
        self.inner = ImaginedEnv(wm, max_steps=max_steps, outcome=None if outcome is None else (outcome, None))
        self.identity_slots = not self.inner.rewrite

    @staticmethod
    def _wm_params(env_params):
        p = env_params[0]
        if len(env_params) > 2 and env_params[2] is not None:
            p = {**p, "outcome": env_params[2]}
        return p

    def reset(self, env_params, key, start):
        st = obs_to_start(start, self.identity_slots)
        s, ts = self.inner.reset(self._wm_params(env_params), key, st)
        f = jnp.bool_(False)
        return (s, st.slots), TimeStep(model_obs(ts.observation, st.slots, ts.action_mask), jnp.float32(0.0), f, f)

    def step(self, env_params, state, action, key):
        h = env_params[1]
        s, slots = state
        s2, ts = self.inner.step(self._wm_params(env_params), s, action, key)
        trunc = ts.truncated | ((s2.t >= h) & ~ts.terminated)
        return (s2, slots), TimeStep(model_obs(ts.observation, slots, ts.action_mask), ts.reward, ts.terminated, trunc)
