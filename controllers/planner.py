"""Model-predictive control over imagined rollouts: CEM and random shooting.

The model is an imagined env: ``reset(params, key, start) -> (state, TimeStep)`` (``start``
= the current observation) and ``step(params, state, action, key) -> (state, TimeStep)``.
Action sequences are sampled one step at a time from per-step categorical distributions
restricted to the mask *the model predicts* at that step (the first step uses the real
observation's mask); the return of a sequence is ``sum_t gamma^t r_t`` up to the first
predicted termination/truncation. CEM refits the per-step distributions to the elites;
random shooting is one round of uniform sampling. ``act`` returns the first action of the
best sequence found. Everything is one jitted function.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from controllers.base import get_mask, masked_logits, register_controller, section_kwargs, timestep_obs


@struct.dataclass
class PlannerState:
    model_params: Any


class Planner:
    def __init__(self, model_reset: Callable, model_step: Callable, model_params: Any = None,
                 method: str = "cem", horizon: int = 8, num_samples: int = 64, num_elites: int = 8,
                 iterations: int = 3, smoothing: float = 0.5, gamma: float = 1.0):
        if method not in ("cem", "random"):
            raise ValueError(f"planner.method must be 'cem' or 'random', got {method!r}")
        if not 1 <= num_elites <= num_samples:
            raise ValueError(f"planner.num_elites must be in [1, num_samples={num_samples}], got {num_elites}")
        self.reset_fn, self.step_fn, self.model_params = model_reset, model_step, model_params
        self.method, self.H, self.N, self.K = method, horizon, num_samples, num_elites
        self.iterations = iterations if method == "cem" else 1
        self.smoothing, self.gamma = smoothing, gamma
        self.plan = jax.jit(self._plan)
        self.act = jax.jit(lambda state, obs, key: self._plan(state, obs, key)[0])

    def init(self, key, example_obs) -> PlannerState:
        get_mask(example_obs)
        return PlannerState(model_params=self.model_params)

    def update(self, state: PlannerState, batch: Any) -> tuple[PlannerState, dict]:
        """No learnable parameters of its own; ``batch={"model_params": p}`` swaps the model."""
        if isinstance(batch, dict) and "model_params" in batch:
            state = state.replace(model_params=batch["model_params"])
        return state, {}

    def _rollout(self, params, s0, mask0, logits, key):
        """One sampled sequence: (actions [H], discounted return [])."""
        def body(c, xs):
            s, mask, ret, alive, disc = c
            lg, k = xs
            k1, k2 = jax.random.split(k)
            a = jax.random.categorical(k1, masked_logits(lg, mask)).astype(jnp.int32)
            s2, ts = self.step_fn(params, s, a, k2)
            ret = ret + alive * disc * jnp.asarray(ts.reward, jnp.float32)
            alive = alive * (1.0 - (jnp.asarray(ts.terminated) | jnp.asarray(ts.truncated)))
            return (s2, get_mask(timestep_obs(ts)), ret, alive, disc * self.gamma), a
        (_, _, ret, _, _), acts = jax.lax.scan(
            body, (s0, mask0, 0.0, 1.0, 1.0), (logits, jax.random.split(key, self.H)))
        return acts, ret

    def _plan(self, state: PlannerState, obs, key) -> tuple[jax.Array, jax.Array]:
        """(first action of the best plan int32 [], its imagined return [])."""
        params = state.model_params
        mask0 = get_mask(obs)
        A1 = mask0.shape[0]
        k_reset, key = jax.random.split(key)
        s0, _ = self.reset_fn(params, k_reset, obs)
        probs = jnp.full((self.H, A1), 1.0 / A1)
        best_a = jnp.int32(A1 - 1)   # stop is always legal
        best_r = -jnp.inf
        for it in range(self.iterations):
            key, k = jax.random.split(key)
            acts, rets = jax.vmap(self._rollout, in_axes=(None, None, None, None, 0))(
                params, s0, mask0, jnp.log(probs + 1e-8), jax.random.split(k, self.N))
            i = jnp.argmax(rets)
            better = rets[i] > best_r
            best_a = jnp.where(better, acts[i, 0], best_a)
            best_r = jnp.where(better, rets[i], best_r)
            elite = jax.lax.top_k(rets, self.K)[1]
            freq = jax.nn.one_hot(acts[elite], A1).mean(0)        # [H, A1]
            probs = (1 - self.smoothing) * probs + self.smoothing * freq
        return best_a, best_r


@register_controller("planner")
def _make_planner(cfg, model_reset=None, model_step=None, model_params=None, **_):
    if model_reset is None or model_step is None:
        raise ValueError("controller 'planner' needs model_reset= and model_step= (the imagined env functions)")
    return Planner(model_reset, model_step, model_params, **section_kwargs(cfg, "planner"))
