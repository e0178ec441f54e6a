"""PPO and CMA-ES on ``MemoryPlacement-v0``'s step-by-step MDP (one layer per step), so that
EGRL's one-shot mappings can be compared with the project's other learners at the same
real budget. Adapters only: the learning rules are `controllers.ppo.PPO` and
`controllers.cmaes.CMAESController`, unchanged.

* `MemoryStepPolicy`: the observation (``nodes`` [L, F] with the mapping so far, ``senders``
  / ``receivers`` [E], ``action_mask`` [A]) -> a `controllers.mapping.MappingNet` over the
  layer graph; the row of the layer marked next gives the logits [A] and (last output) the
  value []. `MemoryPPO` is PPO with this network.
* `memory_features`: CMA-ES's linear controller context for one observation: the next
  layer's feature row, the mean feature row (the mapping so far) and a bias, [2F + 1];
  action descriptions are one-hot [A, A].
* `train_ppo` / `train_cmaes`: run on B real environments until ``budget`` episodes
  (finished mappings) are spent; report the best final reward (speedup) seen and its curve.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from controllers.cmaes import CMAESController
from controllers.mapping import MappingNet
from controllers.ppo import PPO, PPOState
from controllers.rollout import collect_real, reset_real


class MemoryStepPolicy(nn.Module):
    """One observation -> (logits float32 [A], value float32 []). ``next_col``: the node
    feature column marking the layer to map next."""

    num_actions: int
    next_col: int
    width: int = 32
    depth: int = 2

    @nn.compact
    def __call__(self, obs: dict) -> tuple[jax.Array, jax.Array]:
        nodes = jnp.asarray(obs["nodes"], jnp.float32)
        snd = jnp.asarray(obs["senders"], jnp.int32)
        graphs = jraph.GraphsTuple(nodes=nodes, edges=jnp.zeros((snd.shape[0], 1), jnp.float32), senders=snd,
                                   receivers=jnp.asarray(obs["receivers"], jnp.int32),
                                   n_node=jnp.array([nodes.shape[0]]), n_edge=jnp.array([snd.shape[0]]),
                                   globals=jnp.zeros((1, 1), jnp.float32))
        out = MappingNet(self.num_actions + 1, self.width, self.depth)(graphs)      # [L, A + 1]
        row = out[jnp.argmax(nodes[:, self.next_col])]
        return row[:self.num_actions], row[self.num_actions]


class MemoryPPO(PPO):
    """`controllers.ppo.PPO` with `MemoryStepPolicy` as its network (``num_actions`` A and
    ``next_col`` from the environment; other keyword arguments are PPO's)."""

    def __init__(self, num_actions: int, next_col: int, width: int = 32, depth: int = 2, **ppo_kwargs):
        super().__init__(**ppo_kwargs)
        self.net = MemoryStepPolicy(num_actions, next_col, width, depth)

    def init(self, key: jax.Array, example_obs: dict) -> PPOState:
        params = jax.jit(self.net.init)(key, example_obs)
        return PPOState(params=params, opt_state=self.tx.init(params), step=jnp.zeros((), jnp.int32))


def memory_features(obs: dict) -> tuple[jax.Array, jax.Array]:
    """(context [2F + 1], action descriptions [A, A]) of one MemoryPlacement observation (the
    next-layer column is the last feature column)."""
    x = jnp.asarray(obs["nodes"], jnp.float32)
    nxt = x[jnp.argmax(x[:, -1])]
    ctx = jnp.concatenate([nxt, x.mean(0), jnp.ones(1)])
    return ctx, jnp.eye(jnp.asarray(obs["action_mask"]).shape[0])


def _envs(env_fn, n: int) -> list:
    return [env_fn() for _ in range(n)]


def train_ppo(env_fn, key: jax.Array, budget: int, num_envs: int = 8, seed: int = 0, ppo: MemoryPPO | None = None,
              **ppo_kwargs) -> dict:
    """PPO on ``num_envs`` real environments (``env_fn()`` builds one) until ``budget``
    episodes have finished (``ppo``: an agent to reuse, e.g. across seeds, so its jitted
    functions compile once; else one is built from ``ppo_kwargs``). Returns
    ``{"best_reward", "episodes", "curve": [(episodes, best so far)], "updates"}``."""
    envs = _envs(env_fn, num_envs)
    e0 = envs[0].unwrapped
    ppo = ppo or MemoryPPO(e0.action_space.n, e0._next, **ppo_kwargs)
    rs = reset_real(envs, seed)
    k_init, key = jax.random.split(key)
    state = ppo.init(k_init, rs.obs[0])
    episodes, best, curve, updates = 0, -math.inf, [], 0
    while episodes < budget:
        key, k = jax.random.split(key)
        rs, batch = collect_real(envs, ppo, state, rs, k, ppo.rollout_len)
        state, _ = ppo.update(state, batch)
        updates += 1
        done = np.asarray(batch.terminated) | np.asarray(batch.truncated)
        for r in np.asarray(batch.episode_return)[done]:
            episodes += 1
            best = max(best, float(r))
            curve.append((episodes, best))
    return {"best_reward": best, "episodes": episodes, "curve": curve, "updates": updates}


class MemoryCMAES(CMAESController):
    """`controllers.cmaes.CMAESController` with `memory_features`, plus ``pick_batch(pop,
    obs)``: the argmax actions int32 [popsize] of a population on a stacked observation batch."""

    def __init__(self, popsize: int = 16, sigma: float = 0.5):
        super().__init__(popsize=popsize, sigma=sigma, features=memory_features)
        self.pick_batch = jax.jit(jax.vmap(lambda p, o: jnp.argmax(self.scores(p, o)).astype(jnp.int32)))


def train_cmaes(env_fn, key: jax.Array, budget: int, popsize: int = 16, sigma: float = 0.5,
                cm: MemoryCMAES | None = None) -> dict:
    """CMA-ES (`MemoryCMAES`; ``cm``: one to reuse): each generation plays its ``popsize``
    linear controllers (argmax over legal actions) in lockstep on ``popsize`` real
    environments until ``budget`` episodes have finished. Returns like `train_ppo`
    (``"generations"`` instead of ``"updates"``)."""
    cm = cm or MemoryCMAES(popsize, sigma)
    popsize = cm.popsize
    envs = _envs(env_fn, popsize)
    obs0 = envs[0].reset(seed=0)[0]
    k_init, key = jax.random.split(key)
    state = cm.init(k_init, obs0)
    pick = cm.pick_batch
    stack = lambda obs: {k: np.stack([o[k] for o in obs]) for k in obs[0]}  # noqa: E731
    episodes, best, curve, gens = 0, -math.inf, [], 0
    while episodes < budget:
        pop, state = cm.ask(state)
        obs = [env.reset(seed=0)[0] for env in envs]
        ret, alive = np.zeros(popsize), np.ones(popsize, bool)
        while alive.any():
            acts = np.asarray(pick(pop, stack(obs)))
            for j, env in enumerate(envs):
                if alive[j]:
                    o, r, term, trunc, _ = env.step(int(acts[j]))
                    ret[j] += r
                    obs[j] = o
                    alive[j] = not (term or trunc)
        state, _ = cm.update(state, (pop, jnp.asarray(ret, jnp.float32)))
        gens += 1
        for r in ret:
            episodes += 1
            best = max(best, float(r))
            curve.append((episodes, best))
    return {"best_reward": best, "episodes": episodes, "curve": curve, "generations": gens}
