"""Small pure-JAX environments with the imagined-env interface, for tests and smoke runs.

- :class:`GraphBandit`: graph observations in the GraphRewrite-v0 layout (variable node
  count inside a padded capacity); each candidate action points at a node and pays that
  node's value; candidates are randomly masked (the best one is sometimes illegal); stop
  pays 0 and ends the episode; the episode is truncated after ``horizon`` steps.
- :class:`CountCash`: a counter with delayed reward (increment costs 0.1, cash pays
  ``c**2 / max_count`` and resets), where the myopic choice is wrong: a test bed for
  planners.
- :class:`GymGraphBandit`: :class:`GraphBandit` behind the ``gymnasium.Env`` API (NumPy
  observations) for the real-env rollout path.
"""
from __future__ import annotations

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from controllers.base import TimeStep


class GraphBandit:
    def __init__(self, max_nodes: int = 6, min_nodes: int = 3, num_candidates: int = 4,
                 num_rules: int = 4, horizon: int = 4, p_legal: float = 0.6):
        self.N, self.min_nodes, self.A, self.R = max_nodes, min_nodes, num_candidates, num_rules
        self.horizon, self.p_legal = horizon, p_legal

    def _instance(self, key, t):
        k1, k2, k3, k4, k5 = jax.random.split(key, 5)
        n = jax.random.randint(k1, (), self.min_nodes, self.N + 1)
        values = jax.random.uniform(k2, (self.N,)) * (jnp.arange(self.N) < n)
        cand = jax.random.randint(k3, (self.A,), 0, n)
        rule = jax.random.randint(k4, (self.A,), 0, self.R)
        legal = jax.random.bernoulli(k5, self.p_legal, (self.A,))
        return {"values": values, "n": n, "cand": cand, "rule": rule, "legal": legal, "t": t}

    def observation(self, s) -> dict:
        N, M = self.N, self.N - 1
        node_mask = jnp.arange(N) < s["n"]
        feats = jnp.stack([s["values"], node_mask.astype(jnp.float32)], -1)
        return {
            "node_features": feats.astype(jnp.float32),
            "edge_features": jnp.zeros((M, 1), jnp.float32),
            "senders": jnp.arange(M, dtype=jnp.int32),
            "receivers": jnp.arange(1, M + 1, dtype=jnp.int32),
            "n_node": s["n"].reshape(1).astype(jnp.int32),
            "n_edge": (s["n"] - 1).reshape(1).astype(jnp.int32),
            "globals": (s["t"] / self.horizon).reshape(1).astype(jnp.float32),
            "action_mask": jnp.concatenate([s["legal"], jnp.ones(1, bool)]).astype(jnp.int8),
            "candidate_rule": s["rule"].astype(jnp.int32),
            "candidate_nodes": jnp.stack([s["cand"], -jnp.ones(self.A, jnp.int32)], -1).astype(jnp.int32),
        }

    def reset(self, params, key, start=None):
        s = self._instance(key, jnp.zeros((), jnp.int32))
        return s, TimeStep(self.observation(s), jnp.zeros(()), jnp.zeros((), bool), jnp.zeros((), bool))

    def step(self, params, s, action, key):
        is_stop = action >= self.A
        a = jnp.clip(action, 0, self.A - 1)
        reward = jnp.where(is_stop, 0.0, s["values"][s["cand"][a]])
        t = s["t"] + 1
        s2 = self._instance(key, t)
        return s2, TimeStep(self.observation(s2), reward.astype(jnp.float32), is_stop, (t >= self.horizon) & ~is_stop)

    def oracle_action(self, obs) -> jax.Array:
        """Best legal action (highest-value candidate; stop if none is legal)."""
        vals = obs["node_features"][jnp.clip(obs["candidate_nodes"][:, 0], 0), 0]
        mask = obs["action_mask"] > 0
        scores = jnp.concatenate([jnp.where(mask[:-1], vals, -jnp.inf), jnp.array([-1.0])])
        return jnp.argmax(scores).astype(jnp.int32)


class CountCash:
    def __init__(self, max_count: int = 5, horizon: int = 10):
        self.C, self.horizon, self.A = max_count, horizon, 2

    def observation(self, s) -> dict:
        c, t = s
        mask = jnp.array([c < self.C, c > 0, True]).astype(jnp.int8)
        return {"x": jnp.stack([c / self.C, t / self.horizon]).astype(jnp.float32), "action_mask": mask}

    def reset(self, params, key, start=None):
        """``start`` = an observation to resume from (``None``: count 0 at time 0)."""
        if start is None:
            s = (jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
        else:
            x = jnp.asarray(start["x"])
            s = (jnp.round(x[0] * self.C).astype(jnp.int32), jnp.round(x[1] * self.horizon).astype(jnp.int32))
        return s, TimeStep(self.observation(s), jnp.zeros(()), jnp.zeros((), bool), jnp.zeros((), bool))

    def step(self, params, s, action, key):
        c, t = s
        inc, cash, stop = action == 0, action == 1, action == 2
        reward = jnp.where(inc, -0.1, jnp.where(cash, c.astype(jnp.float32) ** 2 / self.C, 0.0))
        c2 = jnp.where(inc, jnp.minimum(c + 1, self.C), jnp.where(cash, 0, c))
        t2 = t + 1
        s2 = (c2, t2)
        return s2, TimeStep(self.observation(s2), reward.astype(jnp.float32), stop, (t2 >= self.horizon) & ~stop)


_JITTED: dict = {}


class GymGraphBandit(gym.Env):
    """:class:`GraphBandit` as a gymnasium env with NumPy observations."""

    def __init__(self, **kw):
        self.core = GraphBandit(**kw)
        key = tuple(sorted(kw.items()))
        if key not in _JITTED:  # one compilation per configuration, shared by all instances
            _JITTED[key] = (jax.jit(self.core.reset), jax.jit(self.core.step))
        self._reset, self._step = _JITTED[key]
        self.action_space = gym.spaces.Discrete(self.core.A + 1)
        self._key = jax.random.PRNGKey(0)
        self._s = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._key = jax.random.PRNGKey(seed)
        self._key, k = jax.random.split(self._key)
        self._s, ts = self._reset(None, k)
        return jax.tree_util.tree_map(np.asarray, ts.observation), {}

    def step(self, action):
        self._key, k = jax.random.split(self._key)
        self._s, ts = self._step(None, self._s, jnp.int32(action), k)
        obs = jax.tree_util.tree_map(np.asarray, ts.observation)
        return obs, float(ts.reward), bool(ts.terminated), bool(ts.truncated), {}
