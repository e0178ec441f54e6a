"""GraphRewrite-v0: gymnasium compliance, determinism, rewards, masks, truncation."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import systems_envs  # noqa: F401  (registers GraphRewrite-v0)
from systems_envs.graph.executor import execute
from systems_envs.graph.ir import GraphError
from systems_envs.rewrite.env import GraphRewriteEnv
from tests.systems_envs.rewrite.test_candidates import random_graph, toy_rules


def make(graph=None, **kw):
    kw.setdefault("rules", toy_rules())
    kw.setdefault("max_nodes", 128)
    kw.setdefault("max_edges", 256)
    kw.setdefault("max_candidates", 32)
    return GraphRewriteEnv(random_graph(0, n_layers=30) if graph is None else graph, **kw)


def rollout(env, seed, n=200):
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = [obs]
    rewards = []
    for _ in range(n):
        legal = np.flatnonzero(obs["action_mask"][:-1])
        a = int(rng.choice(legal)) if len(legal) and rng.random() > 0.05 else env.max_candidates
        obs, r, term, trunc, info = env.step(a)
        out.append(obs)
        rewards.append(r)
        if term or trunc:
            break
    return out, rewards, info, term, trunc


def test_check_env_and_registration():
    env = gym.make("GraphRewrite-v0", graph=random_graph(1, n_layers=20), rules=toy_rules(),
                   max_nodes=128, max_edges=256, max_candidates=16)
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert env.action_space.n == 17


def test_same_seed_same_episode():
    env = make(graph=[random_graph(0, n_layers=30), random_graph(1, n_layers=30)])
    a = rollout(env, 7)
    b = rollout(env, 7)
    assert len(a[0]) == len(b[0]) and a[1] == b[1]
    for x, y in zip(a[0], b[0]):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_reward_sum_is_relative_reduction_and_semantics_kept():
    g = random_graph(2, n_layers=30)
    env = make(graph=g, max_steps=500)
    _, rewards, info, term, _ = rollout(env, 3)
    assert term
    assert sum(rewards) == pytest.approx(1 - info["cost_ms"] / info["initial_cost_ms"], abs=1e-9)
    for x, y in zip(execute(g, seed=1, dtype=np.float64), execute(env.graph, seed=1, dtype=np.float64)):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-9)


def test_mask_semantics_and_illegal_action():
    env = make(max_candidates=4)
    obs, info = env.reset(seed=0)
    mask = obs["action_mask"]
    assert mask.dtype == np.int8 and mask[-1] == 1
    assert mask[:-1].sum() == min(4, info["n_candidates"]) == (obs["candidate_rule"] >= 0).sum()
    # candidates beyond capacity are dropped: the first ones in index order are offered
    assert [env.rules[c.rule_id].name for c in env.index.candidates[:4]] == \
        [env.rules[r].name for r in obs["candidate_rule"] if r >= 0]
    env2 = make(max_candidates=64)
    obs2, _ = env2.reset(seed=0)
    illegal = int(np.flatnonzero(obs2["action_mask"] == 0)[0])
    with pytest.raises(ValueError, match="illegal"):
        env2.step(illegal)
    with pytest.raises(ValueError, match="illegal"):
        env2.step(10_000)
    # stop terminates with zero reward
    _, r, term, trunc, _ = env2.step(64)
    assert term and not trunc and r == 0.0


def test_observation_layout():
    env = make()
    obs, _ = env.reset(seed=0)
    n, m = int(obs["n_node"][0]), int(obs["n_edge"][0])
    g = env.graph
    assert n == len(g) and m == sum(len(x.inputs) for x in g.nodes.values())
    assert (obs["senders"][m:] == env.max_nodes - 1).all() and (obs["receivers"][m:] == env.max_nodes - 1).all()
    assert (obs["senders"][:m] < n).all() and (obs["receivers"][:m] < n).all()
    assert (obs["senders"][:m] < obs["receivers"][:m]).all()  # topological layout
    assert (obs["node_features"][n:] == 0).all()
    onehot = obs["node_features"][:n, : len(__import__("systems_envs.graph.ops", fromlist=["OPS"]).OPS)]
    assert (onehot.sum(1) == 1).all()
    cn = obs["candidate_nodes"][obs["candidate_rule"] >= 0]
    assert (cn[:, 0] >= 0).all() and (cn < n).all()


def test_truncation_at_max_steps():
    env = make(max_steps=3)
    obs, _ = env.reset(seed=0)
    for t in range(3):
        obs, _, term, trunc, info = env.step(0)
        assert not term
        assert trunc == (t == 2)
    assert obs["globals"][1] == pytest.approx(1.0)


def test_capacity_error_names_graph():
    with pytest.raises(GraphError, match="random0.*capacity"):
        make(max_nodes=10)
