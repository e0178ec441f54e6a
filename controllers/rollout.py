"""Rollout collection into one batch format, from a real or an imagined environment.

Both functions return a :class:`Transition` with leading dims [T, B]:
``obs`` (dict, padded to one bucket), ``action`` int32, ``log_prob``, ``value``,
``reward`` float32, ``terminated``/``truncated`` bool, ``next_value`` (value of the
observation after the step, before any auto-reset; 0 where terminated) and
``episode_return`` (return of the episode that ended at this step, 0 elsewhere).

A policy is any object with ``policy(state, obs, key) -> (action, log_prob, value)`` and
``value(state, obs) -> value`` for one observation (e.g. :class:`controllers.ppo.PPO`).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from controllers.base import next_pow2, stack_observations, timestep_obs


class Transition(NamedTuple):
    obs: Any
    action: Any
    log_prob: Any
    value: Any
    reward: Any
    terminated: Any
    truncated: Any
    next_value: Any
    episode_return: Any


# ----------------------------------------------------------------------------- real env


class RealRolloutState(NamedTuple):
    obs: list            # current observation of each env
    ep_return: np.ndarray  # float64 [B] running return


def _with_info_mask(obs: dict, info: dict) -> dict:
    if "action_mask" not in obs and isinstance(info, dict) and "action_mask" in info:
        obs = {**obs, "action_mask": info["action_mask"]}
    return obs


def reset_real(envs: list, seed: int) -> RealRolloutState:
    """Reset every env (env ``i`` with seed ``seed + i``)."""
    obs = [_with_info_mask(*env.reset(seed=seed + i)) for i, env in enumerate(envs)]
    return RealRolloutState(obs=obs, ep_return=np.zeros(len(envs)))


def collect_real(envs: list, agent: Any, agent_state: Any, rs: RealRolloutState, key: jax.Array,
                 num_steps: int, n_cap: int | None = None, m_cap: int | None = None
                 ) -> tuple[RealRolloutState, Transition]:
    """Python loop over ``env.step`` for ``num_steps`` steps of each of the B gymnasium envs
    (auto-reset on episode end). Observations are padded to ``n_cap`` nodes / ``m_cap``
    edges (default: power-of-two buckets per step for the jitted policy and, in the batch,
    the largest bucket seen in this rollout). Fixed capacities compile the policy once."""
    policy_b = getattr(agent, "policy_batch", None) or jax.jit(jax.vmap(agent.policy, in_axes=(None, 0, 0)))
    value_b = getattr(agent, "value_batch", None) or jax.jit(jax.vmap(agent.value, in_axes=(None, 0)))
    B = len(envs)
    obs, ep_ret = list(rs.obs), rs.ep_return.copy()
    raw_obs, acts, logps, vals, rews, terms, truncs, finals, ep_rets = [], [], [], [], [], [], [], [], []
    for t in range(num_steps):
        key, k = jax.random.split(key)
        a, lp, v = jax.device_get(policy_b(agent_state, stack_observations(obs, n_cap, m_cap), jax.random.split(k, B)))
        raw_obs.append(obs)
        acts.append(a); logps.append(lp); vals.append(v)
        r_t, te_t, tr_t, er_t = np.zeros(B), np.zeros(B, bool), np.zeros(B, bool), np.zeros(B)
        final: dict[int, dict] = {}
        new_obs = []
        for i, env in enumerate(envs):
            o, r, te, tr, info = env.step(int(a[i]))
            o = _with_info_mask(o, info)
            r_t[i], te_t[i], tr_t[i] = r, te, tr
            ep_ret[i] += r
            if te or tr:
                er_t[i] = ep_ret[i]
                ep_ret[i] = 0.0
                if tr and not te:
                    final[i] = o
                o = _with_info_mask(*env.reset())
            new_obs.append(o)
        fv = np.zeros(B)
        if final:  # value of the pre-reset final observations (one fixed-size call)
            fo = [final.get(i, new_obs[i]) for i in range(B)]
            fv = np.asarray(value_b(agent_state, stack_observations(fo, n_cap, m_cap)), np.float64)
        rews.append(r_t); terms.append(te_t); truncs.append(tr_t); finals.append(fv); ep_rets.append(er_t)
        obs = new_obs
    last_v = np.asarray(value_b(agent_state, stack_observations(obs, n_cap, m_cap)))
    vals_a = np.asarray(vals, np.float32)
    next_v = np.concatenate([vals_a[1:], last_v[None]], 0)
    terms_a, truncs_a = np.asarray(terms), np.asarray(truncs)
    next_v = np.where(truncs_a & ~terms_a, np.asarray(finals), np.where(terms_a, 0.0, next_v))
    # one bucket for the whole batch
    flat = [o for step in raw_obs for o in step]
    if "node_features" in flat[0] and not (n_cap and m_cap):
        n_cap = next_pow2(max(np.asarray(o["node_features"]).shape[0] for o in flat))
        m_cap = next_pow2(max(np.asarray(o["senders"]).shape[0] for o in flat))
    obs_b = [stack_observations(step, n_cap, m_cap) for step in raw_obs]
    obs_tb = {k: np.stack([o[k] for o in obs_b]) for k in obs_b[0]}
    batch = Transition(obs=obs_tb, action=np.asarray(acts, np.int32), log_prob=np.asarray(logps, np.float32),
                       value=vals_a, reward=np.asarray(rews, np.float32), terminated=terms_a,
                       truncated=truncs_a, next_value=next_v.astype(np.float32),
                       episode_return=np.asarray(ep_rets, np.float32))
    return RealRolloutState(obs=obs, ep_return=ep_ret), batch


# ----------------------------------------------------------------------------- imagined env


@struct.dataclass
class ImaginedCarry:
    env_state: Any      # [B, ...] env states
    obs: Any            # [B, ...] current observations
    ep_return: jax.Array  # float32 [B]
    starts: Any         # [S, ...] pool of start points for (re)sets


def _pick_start(starts, key):
    n = jax.tree_util.tree_leaves(starts)[0].shape[0]
    i = jax.random.randint(key, (), 0, n)
    return jax.tree_util.tree_map(lambda x: x[i], starts)


def reset_imagined(reset_fn: Callable, env_params: Any, starts: Any, key: jax.Array, num_envs: int) -> ImaginedCarry:
    """Reset ``num_envs`` imagined envs from random entries of the ``starts`` pool
    (a pytree with a leading dim S; e.g. observations or latents from replay)."""
    def one(k):
        k1, k2 = jax.random.split(k)
        s, ts = reset_fn(env_params, k2, _pick_start(starts, k1))
        return s, timestep_obs(ts)
    s, obs = jax.vmap(one)(jax.random.split(key, num_envs))
    return ImaginedCarry(env_state=s, obs=obs, ep_return=jnp.zeros((num_envs,), jnp.float32), starts=starts)


def collect_imagined(reset_fn: Callable, step_fn: Callable, env_params: Any, agent: Any, agent_state: Any,
                     carry: ImaginedCarry, key: jax.Array, num_steps: int) -> tuple[ImaginedCarry, Transition]:
    """``lax.scan`` of ``num_steps`` steps over B imagined envs (pure functions; jit this
    with ``agent``, ``reset_fn``, ``step_fn`` and ``num_steps`` static, e.g. via a closure).
    Episodes that end are reset from the start pool."""
    def env_step(s, obs, ep_ret, k):
        k_act, k_step, k_pick, k_reset = jax.random.split(k, 4)
        a, lp, v = agent.policy(agent_state, obs, k_act)
        s2, ts = step_fn(env_params, s, a, k_step)
        obs2 = timestep_obs(ts)
        term, trunc = jnp.asarray(ts.terminated, bool), jnp.asarray(ts.truncated, bool)
        done = term | trunc
        nv = jnp.where(term, 0.0, agent.value(agent_state, obs2))
        r = jnp.asarray(ts.reward, jnp.float32)
        ret = ep_ret + r
        s_r, ts_r = reset_fn(env_params, k_reset, _pick_start(carry.starts, k_pick))
        sel = lambda x, y: jax.tree_util.tree_map(lambda p, q: jnp.where(done, p, q), x, y)
        out = (sel(s_r, s2), sel(timestep_obs(ts_r), obs2), jnp.where(done, 0.0, ret))
        tr = Transition(obs=obs, action=a, log_prob=lp, value=v, reward=r, terminated=term, truncated=trunc,
                        next_value=nv, episode_return=jnp.where(done, ret, 0.0))
        return out, tr

    def body(c, k):
        B = c.ep_return.shape[0]
        (s, obs, ret), tr = jax.vmap(env_step)(c.env_state, c.obs, c.ep_return, jax.random.split(k, B))
        return c.replace(env_state=s, obs=obs, ep_return=ret), tr

    return jax.lax.scan(body, carry, jax.random.split(key, num_steps))


def mean_episode_return(batch: Transition) -> float:
    """Mean return of the episodes completed in the batch (nan if none)."""
    done = np.asarray(batch.terminated) | np.asarray(batch.truncated)
    return float(np.asarray(batch.episode_return)[done].mean()) if done.any() else float("nan")
