"""The outcome model (sparse placement rewards): its metrics on hand-made data, the assignment
it scores against the real environments' final observations, learning a ranking, the imagined
environment's final reward, and the train_outcome_model command on a tiny data set."""
import json

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from worldmodels.fidelity import outcome_metrics
from worldmodels.imagined_env import ImaginedEnv, encode_starts, open_loop
from worldmodels.outcome import (OutcomeConfig, OutcomeModel, PlacementSet, assign, capacities, features_of, fit,
                                 layout_of, load_outcome, node_steps, pad_observation, placement_set, predict)
from worldmodels.outcome_data import collect_outcomes
from worldmodels.replay import collect, standard_obs
from worldmodels.world_model import WorldModel, WorldModelConfig

DEVICE_KW = dict(devices="gpu4", groups=16, reward="speedup")
TINY = OutcomeConfig(width=16, depth=0, members=2, steps=150, batch_size=16, lr=5e-3, rank_coef=1.0)


def test_outcome_metrics_on_hand_made_data():
    # graph 0: real 1,2,3,4 ranked 1,2,4,3 by the model; graph 1: ranked perfectly
    pred = np.array([10, 20, 40, 30, 3, 1, 2], float)
    real = np.array([1, 2, 3, 4, 5, 1, 3], float)
    group = np.array([0, 0, 0, 0, 1, 1, 1])
    m = outcome_metrics(pred, real, group, mean_reward=2.0)
    # graph 0: Spearman 1 - 6 * (1 + 1) / (4 * 15) = 0.8; Kendall (5 - 1) / 6; graph 1: both 1
    assert m["spearman"] == pytest.approx((0.8 + 1.0) / 2)
    assert m["kendall"] == pytest.approx((4 / 6 + 1.0) / 2)
    # graph 0: the model's best (pred 40) is real 3, the best is 4 -> regret 1 (25%); graph 1: 0
    assert m["regret"] == pytest.approx(0.5) and m["regret_rel"] == pytest.approx(0.125)
    assert m["mae"] == pytest.approx(np.abs(pred - real).mean())
    assert m["mae_baseline"] == pytest.approx(np.abs(2.0 - real).mean())
    assert m["mae_ratio"] == pytest.approx(m["mae"] / m["mae_baseline"])
    assert m["spearman_pooled"] == pytest.approx(stats.spearmanr(pred, real).statistic)
    with pytest.raises(ValueError, match="equal non-empty 1-D"):
        outcome_metrics(pred[:3], real, group, 0.0)


@pytest.mark.parametrize("env_id,kw", [("DevicePlacement-v0", DEVICE_KW), ("MemoryPlacement-v0", {})])
def test_assign_reproduces_the_real_final_observation(env_id, kw):
    env = gym.make(env_id, graph="squeezenet", **kw).unwrapped
    layout = layout_of(env)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    states, actions = [standard_obs(obs)], []
    while True:
        a = int(rng.choice(np.flatnonzero(obs["action_mask"])))
        obs, r, term, trunc, _ = env.step(a)
        actions.append(a)
        states.append(standard_obs(obs))
        if term or trunc:
            break
    final = states[-1]["node_features"]
    for k in (0, 2):   # from the reset state and from a state two steps in
        nodes = states[k]["node_features"]
        steps = node_steps(layout, nodes, len(nodes))
        assert steps.max() + 1 == len(actions) - k
        np.testing.assert_array_equal(assign(layout, nodes, steps, np.array(actions[k:])), final)
    # JAX path, padded: the same rows
    pg = pad_observation(states[0], len(final) + 3, len(states[0]["edge_features"]) + 2)
    steps = node_steps(layout, jnp.asarray(pg.nodes), pg.n_node)
    assert int(steps[-1]) == -1                                   # padding rows are never assigned
    out = assign(layout, jnp.asarray(pg.nodes), steps, jnp.asarray(actions))
    np.testing.assert_array_equal(np.asarray(out)[:len(final)], final)


@pytest.fixture(scope="module")
def device_data():
    data = collect_outcomes("DevicePlacement-v0", ["squeezenet", "resnet50"], 40, seed=0, env_kwargs=DEVICE_KW)
    assert data.valid.all() and len(np.unique(data.policy)) == 4       # every behaviour policy drawn
    return data


def test_model_learns_a_synthetic_ranking_quickly(device_data):
    """Target: exp(3 x the share of compute on device 0), a ranking the assignment decides."""
    nc, ec = capacities([device_data])
    full = placement_set(device_data, nc, ec)
    model = OutcomeModel(TINY, device_data.layout)
    load0 = features_of(model, full.placed)[:, 0:4].max(-1)          # the largest device share
    synth = PlacementSet(full.placed, np.exp(3.0 * load0).astype(np.float32), full.group)
    idx = np.random.default_rng(0).permutation(len(synth.reward))
    cut = int(0.75 * len(idx))
    take = lambda s, i: PlacementSet(jax.tree.map(lambda x: x[i], s.placed), s.reward[i], s.group[i])  # noqa: E731
    params, hist = fit(model, take(synth, idx[:cut]), seed=0)
    test = take(synth, idx[cut:])
    m = outcome_metrics(predict(model, params, test.placed), test.reward, test.group, float(synth.reward.mean()))
    assert m["spearman"] > 0.9 and m["mae_ratio"] < 0.5, m


def test_imagined_env_pays_the_outcome_score_at_the_final_step(device_data):
    store = collect("DevicePlacement-v0", ["squeezenet"], 2, "random", seed=3, env_kwargs=DEVICE_KW, horizon=5)
    cfg = WorldModelConfig(width=8, depth=1, latent_dim=8, hidden=16, slot_width=8, mixtures=2, batch_size=2, seq_len=2)
    wm = WorldModel.for_replay(cfg, store)
    params = wm.init(jax.random.key(0), store)
    nc, ec = capacities([device_data])
    model = OutcomeModel(OutcomeConfig(width=8, depth=0, members=2), device_data.layout)
    train = placement_set(device_data, nc, ec)
    oparams = model.init(jax.random.key(1), jax.tree.map(lambda x: x[:4], train.placed), train.reward)
    env = ImaginedEnv(wm, max_steps=6, outcome=(model, oparams))
    ep_start = int(store.episode_start[0])
    t0 = int(store.transition_index()[0])
    n_steps = int(store.episode_len[0])                                  # 5: squeezenet in chunks of 16 ops
    starts = encode_starts(wm, params, store, np.array([ep_start, ep_start + 2]), placed=True)
    final = store.state_obs(ep_start + n_steps)                          # the real final observation
    expected = float(jax.jit(model.score)(oparams, jax.tree.map(jnp.asarray, pad_observation(final, nc, ec))))
    run = jax.jit(lambda st, a: open_loop(env, params, st, a, jax.random.key(0)))
    for b, skip in ((0, 0), (1, 2)):                                     # from the episode start, and two steps in
        acts = np.full(6, 0, np.int32)
        acts[:n_steps - skip] = store.action[t0 + skip:t0 + n_steps]
        reward, term, _ = run(jax.tree.map(lambda x: x[b], starts), jnp.asarray(acts))
        last = n_steps - skip - 1
        assert np.asarray(term).tolist() == [i == last for i in range(6)]
        np.testing.assert_allclose(float(reward[last]), expected, rtol=1e-4)
        assert np.all(np.asarray(reward)[np.arange(6) != last] == 0.0)
    with pytest.raises(ValueError, match="placed graph"):
        env.reset(params, jax.random.key(0), jax.tree.map(lambda x: x[0], starts)._replace(placed=None))


def test_train_outcome_model_tiny(tmp_path, capsys):
    from experiments import train_outcome_model as tom

    s = tom.main(["--preset", "tiny", "--logdir", str(tmp_path)])
    out = capsys.readouterr().out.strip().splitlines()
    last = json.loads(out[-1])
    assert last["env"] == "DevicePlacement-v0" and set(last["targets_met"]) == {"held_out_spearman", "held_out_mae_ratio"}
    assert any(line.startswith("| held-out, training graphs |") for line in out)
    held = s["metrics"]["held_out"]
    assert held["n"] >= 2 and np.isfinite(held["mae"]) and held["mae_baseline"] > 0
    assert (tmp_path / "summary.json").exists() and (tmp_path / "config.json").exists()
    model, params, nc, ec = load_outcome(tmp_path)                      # the saved model round-trips
    assert model.cfg.members == 2 and model.layout.kind == "device" and params["net"] is not None
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
    assert nc > 64 and ec >= 1
    # train_world_model --outcome DIR loads it for the same environment layout, refuses another
    from experiments import train_world_model as twm
    from worldmodels.config import ConfigError

    cfg = twm.parse(["--preset", "device_placement", "--graphs", "squeezenet", "--outcome", str(tmp_path)])
    loaded, _ = twm.load_outcome_for(cfg, twm.env_kwargs(cfg.env, cfg.data))
    assert loaded.layout.to_json() == model.layout.to_json()
    other = twm.parse(["--preset", "device_placement", "--data.devices", "gpu8", "--outcome", str(tmp_path)])
    with pytest.raises(ConfigError, match="another environment layout"):
        twm.load_outcome_for(other, twm.env_kwargs(other.env, other.data))
    with pytest.raises(ConfigError, match="scores placements"):
        rw = twm.parse(["--outcome", str(tmp_path)])
        twm.load_outcome_for(rw, twm.env_kwargs(rw.env, rw.data))


def test_bad_inputs_are_clear_errors(tmp_path):
    from experiments import train_outcome_model as tom
    from worldmodels.config import ConfigError

    with pytest.raises(ValueError, match="must be one of"):
        collect_outcomes("GraphRewrite-v0", ["squeezenet"], 2)
    with pytest.raises(ConfigError, match="also a training graph"):
        tom.main(["--preset", "tiny", "--unseen", "squeezenet", "--logdir", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="outcome.json not found"):
        load_outcome(tmp_path / "nothing")
