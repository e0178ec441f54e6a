"""MacroPlacement-v0 (check_env, masks, determinism, reward) and the baselines."""
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import systems_envs  # noqa: F401  (registers the environments)
from systems_envs.chip.baselines import NoLegalCell, anneal, greedy, initial, random_legal
from systems_envs.chip.cost import evaluate
from systems_envs.chip.env import MacroPlacementEnv
from systems_envs.chip.generator import generate_netlist
from systems_envs.chip.legality import illegal_macros, is_legal, legalize, macro_order

SMALL = dict(num_hard=6, num_soft=12, num_ports=8, num_nets=60)


def small_env(**kw):
    return MacroPlacementEnv(netlists=(), num_generated=2, generator_kwargs=SMALL, fd_steps=5, **kw)


def rollout(env, seed):
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    rewards, actions = [], []
    done = False
    while not done:
        legal = np.flatnonzero(obs["action_mask"])
        a = int(rng.choice(legal))
        nl = env.netlist
        obs, r, done, trunc, info = env.step(a)
        placed = obs["node_features"][:nl.num_objects, 5] > 0
        hard = nl.obj_kind == 1
        pl = env.placement
        sub = nl.hard[placed[nl.hard]]
        # the mask never allows an overlap or a macro outside the canvas
        chk = pl.copy()
        assert not len(np.intersect1d(illegal_macros(nl, env.header, _only(chk, nl, sub)), sub)), "overlap"
        rewards.append(r)
        actions.append(a)
        assert hard.any()
    return actions, rewards, info


def _only(pl, nl, keep):
    """Move every hard macro not in ``keep`` far apart outside the canvas (ignored by the check)."""
    out = pl.copy()
    for i, m in enumerate(nl.hard):
        if m not in keep:
            out.x[m], out.y[m] = -1e6 - 1e4 * i, -1e6
    return out


def test_check_env_and_registration():
    env = small_env()
    check_env(env, skip_render_check=True)
    env2 = gym.make("MacroPlacement-v0", netlists=(), num_generated=1, generator_kwargs=SMALL, fd_steps=5)
    assert env2.unwrapped.max_cells == env2.unwrapped.cases[0].header.columns ** 2


def test_mask_reward_and_determinism():
    env = small_env()
    a1, r1, info = rollout(env, 3)
    a2, r2, _ = rollout(env, 3)
    assert a1 == a2 and r1 == r2
    assert all(r == 0.0 for r in r1[:-1])
    if not info.get("dead_end"):
        assert r1[-1] == pytest.approx(-info["proxy_cost"])
        c = evaluate(env.netlist, env.header, info["placement"])
        assert c.proxy_cost == pytest.approx(info["proxy_cost"])
        assert is_legal(env.netlist, env.header, info["placement"])


def test_illegal_action_rejected():
    env = small_env()
    obs, _ = env.reset(seed=0)
    bad = np.flatnonzero(obs["action_mask"] == 0)
    assert len(bad)
    obs, r, done, _, info = env.step(int(bad[0]))
    assert done and r == -3.0 and info["illegal_action"]
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not a cell index"):
        env.step(env.max_cells)


def test_dead_end_penalty():
    nl, header, pl = generate_netlist(num_hard=4, num_soft=2, num_ports=4, num_nets=10, seed=0)
    # a canvas just big enough for the largest macro: the second one finds no cell
    from dataclasses import replace
    m = macro_order(nl)[0]
    side = float(max(nl.obj_width[m], nl.obj_height[m])) * 1.01
    tight = replace(header, width=side, height=side, columns=1, rows=1)
    env = MacroPlacementEnv(netlists=((nl, tight, pl),), fd_steps=2)
    obs, _ = env.reset(seed=0)
    done, r, info = False, 0.0, {}
    while not done:
        legal = np.flatnonzero(obs["action_mask"])
        if not len(legal):
            break
        obs, r, done, _, info = env.step(int(legal[0]))
    assert done and info.get("dead_end") and r == -3.0


def test_baselines_on_generated_netlist():
    nl, header, pl = generate_netlist(seed=5)
    r = random_legal(nl, header, pl, seed=0)
    g = greedy(nl, header, pl)
    assert is_legal(nl, header, r.placement) and is_legal(nl, header, g.placement)
    assert g.costs.wirelength_cost < r.costs.wirelength_cost
    a = anneal(nl, header, g.placement, max_moves=400, fd_every=0, seed=1)
    assert is_legal(nl, header, a.placement)
    assert sum(m["proposed"] for m in a.moves.values()) == 400 and a.moves["soft_hot"]["proposed"] > 0
    assert all(0 <= m["accepted"] <= m["proposed"] for m in a.moves.values())
    assert a.costs.proxy_cost <= g.costs.proxy_cost + 1e-12
    assert a.costs.proxy_cost == pytest.approx(evaluate(nl, header, a.placement).proxy_cost)
    assert initial(nl, header, pl).costs == evaluate(nl, header, pl)
    with pytest.raises(ValueError, match="not legal"):
        anneal(nl, header, pl, max_moves=1)
    with pytest.raises(ValueError, match="needs 7 non-negative"):
        anneal(nl, header, g.placement, max_moves=1, move_probs=(1, 1, 1, 1, 1))


def test_legalize_ariane_initial(ariane):
    nl, header, pl = ariane
    assert len(illegal_macros(nl, header, pl)) >= 18
    legal = legalize(nl, header, pl)
    assert is_legal(nl, header, legal)


def test_random_reports_dead_end():
    nl, header, pl = generate_netlist(num_hard=4, num_soft=2, num_ports=4, num_nets=10, seed=0)
    from dataclasses import replace
    m = macro_order(nl)[0]
    side = float(max(nl.obj_width[m], nl.obj_height[m])) * 1.01
    with pytest.raises(NoLegalCell, match="no legal cell"):
        random_legal(nl, replace(header, width=side, height=side, columns=1, rows=1), pl)


def test_ariane_env_observation_batches_into_graphs_tuple():
    from encoders.graphs import batch_observations

    env = MacroPlacementEnv(netlists=("ariane133",), fd_steps=2)
    obs, info = env.reset(seed=0)
    nl = env.netlist
    assert obs["n_node"][0] == nl.num_objects == 1410 and env.max_cells == 24 * 21
    assert obs["current"][0] == macro_order(nl)[0] and obs["action_mask"].any()
    obs2, r, done, _, _ = env.step(int(np.flatnonzero(obs["action_mask"])[0]))
    assert r == 0.0 and not done and obs2["node_features"][macro_order(nl)[0], 5] == 1.0
    batch = batch_observations([obs, obs2])
    assert int(batch.graphs.n_node[0]) == 1410 and batch.graphs.nodes.shape[1] == 10
