"""Imagined environment: pure and deterministic per key, jit/vmap agree, mask and done semantics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from worldmodels.imagined_env import ImaginedEnv, encode_starts, legal_action, rollout
from worldmodels.world_model import WorldModelConfig

CFG = WorldModelConfig(width=8, depth=1, latent_dim=8, hidden=16, slot_width=8, mixtures=2)


@pytest.fixture(scope="module")
def setup(small_world):
    store, wm, params = small_world(CFG, episodes=1, seed=0, max_steps=4, horizon=2)
    starts = encode_starts(wm, params, store, np.arange(store.num_states))
    return store, wm, params, starts


def one(starts, i):
    return jax.tree.map(lambda x: x[i], starts)


def test_reset_and_step_pure_deterministic(setup):
    store, wm, params, starts = setup
    env = ImaginedEnv(wm, max_steps=3)
    s0 = one(starts, 0)
    state, ts = env.reset(params, jax.random.key(0), s0)
    assert ts.action_mask.shape == (17,) and bool(ts.action_mask[16])           # stop always legal
    np.testing.assert_array_equal(np.asarray(ts.action_mask[:16]), store.action_mask[0, :16].astype(bool))
    step = jax.jit(env.step)
    a = jnp.int32(int(np.flatnonzero(store.action_mask[0, :16])[0]))
    out1 = step(params, state, a, jax.random.key(7))
    out2 = step(params, state, a, jax.random.key(7))
    out3 = env.step(params, state, a, jax.random.key(7))                       # un-jitted agrees
    for x, y, z in zip(jax.tree.leaves(out1), jax.tree.leaves(out2), jax.tree.leaves(out3)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(z, np.float64), rtol=1e-4, atol=1e-5)
    # the input state was not modified (pure): stepping it again gives the same result
    again = step(params, state, a, jax.random.key(7))
    np.testing.assert_array_equal(np.asarray(again[1].reward), np.asarray(out1[1].reward))
    assert int(out1[0].t) == 1


def test_vmap_matches_single_and_stop_terminates(setup):
    store, wm, params, starts = setup
    env = ImaginedEnv(wm, max_steps=2)
    n = 3
    keys = jax.random.split(jax.random.key(1), n)
    sub = jax.tree.map(lambda x: x[:n], starts)
    states, _ = jax.vmap(env.reset, (None, 0, 0))(params, keys, sub)
    first = jnp.asarray(np.argmax(store.action_mask[:n, :16], axis=1).astype(np.int32))
    moved, tm = jax.vmap(env.step, (None, 0, 0, 0))(params, states, first, keys)
    single_state, _ = env.reset(params, keys[1], one(sub, 1))
    s1, ts1 = env.step(params, single_state, first[1], keys[1])
    np.testing.assert_allclose(float(tm.reward[1]), float(ts1.reward), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(tm.action_mask[1]), np.asarray(ts1.action_mask))
    assert not bool(ts1.action_mask[int(first[1])])         # an applied candidate is consumed
    stop = jnp.full(n, 16, jnp.int32)
    new, ts = jax.vmap(env.step, (None, 0, 0, 0))(params, states, stop, keys)
    assert np.asarray(ts.terminated).all() and not np.asarray(ts.truncated).any()
    assert (np.asarray(ts.reward) == 0).all()               # stop: reward 0 as in the real env
    # once done, a step is a no-op with zero reward
    after, ts2 = jax.vmap(env.step, (None, 0, 0, 0))(params, new, stop, keys)
    assert (np.asarray(ts2.reward) == 0).all() and np.asarray(after.done).all()
    np.testing.assert_array_equal(np.asarray(after.t), np.asarray(new.t))


def test_rollout_scan_and_truncation(setup):
    store, wm, params, starts = setup
    env = ImaginedEnv(wm, max_steps=3)
    idx = np.arange(64) % store.num_states
    batch = jax.tree.map(lambda x: x[idx], starts)
    run = jax.jit(lambda p, k, s: rollout(env, p, k, s, 5))
    rewards, done = run(params, jax.random.key(0), batch)
    assert rewards.shape == (5, 64) and done.shape == (5, 64)
    assert np.asarray(done[2:]).all()                       # max_steps = 3 -> every rollout done by step 3
    r2, _ = run(params, jax.random.key(0), batch)
    np.testing.assert_array_equal(np.asarray(rewards), np.asarray(r2))
    # rollouts run in chunks (the last one padded); the chunk size does not change the result
    r3, d3 = jax.jit(lambda p, k, s: rollout(env, p, k, s, 5, chunk=24))(params, jax.random.key(0), batch)
    np.testing.assert_allclose(np.asarray(r3), np.asarray(rewards), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(d3), np.asarray(done))
    with pytest.raises(ValueError, match="max_steps"):
        ImaginedEnv(wm, max_steps=0)
    with pytest.raises(ValueError, match="mask_threshold"):
        ImaginedEnv(wm, mask_threshold=1.0)


def test_start_carry_precomputed_or_not_same_rollout(setup):
    """encode_starts fills in the initial carry; a Start without it (carry None, as the loop's
    model observations give) computes the same carry at reset, so rollouts agree."""
    store, wm, params, starts = setup
    assert starts.carry is not None
    env = ImaginedEnv(wm, max_steps=4)
    idx = np.arange(32) % store.num_states
    with_carry = jax.tree.map(lambda x: x[idx], starts)
    without = with_carry._replace(carry=None)
    run = jax.jit(lambda p, k, s: rollout(env, p, k, s, 4))
    r1, d1 = run(params, jax.random.key(5), with_carry)
    r2, d2 = run(params, jax.random.key(5), without)
    np.testing.assert_allclose(np.asarray(r1), np.asarray(r2), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(d1), np.asarray(d2))


@pytest.mark.parametrize("n", [4, 65, 300])
def test_legal_action_uniform_over_legal(n):
    """Only legal positions are drawn, each about equally often (chi-square over 40k draws
    with a fixed key; fails if any position's frequency is far from uniform)."""
    from scipy.stats import chisquare

    rng = np.random.default_rng(n)
    mask = rng.random(n) < 0.6
    mask[-1] = True
    words = jax.random.bits(jax.random.key(3), (40_000,), jnp.uint32)
    acts = np.asarray(jax.jit(jax.vmap(lambda w: legal_action(w, jnp.asarray(mask))))(words))
    counts = np.bincount(acts, minlength=n)
    assert counts[~mask].sum() == 0
    assert chisquare(counts[mask]).pvalue > 1e-3
    assert int(legal_action(jnp.uint32(7), jnp.zeros(n, bool))) == 0
