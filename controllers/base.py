"""The controller interface, observation helpers shared by all controllers, and the registry.

A controller is an object with three methods (static config lives on the object, all
learned/mutable things in the returned state pytree):

- ``init(key, example_obs) -> state``
- ``act(state, obs, key) -> action``: one observation (unbatched) -> int32 action in
  ``[0, A]`` (``A`` = stop). Never an illegal action: ``obs["action_mask"][action] == 1``.
- ``update(state, batch) -> (state, metrics)``

Observations are dicts of arrays (the GraphRewrite-v0 layout: ``node_features`` [N, F],
``edge_features`` [M, E], ``senders``/``receivers`` [M], ``n_node``/``n_edge`` (1,),
``globals`` [G], ``action_mask`` int8 [A+1], ``candidate_rule`` [A], ``candidate_nodes``
[A, K], ``candidate_reward`` [A]); a controller only relies on the keys it needs, always on
``action_mask``.

Imagined environments are pure functions ``reset(params, key, start) -> (state, TimeStep)``
and ``step(params, state, action, key) -> (state, TimeStep)``.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from controllers.registry import Registry

NEG_INF = -1e9  # logit of an illegal action (exp underflows to exactly 0 in float32)


class TimeStep(NamedTuple):
    """What an imagined env step returns (leading batch dims allowed)."""

    observation: Any          # dict of arrays incl. "action_mask" int8 [A+1]
    reward: jax.Array         # float32 []
    terminated: jax.Array     # bool []: the episode really ended (no bootstrap)
    truncated: jax.Array      # bool []: cut by a time limit (bootstrap from the value)


class Controller(Protocol):
    def init(self, key: jax.Array, example_obs: Any) -> Any: ...

    def act(self, state: Any, obs: Any, key: jax.Array) -> jax.Array: ...

    def update(self, state: Any, batch: Any) -> tuple[Any, dict]: ...


def timestep_obs(ts: Any) -> dict:
    """The observation of a timestep, with ``action_mask`` merged in if it is carried on the
    timestep itself rather than in the observation."""
    obs = ts.observation
    if isinstance(obs, dict) and "action_mask" not in obs and hasattr(ts, "action_mask"):
        obs = {**obs, "action_mask": ts.action_mask}
    return obs


def get_mask(obs: Any) -> jax.Array:
    """bool [..., A+1] legal-action mask of an observation."""
    try:
        return jnp.asarray(obs["action_mask"]) > 0
    except (KeyError, TypeError):
        raise ValueError("observation has no 'action_mask' entry (required by every controller)") from None


def candidate_reward_feature(obs: Any, num_candidates: int) -> jax.Array:
    """float32 [A]: each candidate's immediate reward (``obs["candidate_reward"]``, the
    relative cost decrease greedy ranks by; zeros if the observation has none) on a unit
    scale, ``sign(x) log(1 + |x|)`` with ``x = 1e3 r`` (strictly increasing: the same
    ranking; the same map as the world model's `dynamics.heads.reward_feature`)."""
    if "candidate_reward" not in obs:
        return jnp.zeros((num_candidates,), jnp.float32)
    x = 1e3 * jnp.asarray(obs["candidate_reward"], jnp.float32).reshape(num_candidates)
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def masked_logits(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Illegal actions get logit ``NEG_INF``; sampling/argmax never picks them while the
    stop action (last) is legal."""
    return jnp.where(mask, logits, NEG_INF)


def random_legal_action(key: jax.Array, mask: jax.Array) -> jax.Array:
    """Uniform over the legal actions of a bool [A+1] mask (int32 scalar)."""
    return jax.random.categorical(key, masked_logits(jnp.zeros(mask.shape, jnp.float32), mask)).astype(jnp.int32)


def next_pow2(n: int, minimum: int = 1) -> int:
    n = max(int(n), minimum)
    return 1 << (n - 1).bit_length()


def pad_observation(obs: dict, n_cap: int, m_cap: int) -> dict:
    """Pad a graph observation (NumPy) to ``n_cap`` nodes and ``m_cap`` edges (zeros;
    padding is masked by ``n_node``/``n_edge``). Other keys are passed through."""
    out = dict(obs)
    if "node_features" in obs:
        nf = np.asarray(obs["node_features"])
        if nf.shape[0] > n_cap:
            raise ValueError(f"observation has {nf.shape[0]} nodes, more than the capacity {n_cap}")
        out["node_features"] = np.pad(nf, ((0, n_cap - nf.shape[0]), (0, 0)))
    for k in ("edge_features", "senders", "receivers"):
        if k in obs:
            a = np.asarray(obs[k])
            if a.shape[0] > m_cap:
                raise ValueError(f"observation has {a.shape[0]} edges, more than the capacity {m_cap}")
            out[k] = np.pad(a, [(0, m_cap - a.shape[0])] + [(0, 0)] * (a.ndim - 1))
    return out


def stack_observations(obs_list: list[dict], n_cap: int | None = None, m_cap: int | None = None) -> dict:
    """Pad a list of graph observations to common capacities (default: next power of two of
    the largest, so jit compiles once per bucket) and stack them on a new leading axis."""
    if not obs_list:
        raise ValueError("stack_observations: empty list")
    if "node_features" in obs_list[0]:
        n_max = max(np.asarray(o["node_features"]).shape[0] for o in obs_list)
        m_max = max(np.asarray(o["senders"]).shape[0] for o in obs_list) if "senders" in obs_list[0] else 0
        n_cap = n_cap or next_pow2(n_max)
        m_cap = m_cap or next_pow2(m_max)
        obs_list = [pad_observation(o, n_cap, m_cap) for o in obs_list]
    return {k: np.stack([np.asarray(o[k]) for o in obs_list]) for k in obs_list[0]}


# ----------------------------------------------------------------------------- registry

CONTROLLERS = Registry("controller")


def register_controller(name: str):
    """Decorator: ``@register_controller("ppo")`` on a factory ``f(cfg, **deps) -> Controller``."""
    return CONTROLLERS.register(name)


def make_controller(name: str, cfg: Any = None, **deps: Any) -> Any:
    """Build a controller by registry name from a ``ControllerConfig``-like object with
    sections ``ppo``/``cmaes``/``planner`` (``None`` = each controller's defaults).

    ``deps`` are the things a controller needs besides config (e.g. ``model_step`` for
    the planner, ``score_fn`` for greedy, ``search_fn`` for search)."""
    import controllers  # noqa: F401  (imports register all built-in controllers)

    return CONTROLLERS.get(name)(cfg, **deps)


def section_kwargs(cfg: Any, section: str) -> dict:
    """Fields of ``cfg.<section>`` (a dataclass or dict; missing -> {}) as constructor kwargs.
    Duck-typed so that controllers do not import the config module (no package cycle)."""
    import dataclasses
    sub = getattr(cfg, section, None) if cfg is not None and not isinstance(cfg, dict) else (cfg or {}).get(section)
    if sub is None:
        return {}
    return dataclasses.asdict(sub) if dataclasses.is_dataclass(sub) else dict(sub)


def registered_controllers() -> list[str]:
    import controllers  # noqa: F401
    return CONTROLLERS.names()
