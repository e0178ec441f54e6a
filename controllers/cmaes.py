"""World-Models-style controller trained with CMA-ES (evosax) by rollouts in a pure-JAX env.

The controller is tiny: it scores each action from its description and the context,
``score[a] = phi_a . (W c + b) + u . phi_a`` (linear) or through one hidden layer, where
``c`` [D] is a context vector (``obs["latent"]`` if present, else globals + mean node
features) and ``phi_a`` [Fa] the description of action ``a`` (mean features of its
location nodes + rule id features + the candidate's immediate reward on the
`controllers.base.candidate_reward_feature` scale; the stop action has its own indicator). The action is
the argmax over legal actions. Fitness = mean return over rollouts (evosax minimises, so
it is given the negated return); the population is evaluated with ``vmap``.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from evosax.algorithms import CMA_ES
from flax import struct

from controllers.base import (candidate_reward_feature, get_mask, masked_logits, register_controller, section_kwargs,
                              timestep_obs)


def default_features(obs: dict) -> tuple[jax.Array, jax.Array]:
    """(context [D], action descriptions [A+1, Fa]) of one observation."""
    if "latent" in obs:
        ctx = jnp.asarray(obs["latent"], jnp.float32).reshape(-1)
    else:
        x = jnp.asarray(obs["node_features"], jnp.float32)
        nmask = (jnp.arange(x.shape[0]) < jnp.asarray(obs["n_node"]).reshape(-1)[0]).astype(jnp.float32)
        mean_nodes = (x * nmask[:, None]).sum(0) / jnp.maximum(nmask.sum(), 1.0)
        ctx = jnp.concatenate([jnp.asarray(obs.get("globals", jnp.zeros(0)), jnp.float32).reshape(-1), mean_nodes])
    ctx = jnp.concatenate([ctx, jnp.ones(1)])
    A1 = jnp.asarray(obs["action_mask"]).shape[0]
    if "candidate_nodes" in obs and "node_features" in obs:
        x = jnp.asarray(obs["node_features"], jnp.float32)
        cand = jnp.asarray(obs["candidate_nodes"]).reshape(A1 - 1, -1)
        m = (cand >= 0).astype(jnp.float32)
        loc = (x[jnp.clip(cand, 0, x.shape[0] - 1)] * m[..., None]).sum(1) / jnp.maximum(m.sum(1), 1.0)[:, None]
        rule = jnp.asarray(obs["candidate_rule"], jnp.float32)[:, None]
        gain = candidate_reward_feature(obs, A1 - 1)[:, None]
        cand_feats = jnp.concatenate([loc, jnp.sin(rule), jnp.cos(rule), gain, jnp.zeros((A1 - 1, 1))], -1)
        stop = jnp.zeros((1, cand_feats.shape[1])).at[0, -1].set(1.0)
        return ctx, jnp.concatenate([cand_feats, stop], 0)
    return ctx, jnp.eye(A1)  # no descriptions: one-hot action identities


@struct.dataclass
class CMAESState:
    es_state: Any
    params: Any      # current mean controller parameters (pytree)
    key: jax.Array


class CMAESController:
    def __init__(self, popsize: int = 16, sigma: float = 0.5, hidden: int = 0, num_rollouts: int = 4,
                 horizon: int = 32, features: Callable = default_features):
        if popsize < 2:
            raise ValueError(f"cmaes.popsize must be >= 2, got {popsize}")
        self.popsize, self.sigma, self.hidden = popsize, sigma, hidden
        self.num_rollouts, self.horizon, self.features = num_rollouts, horizon, features
        self.es = None
        self.act = jax.jit(self._act)

    def _template(self, example_obs):
        ctx, phi = self.features(example_obs)
        D, F = ctx.shape[0], phi.shape[1]
        if self.hidden:
            return {"W1": jnp.zeros((D + F, self.hidden)), "w2": jnp.zeros((self.hidden,))}
        return {"W": jnp.zeros((F, D)), "u": jnp.zeros((F,))}

    def scores(self, params, obs) -> jax.Array:
        ctx, phi = self.features(obs)
        if self.hidden:
            z = jnp.concatenate([jnp.broadcast_to(ctx, (phi.shape[0], ctx.shape[0])), phi], -1)
            s = jnp.tanh(z @ params["W1"]) @ params["w2"]
        else:
            s = phi @ (params["W"] @ ctx) + phi @ params["u"]
        return masked_logits(s, get_mask(obs))

    def init(self, key, example_obs) -> CMAESState:
        template = self._template(example_obs)
        self.es = CMA_ES(population_size=self.popsize, solution=template)
        es_params = self.es.default_params.replace(std_init=jnp.asarray(self.sigma))
        self._es_params = es_params
        k1, k2 = jax.random.split(key)
        mean = jax.tree_util.tree_map(lambda x: 0.1 * jax.random.normal(k1, x.shape), template)
        es_state = self.es.init(k1, mean, es_params)
        return CMAESState(es_state=es_state, params=mean, key=k2)

    def _act(self, state: CMAESState, obs, key) -> jax.Array:
        return jnp.argmax(self.scores(state.params, obs)).astype(jnp.int32)

    def ask(self, state: CMAESState) -> tuple[Any, CMAESState]:
        """Population (pytree with leading dim popsize) and the advanced state."""
        key, k = jax.random.split(state.key)
        pop, es_state = self.es.ask(k, state.es_state, self._es_params)
        return pop, state.replace(es_state=es_state, key=key)

    def update(self, state: CMAESState, batch) -> tuple[CMAESState, dict]:
        """``batch = (population, returns [popsize])``: tell CMA-ES (higher return = better)."""
        pop, returns = batch
        key, k = jax.random.split(state.key)
        es_state, m = self.es.tell(k, pop, -jnp.asarray(returns, jnp.float32), state.es_state, self._es_params)
        metrics = {"mean_return": jnp.mean(returns), "max_return": jnp.max(returns),
                   "best_return_ever": -m["best_fitness"], "std": es_state.std}
        return state.replace(es_state=es_state, params=self.es.get_mean(es_state), key=key), metrics

    def make_fitness(self, reset_fn: Callable, step_fn: Callable, env_params: Any, starts: Any) -> Callable:
        """``fitness(params, key) -> mean return`` of ``num_rollouts`` episodes of at most
        ``horizon`` steps (rewards after the episode ends are not counted)."""
        def episode(params, key):
            k0, k1, k2 = jax.random.split(key, 3)
            n = jax.tree_util.tree_leaves(starts)[0].shape[0]
            start = jax.tree_util.tree_map(lambda x: x[jax.random.randint(k0, (), 0, n)], starts)
            s, ts = reset_fn(env_params, k1, start)

            def body(c, k):
                s, obs, ret, alive = c
                a = jnp.argmax(self.scores(params, obs)).astype(jnp.int32)
                s2, ts = step_fn(env_params, s, a, k)
                ret = ret + alive * ts.reward
                alive = alive * (1.0 - (jnp.asarray(ts.terminated) | jnp.asarray(ts.truncated)))
                return (s2, timestep_obs(ts), ret, alive), None

            (_, _, ret, _), _ = jax.lax.scan(body, (s, timestep_obs(ts), 0.0, 1.0), jax.random.split(k2, self.horizon))
            return ret

        def fitness(params, key):
            return jax.vmap(episode, in_axes=(None, 0))(params, jax.random.split(key, self.num_rollouts)).mean()
        return fitness

    def make_train_step(self, fitness: Callable) -> Callable:
        """A jitted generation: ask, evaluate the population (vmap), tell."""
        @jax.jit
        def train_step(state: CMAESState, key):
            pop, state = self.ask(state)
            returns = jax.vmap(fitness, in_axes=(0, None))(pop, key)  # common random numbers
            return self.update(state, (pop, returns))
        return train_step


@register_controller("cmaes")
def _make_cmaes(cfg, **deps):
    return CMAESController(**section_kwargs(cfg, "cmaes"), **{k: v for k, v in deps.items() if k == "features"})
