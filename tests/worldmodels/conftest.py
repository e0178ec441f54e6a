"""Shared fixtures of the world-model tests: a small seeded replay store with a fresh world model."""
import jax
import pytest

from worldmodels.replay import collect
from worldmodels.world_model import WorldModel


@pytest.fixture(scope="session")
def small_world():
    """Factory ``(cfg, episodes, seed, max_steps, horizon) -> (store, wm, params)``: random-policy
    episodes of GraphRewrite-v0 on squeezenet (16 candidate slots), a gn + mdnrnn world model for
    that store and its parameters initialised with ``jax.random.key(0)``."""
    def make(cfg, episodes, seed, max_steps, horizon):
        store = collect("GraphRewrite-v0", ["squeezenet"], episodes, "random", seed=seed,
                        env_kwargs=dict(max_candidates=16, max_steps=max_steps), horizon=horizon)
        wm = WorldModel.for_replay(cfg, store)
        return store, wm, wm.init(jax.random.key(0), store)
    return make
