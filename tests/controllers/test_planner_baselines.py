"""Planner beats random on a toy model with delayed reward; baselines respect masks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from controllers import make_controller
from controllers.baselines import GreedyController, RandomController, SearchController
from controllers.planner import Planner
from controllers.toy_envs import CountCash, GraphBandit

ENV = CountCash()


def _episode_return(ctrl, state, seed, steps=ENV.horizon):
    key = jax.random.PRNGKey(seed)
    s, ts = ENV.reset(None, key)
    obs, ret = ts.observation, 0.0
    for t in range(steps):
        key, k1, k2 = jax.random.split(key, 3)
        a = int(ctrl.act(state, obs, k1))
        assert obs["action_mask"][a] == 1
        s, ts = ENV.step(None, s, jnp.int32(a), k2)
        obs, ret = ts.observation, ret + float(ts.reward)
        if bool(ts.terminated) or bool(ts.truncated):
            break
    return ret


def test_planner_beats_random_and_myopic():
    cem = Planner(ENV.reset, ENV.step, None, method="cem", horizon=8, num_samples=64, num_elites=8, iterations=3)
    rs = Planner(ENV.reset, ENV.step, None, method="random", horizon=8, num_samples=64, num_elites=8)
    rnd = RandomController()
    _, ts = ENV.reset(None, jax.random.PRNGKey(0))
    st = cem.init(jax.random.PRNGKey(0), ts.observation)
    r_cem = np.mean([_episode_return(cem, st, s) for s in range(3)])
    r_rs = np.mean([_episode_return(rs, st, s) for s in range(3)])
    r_rnd = np.mean([_episode_return(rnd, (), s) for s in range(20)])
    # myopic policy: cash as soon as cashing pays more than incrementing
    greedy = GreedyController(lambda o: np.array([-0.1, (o["x"][0] * 5) ** 2 / 5, 0.0]))
    r_greedy = _episode_return(greedy, (), 0)
    assert r_cem > 4.0 and r_cem > r_rnd + 2.0 and r_cem > r_greedy + 1.0, (r_cem, r_rnd, r_greedy)
    assert r_rs > r_rnd, (r_rs, r_rnd)


def test_planner_first_action_legal_under_masks():
    p = Planner(ENV.reset, ENV.step, None, method="cem", horizon=4, num_samples=16, num_elites=4, iterations=2)
    st = p.init(jax.random.PRNGKey(0), ENV.reset(None, jax.random.PRNGKey(0))[1].observation)
    for c in range(6):
        obs = ENV.observation((jnp.int32(c), jnp.int32(0)))
        for seed in range(3):
            a = int(p.act(st, obs, jax.random.PRNGKey(seed)))
            assert obs["action_mask"][a] == 1


def test_random_greedy_search_masks():
    env = GraphBandit()
    _, ts = env.reset(None, jax.random.PRNGKey(3))
    obs = dict(ts.observation)
    obs["action_mask"] = jnp.array([0, 1, 0, 1, 1], jnp.int8)
    rnd = RandomController()
    acts = {int(rnd.act((), obs, k)) for k in jax.random.split(jax.random.PRNGKey(0), 50)}
    assert acts == {1, 3, 4}
    g = GreedyController(lambda o: np.array([9.0, 1.0, 8.0, 2.0, 0.0]))
    assert g.act((), obs) == 3
    s = SearchController(lambda o: [3, 1])
    assert s.act((), obs) == 3
    with pytest.raises(ValueError, match="not legal"):
        SearchController(lambda o: 0).act((), obs)
    with pytest.raises(ValueError, match="scores"):
        GreedyController(lambda o: np.zeros(3)).act((), obs)


def test_registry_baselines_and_planner():
    assert isinstance(make_controller("random"), RandomController)
    assert isinstance(make_controller("greedy", score_fn=lambda o: o), GreedyController)
    assert isinstance(make_controller("search", search_fn=lambda o: 0), SearchController)
    from worldmodels.config import ControllerConfig, PlannerConfig
    p = make_controller("planner", ControllerConfig(planner=PlannerConfig(method="random", horizon=3)),
                        model_reset=ENV.reset, model_step=ENV.step)
    assert isinstance(p, Planner) and p.H == 3
    with pytest.raises(ValueError, match="model_step"):
        make_controller("planner")
