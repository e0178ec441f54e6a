"""MuZero-style Monte Carlo tree search over a learned (imagined) environment, with `mctx`.

The search runs entirely in the model: the tree's root is the current observation, the
model's ``reset(params, key, obs)`` gives the root's model state, and ``step(params, state,
action, key)`` is the recurrent function that expands a node (mctx's ``recurrent_fn``). A
``prior_fn(prior_params, obs) -> (logits [A+1], value [])`` (e.g. the trained PPO policy
and value over the model's observation) supplies the prior over actions and the value of
every new node. It is one jitted function; ``num_simulations`` is its time budget.

Masks: the root's illegal actions come from the real observation's ``action_mask`` and are
excluded by mctx (``invalid_actions``). Below the root mctx has no mask, so each node's
prior logits are masked with the mask *the model predicts* for it (illegal -> ``NEG_INF``,
probability 0, the mctx maintainers' advice), and an illegal action that the search still
expands (PUCT can select an unvisited child for its value term alone) is a dead end: reward
0, discount 0, the model not stepped. Its value is that of stopping, so it can never look
better than a legal move. After a predicted termination or truncation the discount is 0.

``method``: ``muzero`` (PUCT selection) or ``gumbel`` (Gumbel MuZero: sequential halving at
the root over the ``max_considered`` best prior actions, deterministic with ``gumbel_scale``
0). mctx backs values up as means, with discount ``gamma``. ``select``: which root action is
played: ``max`` (default) the child with the best discovered return, a max-backup over the
finished tree (`best_returns`; the real rewriting problem is deterministic, and a mean over
a subtree undervalues a good path behind a costly first step), or ``visits``, MuZero's most
visited child (Gumbel: its own choice).

`principal_variation` reads the best path from the root (by ``select``); a caller may play
its first ``k`` actions before searching again (open loop over ``k`` steps). What the model knows
along that path is limited by the imagined environment (`worldmodels.imagined_env`): it
carries the root's candidate slots only, so a candidate that a rewrite creates does not
exist in the tree; it appears when the tree is re-rooted at the next real state.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import mctx
from flax import struct

from controllers.base import NEG_INF, get_mask, masked_logits, register_controller, section_kwargs, timestep_obs

METHODS = ("muzero", "gumbel")
SELECTS = ("max", "visits")


@struct.dataclass
class MCTSState:
    model_params: Any
    prior_params: Any


class MCTS:
    """See the module docstring. ``act(state, obs, key)`` takes one (unbatched) observation;
    `search` takes a batch [B]."""

    def __init__(self, model_reset: Callable, model_step: Callable, prior_fn: Callable,
                 model_params: Any = None, prior_params: Any = None, num_simulations: int = 32,
                 max_depth: int | None = None, gamma: float = 1.0, method: str = "muzero",
                 max_considered: int = 16, gumbel_scale: float = 0.0, pb_c_init: float = 1.25,
                 select: str = "max"):
        if method not in METHODS:
            raise ValueError(f"mcts.method must be one of {METHODS}, got {method!r}")
        if select not in SELECTS:
            raise ValueError(f"mcts.select must be one of {SELECTS}, got {select!r}")
        if num_simulations < 1:
            raise ValueError(f"mcts.num_simulations must be >= 1, got {num_simulations}")
        if max_depth is not None and max_depth < 1:
            raise ValueError(f"mcts.max_depth must be >= 1 (or None), got {max_depth}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"mcts.gamma must be in [0, 1], got {gamma}")
        self.reset_fn, self.step_fn, self.prior_fn = model_reset, model_step, prior_fn
        self.model_params, self.prior_params = model_params, prior_params
        self.num_simulations, self.max_depth, self.gamma = int(num_simulations), max_depth, float(gamma)
        self.method, self.max_considered, self.gumbel_scale = method, int(max_considered), float(gumbel_scale)
        self.pb_c_init, self.select = float(pb_c_init), select
        self.search = jax.jit(self._search)
        self.act = jax.jit(lambda state, obs, key: self._search(
            state, jax.tree.map(lambda x: jnp.asarray(x)[None], obs), key)[0][0])

    def init(self, key, example_obs) -> MCTSState:
        get_mask(example_obs)
        return MCTSState(self.model_params, self.prior_params)

    def update(self, state: MCTSState, batch: Any) -> tuple[MCTSState, dict]:
        """No parameters of its own; ``batch={"model_params": p, "prior_params": q}`` (either
        key) swaps the model or the prior."""
        if isinstance(batch, dict):
            state = state.replace(**{k: batch[k] for k in ("model_params", "prior_params") if k in batch})
        return state, {}

    # ------------------------------------------------------------------ search
    def _prior(self, prior_params, obs, mask):
        logits, value = self.prior_fn(prior_params, obs)
        return masked_logits(jnp.asarray(logits, jnp.float32), mask), jnp.asarray(value, jnp.float32)

    def _recurrent(self, params, key, action, embedding):
        """mctx recurrent_fn over a batch: (RecurrentFnOutput, new embedding)."""
        model_params, prior_params = params

        def one(k, a, emb):
            s, mask, done = emb
            legal = mask[a] & ~done
            s2, ts = self.step_fn(model_params, s, a, k)
            obs2 = timestep_obs(ts)
            mask2 = get_mask(obs2)
            ended = jnp.asarray(ts.terminated) | jnp.asarray(ts.truncated)
            logits, value = self._prior(prior_params, obs2, mask2)
            reward = jnp.where(legal, jnp.asarray(ts.reward, jnp.float32), 0.0)
            discount = jnp.where(legal & ~ended, self.gamma, 0.0).astype(jnp.float32)
            s2 = jax.tree.map(lambda new, old: jnp.where(legal, new, old), s2, s)
            return (mctx.RecurrentFnOutput(reward=reward, discount=discount, prior_logits=logits, value=value),
                    (s2, mask2 & legal, done | ~legal | ended))

        keys = jax.random.split(key, action.shape[0])
        return jax.vmap(one)(keys, action, embedding)

    def _search(self, state: MCTSState, obs, key):
        """Search from a batch of observations [B]: (action int32 [B], root value [B], visit
        counts [B, A+1], the mctx search tree)."""
        mask = get_mask(obs)                                                   # [B, A+1]
        b = mask.shape[0]
        k_reset, k_search = jax.random.split(key)
        s0, _ = jax.vmap(self.reset_fn, (None, 0, 0))(state.model_params, jax.random.split(k_reset, b), obs)
        logits, value = jax.vmap(self._prior, (None, 0, 0))(state.prior_params, obs, mask)
        root = mctx.RootFnOutput(prior_logits=logits, value=value,
                                 embedding=(s0, mask, jnp.zeros((b,), bool)))
        params = (state.model_params, state.prior_params)
        common = dict(params=params, rng_key=k_search, root=root, recurrent_fn=self._recurrent,
                      num_simulations=self.num_simulations, invalid_actions=~mask, max_depth=self.max_depth)
        if self.method == "gumbel":
            out = mctx.gumbel_muzero_policy(**common, max_num_considered_actions=self.max_considered,
                                            gumbel_scale=self.gumbel_scale)
        else:
            out = mctx.muzero_policy(**common, pb_c_init=self.pb_c_init, dirichlet_fraction=0.0)
        tree = out.search_tree
        if self.select == "max":
            action = _best_child(tree, best_returns(tree), jnp.zeros((b,), jnp.int32), mask)
        elif self.method == "gumbel":
            action = out.action
        else:
            action = _most_visited(tree, mask)
        summary = tree.summary()
        return action.astype(jnp.int32), summary.value, summary.visit_counts, tree


def best_returns(tree: mctx.Tree) -> jax.Array:
    """float32 [B, N]: max-backup value of every node: the best discovered return below it,
    ``max_a (r_a + discount_a * best[child_a])`` over its expanded children, or the node's
    value estimate if it has none. Children have larger node indices than their parent
    (mctx appends nodes), so one reverse sweep over the nodes computes it."""
    n = tree.node_values.shape[1]

    def one(children_index, rewards, discounts, values):
        def body(i, best):
            node = n - 1 - i
            child = children_index[node]
            expanded = child >= 0
            cand = rewards[node] + discounts[node] * best[jnp.maximum(child, 0)]
            top = jnp.max(jnp.where(expanded, cand, -jnp.inf))
            return best.at[node].set(jnp.where(expanded.any(), top, values[node]))
        return jax.lax.fori_loop(0, n, body, values)

    return jax.vmap(one)(tree.children_index, tree.children_rewards, tree.children_discounts, tree.node_values)


def _best_child(tree: mctx.Tree, best, node, mask=None):
    """[B]: the expanded child of ``node`` [B] with the largest ``r + discount * best[child]``."""
    b = jnp.arange(tree.children_index.shape[0])
    child = tree.children_index[b, node]                                        # [B, A]
    q = tree.children_rewards[b, node] + tree.children_discounts[b, node] * jnp.take_along_axis(
        best, jnp.maximum(child, 0), axis=1)
    ok = child >= 0
    if mask is not None:
        ok = ok & mask
    return jnp.argmax(jnp.where(ok, q, -jnp.inf), axis=-1).astype(jnp.int32)


def _most_visited(tree: mctx.Tree, mask) -> jax.Array:
    """int32 [B]: the legal root child with the most visits (ties: larger Q, then lower index)."""
    s = tree.summary()
    q = jnp.where(s.visit_counts > 0, s.qvalues, -jnp.inf)
    score = s.visit_counts.astype(jnp.float32) + 1e-3 * jax.nn.sigmoid(q)
    return jnp.argmax(jnp.where(mask, score, NEG_INF), axis=-1).astype(jnp.int32)


def principal_variation(tree: mctx.Tree, length: int, select: str = "max") -> tuple[jax.Array, jax.Array]:
    """The best path from the root of each tree, by ``select`` (``max``: the child with the best
    discovered return at every node; ``visits``: the most visited child): (actions int32
    [B, length], valid bool [B, length]); ``valid`` is False from the first step whose node
    has no expanded child."""
    if select not in SELECTS:
        raise ValueError(f"select must be one of {SELECTS}, got {select!r}")
    b = tree.children_index.shape[0]
    best = best_returns(tree) if select == "max" else None
    rows = jnp.arange(b)

    def body(c, _):
        node, ok = c
        if best is None:
            a = jnp.argmax(tree.children_visits[rows, node], axis=-1).astype(jnp.int32)
        else:
            a = _best_child(tree, best, node)
        child = tree.children_index[rows, node, a]
        ok = ok & (child >= 0)
        return (jnp.where(ok, child, node), ok), (a, ok)

    init = (jnp.full((b,), mctx.Tree.ROOT_INDEX, jnp.int32), jnp.ones((b,), bool))
    _, (acts, ok) = jax.lax.scan(body, init, None, length=length)
    return acts.T, ok.T


@register_controller("mcts")
def _make_mcts(cfg, model_reset=None, model_step=None, prior_fn=None, model_params=None, prior_params=None, **_):
    if model_reset is None or model_step is None or prior_fn is None:
        raise ValueError("controller 'mcts' needs model_reset=, model_step= (the imagined env) and prior_fn=")
    return MCTS(model_reset, model_step, prior_fn, model_params, prior_params, **section_kwargs(cfg, "mcts"))
