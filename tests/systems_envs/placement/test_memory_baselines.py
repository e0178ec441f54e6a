"""Non-learned memory mappings: valid, at least the compiler default where they start from it."""
import gymnasium as gym
import numpy as np
import pytest

import systems_envs  # noqa: F401
from systems_envs.placement.memory import evaluate_mapping, greedy_mapping
from systems_envs.placement.memory_baselines import MEMORY_BASELINES, run_memory_baseline


@pytest.mark.parametrize("graph", ["squeezenet", "resnet50"])
def test_memory_baselines_are_valid_and_anneal_never_loses(graph):
    env = gym.make("MemoryPlacement-v0", graph=graph).unwrapped
    res = {m: run_memory_baseline(env.lg, env.acc, m, 0, **({"iters": 50} if m == "anneal" else {}))
           for m in MEMORY_BASELINES}
    for (w, a), r in res.values():
        assert r.valid and r.throughput > env.baseline.throughput
        assert w.shape == a.shape == (len(env.lg),) and w.min() >= 0 and a.max() < env.M
    comp = evaluate_mapping(env.lg, env.acc, *greedy_mapping(env.lg, env.acc)).throughput
    assert res["compiler"][1].throughput == comp
    assert res["anneal"][1].throughput >= max(comp, res["gain_density"][1].throughput)
    again = run_memory_baseline(env.lg, env.acc, "anneal", 0, iters=50)[0]
    assert all(np.array_equal(x, y) for x, y in zip(again, res["anneal"][0]))


def test_unknown_memory_method():
    env = gym.make("MemoryPlacement-v0", graph="squeezenet").unwrapped
    with pytest.raises(ValueError, match="unknown memory mapping method 'best'"):
        run_memory_baseline(env.lg, env.acc, "best")
