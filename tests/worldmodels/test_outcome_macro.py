"""The outcome model on MacroPlacement-v0: the finished observation of an outside placement
equals the environment's own, hand-computed placement features, macro data in chains (split
by chain), and the train_outcome_model command on a tiny macro data set."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from systems_envs.chip.env import MacroPlacementEnv
from worldmodels.outcome import MACRO_GRID, PlacedGraph, assign, layout_of, load_outcome, macro_features, macro_layout
from worldmodels.outcome_data import MACRO_POLICY_NAMES, collect_macro_outcomes, macro_netlist


def test_finished_observation_is_the_environments_final_one():
    env = MacroPlacementEnv(netlists=[macro_netlist("gen:3")], fd_steps=5)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    while True:
        obs, r, term, _, info = env.step(int(rng.choice(np.flatnonzero(obs["action_mask"]))))
        if term:
            break
    assert "placement" in info
    again = env.finished_observation(0, info["placement"])
    for k in obs:
        np.testing.assert_array_equal(again[k], obs[k], err_msg=k)
    layout = layout_of(env)
    assert layout.kind == "macro" and layout.n_actions == env.max_cells and layout.num_features == 10
    with pytest.raises(ValueError, match="not feature rows"):
        assign(layout, obs["node_features"], np.zeros(3, np.int32), np.zeros(1, np.int32))


def test_macro_features_by_hand():
    G = MACRO_GRID
    nodes = np.zeros((4, 10), np.float32)
    # node 0: a hard macro exactly on cell (row 2, col 3); node 1: a port; node 2: a soft macro
    # covering cell (0, 0) and half of (0, 1); node 3: padding
    nodes[0, [1, 3, 4, 6, 7]] = [1, 1 / G, 1 / G, 3.5 / G, 2.5 / G]
    nodes[1, [0, 6, 7]] = [1, 0.0, 0.5]
    nodes[2, [2, 3, 4, 6, 7]] = [1, 1.5 / G, 1 / G, 0.75 / G, 0.5 / G]
    edges = np.zeros((3, 1), np.float32)
    edges[:2, 0] = np.log1p([3.0, 1.0])
    pg = PlacedGraph(jnp.asarray(nodes), jnp.asarray(edges), jnp.array([0, 2, 3], jnp.int32),
                     jnp.array([1, 0, 3], jnp.int32), jnp.int32(3), jnp.int32(2))
    layout = macro_layout(10)
    f = np.asarray(jax.jit(lambda g: macro_features(layout, g))(pg))
    assert f.shape == (1, 14)
    man0 = 3.5 / G + abs(2.5 / G - 0.5)           # hard macro - port
    man1 = abs(0.75 - 3.5) / G + abs(0.5 - 2.5) / G  # soft macro - hard macro
    np.testing.assert_allclose(f[0, 0], (3 * man0 + man1) / 4, rtol=1e-5)
    np.testing.assert_allclose(f[0, 1], man0, rtol=1e-5)           # edges between hard macros and ports only
    k10 = int(np.floor(0.1 * G * G))
    np.testing.assert_allclose(f[0, 2], (1 + 1 + 0.5) / k10, rtol=1e-5)    # density, top 10%
    np.testing.assert_allclose(f[0, 4], 1.0, rtol=1e-5)                    # densest cell
    np.testing.assert_allclose(f[0, 5], 2.5 / (G * G), rtol=1e-5)          # mean density
    np.testing.assert_allclose(f[0, 6], 1.0 / k10, rtol=1e-5)              # hard macros' density, top 10%
    np.testing.assert_allclose(f[0, 12], np.log1p(3) / 10, rtol=1e-5)
    np.testing.assert_allclose(f[0, 13], np.log1p(4) / 10, rtol=1e-5)


def test_macro_data_in_chains_and_the_tiny_command(tmp_path, capsys):
    data = collect_macro_outcomes(["gen:1", "gen:2"], 10, seed=0, fd_steps=5, anneal_moves=80)
    assert set(np.unique(data.graph)) == {0, 1} and (data.reward < 0).all() and data.valid.all()
    assert {MACRO_POLICY_NAMES[p] for p in data.policy} >= {"anneal", "perturbed"}
    assert all(len(x) == len(data.start_obs[g]["node_features"]) for g, x in zip(data.graph, data.nodes))
    train, held = data.split(0.3, seed=0)
    assert len(train) + len(held) == len(data) and len(held) > 0
    assert not set(train.chain) & set(held.chain)          # no chain on both sides
    again = collect_macro_outcomes(["gen:1", "gen:2"], 10, seed=0, fd_steps=5, anneal_moves=80)
    np.testing.assert_array_equal(again.reward, data.reward)   # seeded

    from experiments import train_outcome_model as tom

    s = tom.main(["--preset", "tiny", "--env", "MacroPlacement-v0", "--graphs", "gen:1,gen:2", "--unseen", "gen:3",
                  "--episodes", "10", "--unseen_episodes", "5", "--fd_steps", "5", "--anneal_moves", "80",
                  "--logdir", str(tmp_path)])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["env"] == "MacroPlacement-v0" and set(last["targets_met"]) == {
        "held_out_spearman", "held_out_mae_ratio", "unseen_spearman"}
    assert s["metrics"]["unseen"]["n"] >= 2 and np.isfinite(s["metrics"]["held_out"]["mae"])
    model, params, nc, ec = load_outcome(tmp_path)
    assert model.layout.kind == "macro" and not model.log_target


def test_bad_macro_netlists():
    with pytest.raises(ValueError, match="integer seed"):
        macro_netlist("gen:x")
    with pytest.raises(ValueError, match="unknown netlist 'nope'"):
        macro_netlist("nope")
    with pytest.raises(ValueError, match="placements per netlist"):
        collect_macro_outcomes(["gen:1"], 0)
