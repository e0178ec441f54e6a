"""Beam search on the real simulator (`controllers.beam`) and `GraphRewriteEnv.clone`: a clone
steps independently of its source; with a policy that ranks candidates by their immediate
reward, width 1 is greedy search, and wider beams return valid, equivalent graphs."""
import numpy as np

from controllers.beam import beam_search
from systems_envs.graph.executor import execute
from systems_envs.graph.load import load_graph
from systems_envs.rewrite.env import GraphRewriteEnv
from systems_envs.rewrite.search import greedy


def _env(name="squeezenet"):
    return GraphRewriteEnv(name, max_nodes=1024, max_edges=2048, max_candidates=256, max_steps=100)


def _greedy_policy(observations):
    """log-softmax over candidate_reward (illegal: -inf); stop scores 0, so it is the most
    probable action exactly when no candidate lowers the cost."""
    out = []
    for o in observations:
        logits = np.append(1e3 * np.asarray(o["candidate_reward"], np.float64), 0.0)
        logits = np.where(np.asarray(o["action_mask"]) > 0, logits, -np.inf)
        out.append(logits - np.logaddexp.reduce(logits))
    return np.stack(out)


def test_a_clone_steps_independently_of_its_source():
    env = _env()
    obs, _ = env.reset(seed=0)
    cost = env.index.cost
    clone = env.clone()
    o2, r, *_ = clone.step(0)
    assert env.index.cost == cost and clone.index.cost != cost
    o1, r1, *_ = env.step(0)          # the source still takes the same step to the same state
    assert r1 == r and env.index.cost == clone.index.cost
    for k in o1:
        np.testing.assert_array_equal(o1[k], o2[k])


def test_width_one_is_greedy_and_wider_beams_stay_equivalent():
    g = load_graph("squeezenet")
    env = _env()
    obs, _ = env.reset(seed=0)
    one = beam_search(env, obs, _greedy_policy, width=1, expand=1)
    ref = greedy(g, env.rules, env.cost_model)
    assert one.cost_after == ref.cost_after and len(one.rewrites) == len(ref.rewrites)
    wide = beam_search(env, obs, _greedy_policy, width=3, expand=2)
    assert wide.cost_after <= wide.cost_before and wide.expanded > one.expanded
    assert env.index.cost == one.cost_before          # the searches never step the env itself
    wide.graph.validate()
    for a, b in zip(execute(g, seed=1), execute(wide.graph, seed=1)):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(a).max())))


def test_policy_alone_returns_the_cheapest_graph_along_its_path():
    """Width 1 follows the policy step by step (checked against stepping a second env by hand)
    and returns the cheapest graph seen, also when later steps raise the cost."""
    env = _env()
    obs, _ = env.reset(seed=0)

    def worst_first(observations):      # least reward first, stop after 6 rewrites
        o = observations[0]
        legal = np.asarray(o["action_mask"]) > 0
        logits = np.append(-1e3 * np.asarray(o["candidate_reward"], np.float64), -np.inf)
        if o["globals"][1] >= 6 / 100 or not legal[:-1].any():
            logits[:] = -np.inf
            logits[-1] = 0.0
        return np.where(legal, logits, -np.inf)[None]

    res = beam_search(env, obs, worst_first, width=1, expand=1)
    assert res.expanded == 6
    hand = _env()
    o, _ = hand.reset(seed=0)
    costs = [hand.index.cost]
    for _ in range(6):
        lp = worst_first([o])[0]
        legal = np.flatnonzero(np.asarray(o["action_mask"]) > 0)
        o, *_ = hand.step(int(legal[np.argsort(-lp[legal], kind="stable")[0]]))
        costs.append(hand.index.cost)
    assert res.cost_after == min(costs) and res.cost_before == costs[0]
    assert len(res.rewrites) == int(np.argmin(costs))      # the rewrites that lead to the best graph
    assert env.index.cost == costs[0]
