"""The per-candidate ``candidate_reward`` feature of GraphRewrite-v0 (``systems_envs.rewrite.deltas``)."""
from __future__ import annotations

import numpy as np
import pytest

from systems_envs.graph.load import load_graph
from systems_envs.rewrite.env import GraphRewriteEnv
from systems_envs.rewrite.ruleset import default_rules
from systems_envs.rewrite.search import greedy


@pytest.fixture(scope="module")
def rules():
    return default_rules()


def _fresh_rewards(env, initial_cost) -> np.ndarray:
    """The reward of every offered candidate by a full look-ahead (independent of the cache)."""
    idx = env.index
    n = min(len(idx), env.max_candidates)
    return np.array([(idx.cost - idx.preview(i).cost) / initial_cost for i in range(n)])


@pytest.mark.parametrize("graph", ["squeezenet", "nasrnn", "gen:rnn:seed=1",
                                   pytest.param("gen:inception:seed=2", marks=pytest.mark.slow)])
def test_feature_is_exact_and_is_the_step_reward(rules, graph):
    env = GraphRewriteEnv(graph, rules=rules, max_candidates=64, max_steps=20, max_nodes=4096, max_edges=8192)
    for episode in range(2):
        obs, info = env.reset(seed=episode)
        rng = np.random.default_rng(episode)
        done = False
        while not done:
            fresh = _fresh_rewards(env, info["initial_cost_ms"])
            got = obs["candidate_reward"]
            np.testing.assert_allclose(got[: len(fresh)], fresh, rtol=1e-6, atol=1e-12)
            assert not got[len(fresh):].any()
            legal = np.flatnonzero(obs["action_mask"][:-1])
            if not len(legal):
                break
            a = int(rng.choice(legal))
            promised = float(got[a])
            obs, reward, term, trunc, info = env.step(a)
            assert reward == pytest.approx(promised, rel=1e-6, abs=1e-12)
            done = term or trunc


def _feature_policy(obs, eps_abs: float) -> int:
    """Score candidates by the feature alone: the largest reward if it beats ``eps_abs``, else stop."""
    legal = obs["action_mask"][:-1].astype(bool)
    scores = np.where(legal, obs["candidate_reward"], -np.inf)
    best = int(np.argmax(scores))
    return best if legal.any() and scores[best] > eps_abs else len(obs["action_mask"]) - 1


@pytest.mark.parametrize("graph", ["squeezenet", "resnet50", "gen:transformer:seed=4",
                                   pytest.param("gen:mobilenet:seed=1", marks=pytest.mark.slow)])
def test_policy_on_the_feature_alone_reproduces_greedy(rules, graph):
    g = load_graph(graph)
    ref = greedy(g, rules)
    env = GraphRewriteEnv(graph, rules=rules, max_candidates=2048, max_steps=10_000, max_nodes=4096, max_edges=8192)
    obs, info = env.reset(seed=0)
    c0 = info["initial_cost_ms"]
    path = []
    while True:
        # greedy's threshold: a rewrite must lower the cost by more than 1e-9 * max(1, cost)
        a = _feature_policy(obs, 1e-9 * max(1.0, info["cost_ms"]) / c0)
        # greedy's choice in this state, by exact look-ahead: the feature's choice is as good
        # (the float32 feature can tie candidates greedy tells apart below 1e-6 relative)
        best = float(np.max(_fresh_rewards(env, c0), initial=0.0))
        if a == env.max_candidates:
            assert best * c0 <= 1e-9 * max(1.0, info["cost_ms"])
            break
        assert (env.index.cost - env.index.preview(a).cost) / c0 == pytest.approx(best, rel=1e-6)
        path.append(env.index.describe(a))
        obs, _, term, trunc, info = env.step(a)
        assert not trunc
        if term:
            break
    assert len(path) == len(ref.rewrites)
    assert sorted(r for r, _ in path) == sorted(r for r, _ in ref.rewrites)
    assert info["cost_ms"] == pytest.approx(ref.cost_after, rel=1e-9)


def test_switched_off_gives_zeros(rules):
    env = GraphRewriteEnv("squeezenet", rules=rules, candidate_rewards=False)
    obs, _ = env.reset(seed=0)
    assert obs["candidate_reward"].shape == (env.max_candidates,) and not obs["candidate_reward"].any()
    on = GraphRewriteEnv("squeezenet", rules=rules)
    obs_on, _ = on.reset(seed=0)
    assert (obs_on["candidate_reward"] > 0).any()
    assert env.observation_space.contains(obs) and on.observation_space.contains(obs_on)
