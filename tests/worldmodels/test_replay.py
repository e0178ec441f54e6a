"""Replay collection and store: determinism, mask targets, save/load, episode split, windows."""
import numpy as np
import pytest

from worldmodels.replay import Replay, collect, epsilon_policy, greedy_policy, random_policy, standard_obs

KW = dict(max_candidates=16, max_steps=6)


@pytest.fixture(scope="module")
def store():
    return collect("GraphRewrite-v0", ["squeezenet", "bert"], 4, "random", seed=3, env_kwargs=KW, horizon=5)


def test_shapes_and_bookkeeping(store):
    assert store.kind == "rewrite" and store.num_slots == 16 and store.num_episodes == 4
    assert store.num_states == store.num_transitions + store.num_episodes
    assert store.action_mask.shape == (store.num_states, 17) and store.carried_mask.shape == (store.num_states, 5, 17)
    assert list(store.episode_graph) == [0, 1, 0, 1]
    for k in range(store.num_episodes):
        t0, t1 = store.transition_index()[k], store.transition_index()[k + 1]
        ends = store.terminated[t0:t1] | store.truncated[t0:t1]
        assert ends[-1] and not ends[:-1].any()          # exactly one end per episode, at its last step
        # rewards are relative cost decreases: they sum to (initial - final) / initial cost
        s0 = store.episode_start[k]
        c = store.cost[s0:s0 + store.episode_len[k] + 1]
        assert np.isclose(store.reward[t0:t1].sum(), (c[0] - c[-1]) / c[0], rtol=1e-4, atol=1e-6)
    # every action was legal in its state
    assert store.action_mask[store.state_of, store.action].all()


def test_carried_mask_semantics(store):
    a = store.num_slots
    cm = store.carried_mask
    assert (cm[:, :, a] <= 1).all()
    # a slot that does not exist in state i is never "still legal"
    assert not (cm[:, :, :a].astype(bool) & ~store.action_mask[:, None, :a].astype(bool)).any()
    # past the episode end everything is 0; inside, the stop slot is legal
    for k in range(store.num_episodes):
        s0, n = store.episode_start[k], store.episode_len[k]
        last = s0 + n
        assert (cm[last] == 0).all()
        assert cm[s0, : min(n, 5), a].all()
    # an applied candidate is never offered again (justifies WorldModel's consumed_prior)
    hit = store.action < a
    assert not cm[store.state_of[hit], :, store.action[hit]].any()
    # at h=1 no more slots can be legal than the successor offers candidates
    i = store.state_of
    assert (cm[i, 0, :a].sum(1) <= store.action_mask[i + 1, :a].sum(1)).all()


def test_node_conflicts_predict_which_candidates_survive(store):
    """What WorldModel's consumed_prior relies on, checked on collected data: after a rewrite,
    a candidate whose match shares no node with the applied one is still offered, and one
    that shares a node is (nearly always) gone. The conflicts are `rewrite_slots`'."""
    import jax.numpy as jnp

    from dynamics import rewrite_slots

    a = store.num_slots
    counts = np.zeros((2, 2), int)            # [shares a node][still offered]
    for t in np.flatnonzero(store.action < a):
        i, act = store.state_of[t], store.action[t]
        conflicts = np.asarray(rewrite_slots(jnp.zeros((1, 1)), jnp.asarray(store.candidate_rule[i]),
                                             jnp.asarray(store.candidate_nodes[i])).conflicts)
        assert conflicts[act, act]
        others = np.flatnonzero(store.action_mask[i, :a].astype(bool) & (np.arange(a) != act))
        np.add.at(counts, (conflicts[act, others].astype(int), store.carried_mask[i, 0, others].astype(int)), 1)
    assert counts[0, 0] == 0 and counts[0, 1] > 0                    # no shared node: survives
    assert counts[1].sum() > 0 and counts[1, 0] >= 0.9 * counts[1].sum(), counts


def test_deterministic_and_roundtrip(store, tmp_path):
    again = collect("GraphRewrite-v0", ["squeezenet", "bert"], 4, "random", seed=3, env_kwargs=KW, horizon=5)
    np.testing.assert_array_equal(again.action, store.action)
    np.testing.assert_array_equal(again.node_features, store.node_features)
    path = store.save(tmp_path / "r")
    back = Replay.load(path)
    assert back.meta == store.meta
    for name in ("node_features", "senders", "carried_mask", "reward", "episode_start", "candidate_nodes"):
        np.testing.assert_array_equal(getattr(back, name), getattr(store, name))
    o1, o2 = back.state_obs(7), store.state_obs(7)
    assert all(np.array_equal(o1[k], o2[k]) for k in o1)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        Replay.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="unreadable"):
        Replay.load(bad)
    with pytest.raises(ValueError, match="unknown environment"):
        collect("GraphRewrit-v0", ["squeezenet"], 1)


def test_split_by_episode(store):
    train, val = store.split_by_episode(0.25, seed=0)
    assert train.num_episodes == 3 and val.num_episodes == 1
    assert train.num_transitions + val.num_transitions == store.num_transitions
    # the split store is self-consistent: its state 0 is an episode start of the original
    rows = {store.state_obs(s)["node_features"].tobytes() for s in store.episode_start}
    assert val.state_obs(0)["node_features"].tobytes() in rows
    np.testing.assert_array_equal(np.sort(np.concatenate([train.reward, val.reward])), np.sort(store.reward))


def test_windows(store):
    w = store.windows(np.array([0, store.episode_len[0] - 1]), 3)
    assert w["valid"][0].all()
    assert w["valid"][1].tolist() == [True, False, False]
    assert (w["state"][1, 1:] == store.episode_start[0] + store.episode_len[0]).all()
    np.testing.assert_array_equal(w["next_mask"][0], store.carried_mask[0, :3])
    assert (w["next_mask"][1, 1:] == 0).all()
    with pytest.raises(ValueError, match="horizon"):
        store.windows(np.array([0]), 6)


def test_policies_and_placement():
    rng_store = collect("GraphRewrite-v0", ["squeezenet"], 1, epsilon_policy(greedy_policy(), 0.5), seed=0,
                        env_kwargs=KW, horizon=3)
    assert rng_store.num_transitions >= 1
    p = collect("DevicePlacement-v0", ["inception_v3"], 1, random_policy(), seed=0, horizon=3)
    assert p.kind == "placement" and p.candidate_rule.shape[1] == 0
    a = p.num_slots
    assert (p.action_mask[:, a] == 0).all()                      # no stop action in placement
    i = p.state_of[:-3]
    np.testing.assert_array_equal(p.carried_mask[i, 2, :a], p.action_mask[i + 3, :a])
    obs = standard_obs({"nodes": np.ones((3, 2), np.float32), "senders": np.array([0, 1]),
                        "receivers": np.array([1, 2]), "action_mask": np.array([1, 0], np.int8)})
    assert obs["edge_features"].shape == (2, 1) and obs["action_mask"].tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="neither"):
        standard_obs({"x": 1})


def test_candidate_rewards_are_stored_and_are_the_rewards_of_the_actions(store):
    """The replay keeps each state's per-candidate immediate rewards; the one of the action
    taken is the reward the step gave (stop gives 0 and has no entry)."""
    a = store.num_slots
    assert store.candidate_reward.shape == (store.num_states, a) and store.candidate_reward.dtype == np.float32
    assert not store.candidate_reward[~store.action_mask[:, :a].astype(bool)].any()   # padding is 0
    moved = store.action < a
    taken = store.candidate_reward[store.state_of[moved], store.action[moved]]
    np.testing.assert_allclose(taken, store.reward[moved], rtol=1e-5, atol=1e-9)
    assert (store.candidate_reward != 0).any()
    i = int(store.state_of[0])
    np.testing.assert_array_equal(store.state_obs(i)["candidate_reward"], store.candidate_reward[i])


def test_store_without_candidate_rewards_is_refused(store, tmp_path):
    """A replay file written before the feature existed gets a one-line error naming it."""
    import dataclasses

    path = store.save(tmp_path / "r.npz")
    with np.load(path) as f:
        data = {k: f[k] for k in f.files if k != "candidate_reward"}
    np.savez_compressed(tmp_path / "old.npz", **data)
    with pytest.raises(ValueError, match=r"missing arrays \['candidate_reward'\]"):
        Replay.load(tmp_path / "old.npz")
    assert "candidate_reward" in {f.name for f in dataclasses.fields(Replay)}
