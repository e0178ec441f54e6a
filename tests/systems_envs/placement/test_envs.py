"""DevicePlacement-v0 and MemoryPlacement-v0: check_env, rewards, masks, determinism."""
import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import systems_envs.placement  # noqa: F401  (registers the environments)
from systems_envs.placement.env import DevicePlacementEnv
from systems_envs.placement.memory import Accelerator, MemoryLevel, evaluate_mapping, greedy_mapping, layer_graph
from systems_envs.placement.memory_env import MemoryPlacementEnv
from systems_envs.placement.simulator import simulate

from .conftest import branchy


def rollout(env, seed, actions=None):
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    traj, done = [], False
    while not done:
        a = env.action_space.sample() if actions is None else actions(obs)
        obs, r, done, trunc, info = env.step(a)
        traj.append((int(a), r, obs["nodes"].sum()))
    return traj, info


def test_device_env_check_env_and_registration():
    env = DevicePlacementEnv(branchy(), "gpu2")
    check_env(env, skip_render_check=True)
    env2 = gym.make("DevicePlacement-v0", graph=branchy(), devices="gpu4", reward="speedup", groups=3)
    check_env(env2.unwrapped, skip_render_check=True)
    assert env2.unwrapped.num_groups == math.ceil(env2.unwrapped.cg.n / 3)


@pytest.mark.parametrize("reward", ["neg_runtime", "neg_sqrt_runtime", "speedup"])
def test_device_env_final_reward_matches_simulator(reward):
    env = DevicePlacementEnv(branchy(), "gpu4", reward=reward)
    traj, info = rollout(env, 0)
    assert all(r == 0.0 for _, r, _ in traj[:-1])
    t = simulate(env.cg, info["placement"]).step_time_ms
    assert info["step_time_ms"] == pytest.approx(t)
    expect = {"neg_runtime": -t, "neg_sqrt_runtime": -math.sqrt(t), "speedup": env.single_ms / t}[reward]
    assert traj[-1][1] == pytest.approx(expect)


def test_device_env_oom_reward_and_mask():
    g = branchy(branches=2, depth=4, batch=1, ch=256, hw=8)  # 8 x 2.36 MB weights
    env = DevicePlacementEnv(g, "gpu2", reward="speedup")
    small = env.cg.devices.with_memory(13e6)
    env = DevicePlacementEnv(g, small, reward="speedup")
    traj, info = rollout(env, 0, actions=lambda obs: 0)  # everything on device 0
    assert not info["valid"] and traj[-1][1] == -1.0
    masked, info = rollout(env, 0, actions=lambda obs: int(np.flatnonzero(obs["action_mask"])[0]))
    assert info["valid"] and masked[-1][1] > 0


def test_device_env_groups_and_observation():
    env = DevicePlacementEnv(branchy(), "gpu4", groups=4)
    obs, _ = env.reset(seed=1)
    col = env._next_col
    assert obs["nodes"][:, col].sum() == 4 and obs["nodes"][:, env._unplaced_col].all()
    obs, *_ = env.step(2)
    assert (obs["nodes"][:4, env._dev_col + 2] == 1).all()
    with pytest.raises(ValueError, match="groups"):
        DevicePlacementEnv(branchy(), "gpu4", groups=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="unknown reward"):
        DevicePlacementEnv(branchy(), "gpu4", reward="fast")


@pytest.mark.parametrize("groups", [None, 3])
def test_device_env_hint_feature_and_relative_actions(groups):
    from systems_envs.placement.baselines import etf
    plain = DevicePlacementEnv(branchy(), "gpu4", reward="speedup", groups=groups)
    env = DevicePlacementEnv(branchy(), "gpu4", reward="speedup", groups=groups, hint="etf")
    n, D = env.cg.n, env.cg.num_devices
    obs, _ = env.reset(seed=0)
    assert obs["nodes"].shape == (n, plain._base.shape[1] + D) == env.observation_space["nodes"].shape
    np.testing.assert_array_equal(obs["nodes"][:, : plain._base.shape[1]], plain.reset(seed=0)[0]["nodes"])
    hint = etf(env.cg)   # the hint columns are the baseline's placement
    np.testing.assert_array_equal(env.hint_placement, hint)
    np.testing.assert_array_equal(np.argmax(obs["nodes"][:, -D:], axis=1), hint)
    assert obs["nodes"][:, -D:].sum() == n
    # action 0 everywhere reproduces the baseline exactly; action a rotates by a
    traj, info = rollout(env, 0, actions=lambda o: 0)
    np.testing.assert_array_equal(info["placement"], hint)
    assert traj[-1][1] == pytest.approx(env.single_ms / simulate(env.cg, hint).step_time_ms)
    _, info = rollout(env, 0, actions=lambda o: 1)
    np.testing.assert_array_equal(info["placement"], (hint + 1) % D)
    check_env(env, skip_render_check=True)
    with pytest.raises(ValueError, match="hint: unknown baseline"):
        DevicePlacementEnv(branchy(), "gpu4", hint="oracle")


def test_device_env_hint_mask_checks_each_device_the_group_lands_on():
    g = branchy(branches=2, depth=4, batch=1, ch=256, hw=8)  # 8 x 2.36 MB weights
    small = DevicePlacementEnv(g, "gpu2").cg.devices.with_memory(13e6)
    env = DevicePlacementEnv(g, small, reward="speedup", hint="single")   # hint: all on one device
    _, info = rollout(env, 0, actions=lambda obs: 0)
    assert not info["valid"]
    _, info = rollout(env, 0, actions=lambda obs: int(np.flatnonzero(obs["action_mask"])[0]))
    assert info["valid"]
    # without a hint the relative mask is the absolute one
    a = DevicePlacementEnv(g, small, reward="speedup")
    b = DevicePlacementEnv(g, small, reward="speedup", hint="single")
    oa, ob = a.reset(seed=0)[0], b.reset(seed=0)[0]
    h = int(b.hint_placement[0])
    np.testing.assert_array_equal(ob["action_mask"], np.roll(oa["action_mask"], -h))


def test_device_env_seeded_determinism():
    a = rollout(DevicePlacementEnv(branchy(), "gpu4"), 7)[0]
    b = rollout(DevicePlacementEnv(branchy(), "gpu4"), 7)[0]
    c = rollout(DevicePlacementEnv(branchy(), "gpu4"), 8)[0]
    assert a == b and a != c


# ---------------------------------------------------------------- memory placement

def test_memory_roofline_hand_computed():
    from systems_envs.graph.ir import Graph

    g = Graph("one")
    x = g.input("x", (1, 1000))
    g.set_outputs([g.add("linear", [x, g.weight("w", (1000, 1000))])])
    lg = layer_graph(g)
    assert len(lg) == 1 and lg.w_bytes[0] == 4e6 and lg.a_bytes[0] == 4e3
    acc = Accelerator(peak_flops=1e12, levels=(MemoryLevel("s", 5e6, 1e12), MemoryLevel("d", 1e9, 1e10)))
    r = evaluate_mapping(lg, acc, [0], [0])  # w + out in sram, x from dram
    mem_s = 4e6 / 1e12 + 4e3 / 1e12 + 4e3 / 1e10
    assert r.valid and r.latency_ms == pytest.approx(1e3 * max(2e6 / 1e12, mem_s))
    r = evaluate_mapping(lg, acc, [1], [1])
    assert r.latency_ms == pytest.approx(1e3 * (4e6 + 8e3) / 1e10)
    tiny = Accelerator(levels=(MemoryLevel("s", 1e6, 1e12), MemoryLevel("d", 1e9, 1e10)))
    assert not evaluate_mapping(lg, tiny, [0], [1]).valid  # weights exceed the 1 MB level


def test_memory_env_check_env_and_episode():
    env = MemoryPlacementEnv(branchy())
    check_env(env, skip_render_check=True)
    gym.make("MemoryPlacement-v0", graph=branchy())
    traj, info = rollout(env, 0, actions=lambda obs: int(np.flatnonzero(obs["action_mask"])[0]))
    assert info["valid"] and traj[-1][1] > 1.0  # fastest fitting levels beat all-in-DRAM
    w, a = greedy_mapping(env.lg, env.acc)
    assert evaluate_mapping(env.lg, env.acc, w, a).valid


def test_memory_env_capacity_enforced_and_deterministic():
    env = MemoryPlacementEnv(branchy(batch=8, ch=64, hw=28))  # 1.6 MB activations, 147 KB weights
    obs, _ = env.reset(seed=0)
    # activations of 1.6 MB each: SRAM (4 MB) cannot hold three live at once
    steps, r, done = 0, 0.0, False
    while not done:
        obs, r, done, _, info = env.step(0)  # weights and activation in SRAM, ignoring the mask
        steps += 1
    assert r == env.invalid_reward and not info["valid"] and steps < len(env.lg)
    a = rollout(MemoryPlacementEnv(branchy()), 5)[0]
    b = rollout(MemoryPlacementEnv(branchy()), 5)[0]
    assert a == b
