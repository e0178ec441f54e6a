"""Non-learned controllers: random over legal actions, greedy over a one-step score, and a
wrapper that turns a search routine (e.g. TASO-style backtracking) into a controller.

The greedy and search controllers call arbitrary Python (e.g. a real simulator), so they
are not jitted; ``act`` works on one NumPy or JAX observation.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from controllers.base import get_mask, random_legal_action, register_controller


class RandomController:
    """Uniform over the legal actions."""

    def __init__(self):
        self.act = jax.jit(lambda state, obs, key: random_legal_action(key, get_mask(obs)))

    def init(self, key, example_obs):
        get_mask(example_obs)
        return ()

    def update(self, state, batch):
        return state, {}


class GreedyController:
    """argmax over legal actions of ``score_fn(obs) -> [A+1]`` (e.g. the env's reward of
    applying each candidate; higher is better). Ties go to the lowest index."""

    def __init__(self, score_fn: Callable[[Any], Any]):
        self.score_fn = score_fn

    def init(self, key, example_obs):
        get_mask(example_obs)
        return ()

    def act(self, state, obs, key=None) -> int:
        mask = np.asarray(get_mask(obs))
        scores = np.asarray(self.score_fn(obs), dtype=np.float64).reshape(-1)
        if scores.shape != mask.shape:
            raise ValueError(f"greedy: score_fn returned {scores.shape[0]} scores for {mask.shape[0]} actions")
        return int(np.argmax(np.where(mask, scores, -np.inf)))

    def update(self, state, batch):
        return state, {}


class SearchController:
    """Wraps ``search_fn(obs) -> action or sequence of actions`` (a plan from the current
    state); ``act`` returns its first action, re-searching at every step. A search that
    returns an illegal action is an error (not silently replaced)."""

    def __init__(self, search_fn: Callable[[Any], int | Sequence[int]]):
        self.search_fn = search_fn

    def init(self, key, example_obs):
        get_mask(example_obs)
        return ()

    def act(self, state, obs, key=None) -> int:
        mask = np.asarray(get_mask(obs))
        plan = self.search_fn(obs)
        plan = np.atleast_1d(np.asarray(plan))
        a = int(plan[0]) if plan.size else mask.shape[0] - 1   # empty plan = stop
        if not (0 <= a < mask.shape[0]) or not mask[a]:
            raise ValueError(f"search: returned action {a}, which is not legal in this state")
        return a

    def update(self, state, batch):
        return state, {}


@register_controller("random")
def _make_random(cfg, **_):
    return RandomController()


@register_controller("greedy")
def _make_greedy(cfg, score_fn=None, **_):
    if score_fn is None:
        raise ValueError("controller 'greedy' needs score_fn= (obs -> score of each action)")
    return GreedyController(score_fn)


@register_controller("search")
def _make_search(cfg, search_fn=None, **_):
    if search_fn is None:
        raise ValueError("controller 'search' needs search_fn= (obs -> action or plan)")
    return SearchController(search_fn)
