"""PPO: masked actions are never illegal; it learns a toy masked task; both rollout paths."""
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

from controllers import make_controller
from controllers.ppo import PPO, gae
from controllers.rollout import (collect_imagined, collect_real, mean_episode_return, reset_imagined,
                                 reset_real)
from controllers.toy_envs import GraphBandit, GymGraphBandit

ENV = GraphBandit()
AGENT = PPO(lr=3e-3, hidden=32, message_steps=1, num_epochs=4, num_minibatches=4, ent_coef=0.003,
            num_rules=8, gamma=0.9)
_, _TS = ENV.reset(None, jax.random.PRNGKey(0))
STATE = AGENT.init(jax.random.PRNGKey(1), _TS.observation)
NUM_ENVS, T = 16, 16
COLLECT = jax.jit(lambda state, carry, key: collect_imagined(ENV.reset, ENV.step, None, AGENT, state, carry, key, T))


@settings(max_examples=25, deadline=None)
@given(mask_bits=st.lists(st.booleans(), min_size=4, max_size=4), seed=st.integers(0, 2**16))
def test_never_illegal(mask_bits, seed):
    obs = dict(_TS.observation)
    obs["action_mask"] = jnp.array(mask_bits + [True], jnp.int8)
    keys = jax.random.split(jax.random.PRNGKey(seed), 64)
    acts = np.asarray(jax.vmap(lambda k: AGENT.act(STATE, obs, k))(keys))
    assert np.all(np.asarray(obs["action_mask"])[acts] == 1)
    g = int(AGENT.act(STATE, obs, keys[0], greedy=True))
    assert obs["action_mask"][g] == 1


def test_gae_matches_loop():
    rng = np.random.default_rng(0)
    T, B = 7, 3
    r, v, nv = rng.normal(size=(3, T, B))
    term = rng.random((T, B)) < 0.2
    trunc = (rng.random((T, B)) < 0.2) & ~term
    done = term | trunc
    adv, _ = gae(r, v, nv, term.astype(float), done.astype(float), 0.9, 0.8)
    ref = np.zeros((T, B))
    nxt = np.zeros(B)
    for t in reversed(range(T)):
        delta = r[t] + 0.9 * nv[t] * (1 - term[t]) - v[t]
        nxt = delta + 0.9 * 0.8 * (1 - done[t]) * nxt
        ref[t] = nxt
    np.testing.assert_allclose(np.asarray(adv), ref, rtol=1e-5, atol=1e-5)


def _eval(state, key, n=256, policy="greedy"):
    """Mean return over n episodes of greedy / oracle / random play on GraphBandit."""
    def episode(k):
        def body(c, kk):
            s, obs, ret, alive = c
            k1, k2 = jax.random.split(kk)
            mask = obs["action_mask"] > 0
            if policy == "greedy":
                a = AGENT.act(state, obs, k1, greedy=True)
            elif policy == "oracle":
                a = ENV.oracle_action(obs)
            else:
                a = jax.random.categorical(k1, jnp.where(mask, 0.0, -1e9)).astype(jnp.int32)
            s2, ts = ENV.step(None, s, a, k2)
            ret = ret + alive * ts.reward
            alive = alive * (1 - (ts.terminated | ts.truncated))
            return (s2, ts.observation, ret, alive), None
        k0, k1 = jax.random.split(k)
        s, ts = ENV.reset(None, k0)
        (_, _, ret, _), _ = jax.lax.scan(body, (s, ts.observation, 0.0, 1.0), jax.random.split(k1, ENV.horizon))
        return ret
    return float(jax.jit(jax.vmap(episode))(jax.random.split(key, n)).mean())


def test_ppo_learns_masked_bandit_imagined():
    starts = jnp.zeros((1,))
    num_envs, T = 16, 16

    collect = jax.jit(lambda state, carry, key: collect_imagined(ENV.reset, ENV.step, None, AGENT, state, carry, key, T))

    def iteration(state, carry, key):
        carry, batch = collect(state, carry, key)
        state, metrics = AGENT.update(state, batch)  # same compiled update as the real-env test
        return state, carry, metrics, batch

    key = jax.random.PRNGKey(0)
    state = STATE
    carry = reset_imagined(ENV.reset, None, starts, key, num_envs)
    for i in range(10):
        key, k = jax.random.split(key)
        state, carry, metrics, batch = iteration(state, carry, k)
        assert np.all(np.asarray(batch.obs["action_mask"])[np.arange(T)[:, None], np.arange(num_envs)[None], np.asarray(batch.action)] == 1)
    ek = jax.random.PRNGKey(123)
    trained, oracle, rand = _eval(state, ek), _eval(state, ek, policy="oracle"), _eval(state, ek, policy="random")
    assert np.isfinite(float(metrics["loss"]))
    assert trained > rand + 0.5 * (oracle - rand), (trained, oracle, rand)
    assert trained > 0.85 * oracle, (trained, oracle, rand)


def test_real_rollout_same_format_and_update():
    B = NUM_ENVS  # the shapes of the imagined test: the jitted functions are reused
    envs = [GymGraphBandit() for _ in range(B)]
    rs = reset_real(envs, seed=0)
    rs, batch = collect_real(envs, AGENT, STATE, rs, jax.random.PRNGKey(0), num_steps=T, n_cap=6, m_cap=5)
    carry = reset_imagined(ENV.reset, None, jnp.zeros((1,)), jax.random.PRNGKey(0), B)
    _, ib = COLLECT(STATE, carry, jax.random.PRNGKey(1))
    assert jax.tree_util.tree_structure(batch) == jax.tree_util.tree_structure(ib)
    for a, b in zip(jax.tree_util.tree_leaves(batch), jax.tree_util.tree_leaves(ib)):
        assert np.shape(a) == np.shape(b) and np.asarray(a).dtype == np.asarray(b).dtype
    acts, mask = np.asarray(batch.action), np.asarray(batch.obs["action_mask"])
    assert np.all(np.take_along_axis(mask, acts[..., None], -1) == 1)
    done = batch.terminated | batch.truncated
    assert done.any() and np.isfinite(mean_episode_return(batch))
    state, metrics = AGENT.update(STATE, batch)
    assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))


def test_registry():
    from worldmodels.config import ControllerConfig, PPOConfig
    agent = make_controller("ppo", ControllerConfig(ppo=PPOConfig(hidden=8, num_rules=8)))
    assert isinstance(agent, PPO) and agent.net.hidden == 8
    import pytest
    with pytest.raises(ValueError, match="ppo"):
        make_controller("ppp")
