"""Unit tests of the Dyna loop pieces (fast; the end-to-end runs are in tests/experiments)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from worldmodels.config import ConfigError, parse_args, replace_path, tiny_config
from worldmodels.dream import DreamParams
from worldmodels.episodes import EpisodeRecord, concat_replays, episodes_to_replay
from worldmodels.loop import Loop, horizon_at, validate_config
from worldmodels.tb_reader import read_scalars


def test_horizon_schedule_is_linear_between_the_iterations():
    cfg = replace_path(tiny_config(), {"loop.horizon_min": 1, "loop.imagined_horizon": 9,
                                       "loop.horizon_schedule": (2, 6)})
    assert [horizon_at(cfg, i) for i in range(8)] == [1, 1, 1, 3, 5, 7, 9, 9]


def test_bad_loop_values_are_clear_errors():
    with pytest.raises(ValueError, match="loop.mode"):
        validate_config(replace_path(tiny_config(), {"loop.mode": "dyna"}))
    with pytest.raises(ValueError, match="planner needs a world model"):
        validate_config(replace_path(tiny_config(), {"loop.mode": "model_free", "controller.name": "planner"}))
    with pytest.raises(ConfigError, match="did you mean --loop.real_ratio"):
        parse_args(["--preset", "tiny", "--loop.real_ratoi", "0.5"])


def _records(loop, n_steps, seed):
    rng = np.random.default_rng(seed)
    env = loop.envs[0]
    o, info = env.reset(seed=seed)
    rec = EpisodeRecord(0)
    rec.add_state(*loop.task.replay_state(o, env, info))
    for _ in range(n_steps):
        moves = np.flatnonzero(o["action_mask"][:-1])
        a = int(rng.choice(moves))
        o, r, te, tr, info = env.step(a)
        rec.add_step(a, r, te, tr)
        rec.add_state(*loop.task.replay_state(o, env, info))
        if te or tr:
            break
    return [rec]


def test_replay_packing_and_concatenation(tmp_path):
    loop = Loop(tiny_config(), str(tmp_path))
    a = episodes_to_replay(_records(loop, 3, 0), loop.meta, 4)
    b = episodes_to_replay(_records(loop, 5, 1), loop.meta, 4)
    ab = concat_replays(a, b)
    assert ab.num_episodes == 2 and ab.num_transitions == a.num_transitions + b.num_transitions
    for i in range(b.num_states):  # b's states are found unchanged after a's
        for k, v in b.state_obs(i).items():
            np.testing.assert_array_equal(ab.state_obs(a.num_states + i)[k], v)
    np.testing.assert_array_equal(ab.state_of[a.num_transitions:], b.state_of + a.num_states)
    w = ab.windows(np.array([a.num_transitions]), 2)  # a window of the 2nd episode
    np.testing.assert_array_equal(w["action"][0], b.action[:2])
    # rewards sum to the relative cost reduction of the episode
    c = b.cost
    assert np.isclose(b.reward.sum(), (c[0] - c[-1]) / c[0], atol=1e-6)


def test_read_scalars_ignores_a_truncated_record(tmp_path):
    from worldmodels.logging import RunLogger
    log = RunLogger(tmp_path)
    for s in (1, 2, 3):
        log.scalar("x/y", s * 0.5, s)
    log.close()
    path = [p for p in os.listdir(tmp_path) if p.startswith("events")][0]
    with open(tmp_path / path, "ab") as f:
        f.write(b"\x20\x00\x00")  # a record cut by a kill
    assert read_scalars(str(tmp_path))["x/y"] == [(1, 0.5), (2, 1.0), (3, 1.5)]


def test_dream_env_is_pure_and_truncates_at_the_horizon(tmp_path):
    loop = Loop(tiny_config(), str(tmp_path))
    loop.replay = episodes_to_replay(_records(loop, 4, 0), loop.meta, 4)
    state = loop._init_model(jax.random.key(0))
    pool = loop.start_pool(state.params, jax.random.key(1))
    start = jax.tree_util.tree_map(lambda x: x[0], pool)
    ep = DreamParams(state.params, jnp.int32(2))
    s, ts = jax.jit(loop.dream.reset)(ep, jax.random.key(2), start)
    step = jax.jit(loop.dream.step)
    s1, t1 = step(ep, s, jnp.int32(0), jax.random.key(3))
    s1b, t1b = step(ep, s, jnp.int32(0), jax.random.key(3))
    np.testing.assert_array_equal(t1.observation["latent"], t1b.observation["latent"])
    assert t1.observation["latent"].shape == start["latent"].shape
    if not bool(t1.terminated):
        _, t2 = step(ep, s1, jnp.int32(loop.A), jax.random.key(4))  # stop: terminated
        assert bool(t2.terminated)
        _, t2 = step(ep, s1, jnp.int32(0) if t1.observation["action_mask"][0] else jnp.int32(loop.A), jax.random.key(4))
        assert bool(t2.terminated) or bool(t2.truncated)  # horizon h = 2 reached
