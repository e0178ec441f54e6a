"""Whole-graph memory mappings for ``MemoryPlacement-v0``: the problem, a one-shot GNN policy,
a capacity-feasible decoder, and the two ways to score a finished mapping.

EGRL (Khadka et al., ICLR 2021) treats memory placement as a one-step problem: a GNN reads
the workload graph once and emits, for every layer at the same time, a preference over the
(weight level, activation level) pairs; the mapping is measured as a whole. Here:

* `MappingProblem`: the layer graph of one ``MemoryPlacementEnv`` (its reset observation,
  the byte sizes, live ranges and level capacities) in exact integer units.
* `MappingNet`: GNN (`encoders.gn.GNBlock` blocks) -> per-layer scores [L, A], A = M*M
  actions ``w * M + a`` as in the environment. Used as the policy (logits) and as the
  learner's critic (per-layer Q values).
* `decode`: logits [L, A] -> actions [L], layer by layer in the environment's order, each
  action restricted to the pairs that keep every level within capacity given the layers
  before it: the environment's own ``action_mask`` rule, computed in exact integers (bytes
  divided by their common divisor), so every decoded mapping is legal in the real
  environment (tested). Pure JAX (jit / vmap over a population).
* `RealFitness`: plays a mapping through the real environment (one episode; the final
  reward is the speedup over the all-in-slowest-memory mapping); counts real episodes,
  keeps the best mapping seen, and does not re-measure a mapping it has already measured
  (the environment is deterministic).
* `ModelFitness`: the outcome model (`worldmodels.outcome`) scores the placed graph (the
  reset observation with the mapping written into its assignment columns); no real step.
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from encoders.gn import GNBlock
from encoders.layers import MLP


@dataclasses.dataclass(frozen=True)
class MappingProblem:
    """One memory-mapping instance (L layers, E edges, M levels, A = M*M actions).

    nodes float32 [L, F]: the environment's reset observation; senders / receivers int32
    [E]; w_units / a_units int32 [L]: weight and activation sizes in units of ``unit``
    bytes (the gcd of all sizes); last_use int32 [L]; cap_units int32 [M]: each level's
    capacity in units (floor, clipped to what int32 arithmetic can hold: a level larger
    than the whole graph twice over is never the binding one); num_levels: M; next_col:
    the node-feature column that marks the layer to map next in an observation."""

    graph: str
    nodes: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    w_units: np.ndarray
    a_units: np.ndarray
    last_use: np.ndarray
    cap_units: np.ndarray
    unit: int
    num_levels: int
    next_col: int

    @property
    def num_layers(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def num_actions(self) -> int:
        return self.num_levels * self.num_levels

    @classmethod
    def from_env(cls, env) -> "MappingProblem":
        """The problem of a ``MemoryPlacementEnv`` (or a wrapper of one)."""
        from systems_envs.placement.memory_env import MemoryPlacementEnv

        env = getattr(env, "unwrapped", env)
        if not isinstance(env, MemoryPlacementEnv):
            raise ValueError(f"memory mapping needs a MemoryPlacement-v0 environment, got {type(env).__name__}")
        lg = env.lg
        sizes = np.concatenate([lg.w_bytes, lg.a_bytes])
        if np.any(sizes != np.round(sizes)) or np.any(sizes < 0):
            raise ValueError(f"graph {lg.name!r}: tensor sizes must be whole bytes")
        ints = sizes.astype(np.int64)
        unit = int(np.gcd.reduce(ints[ints > 0])) if np.any(ints > 0) else 1
        total = int(ints.sum()) // unit
        if 2 * total >= 2**31 - 1:
            raise ValueError(f"graph {lg.name!r}: {ints.sum() / 1e9:.1f} GB of tensors is too large for the int32 decoder")
        caps = np.minimum(np.floor(env.caps / unit), 2 * total + 1).astype(np.int32)
        obs, _ = env.reset(seed=0)
        return cls(lg.name, np.asarray(obs["nodes"], np.float32), np.asarray(obs["senders"], np.int32),
                   np.asarray(obs["receivers"], np.int32), (ints[:len(lg)] // unit).astype(np.int32),
                   (ints[len(lg):] // unit).astype(np.int32), np.asarray(lg.last_use, np.int32), caps, unit, env.M,
                   int(env._next))

    def arrays(self) -> dict:
        """The problem as a pytree of device arrays for jitted code (pass it as an argument:
        closed-over constants make XLA constant-fold the GNN over the graph, slowly):
        ``graphs`` (`graphs`), ``w_units`` / ``a_units`` / ``last_use`` [L], ``cap_units`` [M]."""
        return {"graphs": self.graphs(), "w_units": jnp.asarray(self.w_units), "a_units": jnp.asarray(self.a_units),
                "last_use": jnp.asarray(self.last_use), "cap_units": jnp.asarray(self.cap_units)}

    def graphs(self) -> jraph.GraphsTuple:
        """The layer graph as one jraph graph: nodes [L, F], zero edge features [E, 1], zero
        globals [1, 1]."""
        e = len(self.senders)
        return jraph.GraphsTuple(nodes=jnp.asarray(self.nodes), edges=jnp.zeros((e, 1), jnp.float32),
                                 senders=jnp.asarray(self.senders), receivers=jnp.asarray(self.receivers),
                                 n_node=jnp.array([self.num_layers]), n_edge=jnp.array([e]),
                                 globals=jnp.zeros((1, 1), jnp.float32))


class MappingNet(nn.Module):
    """GraphsTuple of one layer graph -> per-layer scores float32 [L, outputs]: a Dense
    embedding, ``depth`` Graph Network blocks, an MLP head per node."""

    outputs: int
    width: int = 32
    depth: int = 2

    @nn.compact
    def __call__(self, graphs: jraph.GraphsTuple) -> jax.Array:
        x = nn.Dense(self.width)(graphs.nodes)
        e = nn.Dense(self.width)(graphs.edges)
        u = nn.Dense(self.width)(graphs.globals)
        for _ in range(self.depth):
            x, e, u = GNBlock(self.width)(x, e, u, graphs)
        return MLP((self.width, self.outputs))(x)


def reset_graph(obs: dict, num_levels: int, next_col: int) -> jraph.GraphsTuple:
    """The layer graph as `MappingProblem.graphs` gives it (the features of the reset
    observation), from any observation of the same episode in the training loop's padded
    layout (`worldmodels.tasks`: ``node_features`` [N, F], ``senders`` / ``receivers`` [E],
    ``n_node`` / ``n_edge`` (1,), N above the real layer count n): the weight and activation
    one-hots set to "unmapped", the next-layer mark on layer 0, padding rows zero, and the
    padding edges moved onto the last (padding) node of a second, padding graph, so every
    aggregation of `MappingNet` over the real layers is the unpadded graph's. Pure JAX (vmap-able).
    ``num_levels`` M and ``next_col`` as in `MappingProblem` (the one-hots are the 2(M+1)
    columns before ``next_col``)."""
    x = jnp.asarray(obs["node_features"], jnp.float32)
    N, F = x.shape
    n = jnp.asarray(obs["n_node"]).reshape(-1)[0]
    e = jnp.asarray(obs["n_edge"]).reshape(-1)[0]
    w0 = next_col - 2 * (num_levels + 1)
    cols, rows = jnp.arange(F), jnp.arange(N)
    onehots = (cols >= w0) & (cols < next_col)
    unmapped = ((cols == w0 + num_levels) | (cols == next_col - 1)).astype(jnp.float32)
    x = jnp.where(onehots[None], unmapped[None], x)
    x = x.at[:, next_col].set((rows == 0).astype(jnp.float32))
    x = jnp.where((rows < n)[:, None], x, 0.0)
    E = jnp.asarray(obs["senders"]).shape[0]
    live = jnp.arange(E) < e
    snd = jnp.where(live, jnp.asarray(obs["senders"], jnp.int32), N - 1)
    rcv = jnp.where(live, jnp.asarray(obs["receivers"], jnp.int32), N - 1)
    return jraph.GraphsTuple(nodes=x, edges=jnp.zeros((E, 1), jnp.float32), senders=snd, receivers=rcv,
                             n_node=jnp.stack([n, N - n]).astype(jnp.int32),
                             n_edge=jnp.stack([e, E - e]).astype(jnp.int32), globals=jnp.zeros((2, 1), jnp.float32))


def decode(arrays: dict, logits: jax.Array, key: jax.Array, sample: bool) -> tuple[jax.Array, jax.Array]:
    """A capacity-feasible mapping from per-layer logits [L, A] (``arrays``: `MappingProblem.arrays`).

    Layer i takes the argmax (``sample=False``) or a draw (``sample=True``) of its logits over
    the actions that fit given layers 0..i-1 (the environment's ``action_mask``). Returns
    (actions int32 [L], feasible bool []: False if some layer had no fitting action, then
    that layer took the all-slowest action A-1 and the real environment would reject it)."""
    caps = arrays["cap_units"]
    wu, au, last = arrays["w_units"], arrays["a_units"], arrays["last_use"]
    M, L = caps.shape[0], wu.shape[0]
    A = M * M
    w_of, a_of = jnp.arange(A) // M, jnp.arange(A) % M
    idx = jnp.arange(L)

    def step(carry, xs):
        usage, ok = carry                                   # int32 [M, L], bool []
        i, lg, k = xs
        live = (idx >= i) & (idx <= last[i])
        umax = usage.max(1)
        ulive = jnp.where(live[None], usage, 0).max(1)
        extra = au[i] + jnp.where(w_of == a_of, wu[i], 0)
        mask = (umax[w_of] + wu[i] <= caps[w_of]) & (ulive[a_of] + extra <= caps[a_of])
        scores = jnp.where(mask, lg, -jnp.inf)
        pick = jax.random.categorical(k, scores) if sample else jnp.argmax(scores)
        act = jnp.where(mask.any(), pick, A - 1).astype(jnp.int32)
        usage = usage.at[w_of[act]].add(wu[i])
        usage = usage.at[a_of[act]].add(jnp.where(live, au[i], 0))
        return (usage, ok & mask.any()), act

    init = (jnp.zeros((M, L), jnp.int32), jnp.bool_(True))
    (_, ok), acts = jax.lax.scan(step, init, (idx, jnp.asarray(logits, jnp.float32), jax.random.split(key, L)))
    return acts, ok


def real_episode(env, actions) -> tuple[float, bool]:
    """Play ``actions`` [L] through the real environment from a reset: (final reward, valid).
    An action the environment's mask forbids ends the episode with its invalid reward."""
    env.reset(seed=0)
    r, info = 0.0, {}
    for a in np.asarray(actions).tolist():
        _, r, term, trunc, info = env.step(int(a))
        if term or trunc:
            break
    return float(r), bool(info.get("valid", False))


class RealFitness:
    """Real-environment fitness of mappings, with a budget ledger.

    ``__call__(actions [K, L]) -> rewards float64 [K]``; ``episodes``: real episodes run so
    far (a mapping measured before is answered from the cache, not run again);
    ``best_reward`` / ``best_actions``: the best mapping measured; ``curve``: (episodes,
    best reward so far) after every new episode."""

    def __init__(self, env):
        self.env = getattr(env, "unwrapped", env)
        self.cache: dict[bytes, float] = {}
        self.episodes = 0
        self.best_reward, self.best_actions = -math.inf, None
        self.curve: list[tuple[int, float]] = []

    def __call__(self, actions) -> np.ndarray:
        actions = np.asarray(actions, np.int32)
        out = np.empty(len(actions))
        for j, acts in enumerate(actions):
            key = acts.tobytes()
            if key not in self.cache:
                self.record(acts, real_episode(self.env, acts)[0])
            out[j] = self.cache[key]
        return out

    def record(self, actions, reward: float) -> None:
        """Book one real episode run elsewhere (e.g. while collecting the outcome model's
        data): ``actions`` [L], its final reward."""
        acts = np.asarray(actions, np.int32)
        self.cache[acts.tobytes()] = float(reward)
        self.episodes += 1
        if reward > self.best_reward:
            self.best_reward, self.best_actions = float(reward), acts.copy()
        self.curve.append((self.episodes, self.best_reward))


class ModelFitness:
    """Outcome-model fitness: ``__call__(actions [K, L]) -> predicted final rewards [K]``.

    ``model``/``params``/``node_cap``/``edge_cap`` as `worldmodels.outcome.load_outcome`
    returns them; ``start_obs``: the environment's reset observation; ``optimism``: score with
    that many ensemble standard deviations added (`OutcomeModel.score_optimistic`, an upper
    confidence bound; 0: the mean prediction). One jitted call per batch (padded to a
    multiple of ``chunk`` so it compiles once)."""

    def __init__(self, model, params, node_cap: int, edge_cap: int, start_obs: dict, chunk: int = 32,
                 optimism: float = 0.0):
        from worldmodels.outcome import assign, node_steps, pad_observation
        from worldmodels.replay import standard_obs

        template = pad_observation(standard_obs(start_obs), node_cap, edge_cap)
        self.template = jax.tree.map(jnp.asarray, template)
        self.steps = jnp.asarray(node_steps(model.layout, template.nodes, template.n_node))
        self.chunk, self.params = chunk, params

        def score(params, template, steps, actions):          # int32 [chunk, L] -> [chunk]
            nodes = jax.vmap(lambda a: assign(model.layout, template.nodes, steps, a))(actions)
            b = actions.shape[0]
            pg = jax.tree.map(lambda x: jnp.broadcast_to(x, (b,) + x.shape), template)
            return model.score_optimistic(params, pg._replace(nodes=nodes), optimism)

        self._score = jax.jit(score)

    def __call__(self, actions, params=None) -> np.ndarray:
        """``params``: the outcome model's parameters to score with (None: the ones given at
        construction; the training loop passes its refit ones, no recompile)."""
        actions = np.asarray(actions, np.int32)
        params = self.params if params is None else params
        k = len(actions)
        pad = (-k) % self.chunk
        padded = np.concatenate([actions, np.repeat(actions[:1], pad, 0)]) if pad else actions
        out = [np.asarray(self._score(params, self.template, self.steps, padded[i:i + self.chunk]))
               for i in range(0, len(padded), self.chunk)]
        return np.concatenate(out)[:k].astype(np.float64)
