"""The world model on the placement environments: train, imagine and validate through the same
interfaces as for rewriting (device slots, no stop action, terminal-only rewards)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import train_world_model as twm
from worldmodels.fidelity import evaluate
from worldmodels.imagined_env import ImaginedEnv, encode_starts, rollout
from worldmodels.replay import collect
from worldmodels.world_model import WorldModel, WorldModelConfig, train

CFG = WorldModelConfig(width=8, depth=1, latent_dim=8, hidden=16, slot_width=8, mixtures=2, batch_size=2,
                       seq_len=2)


@pytest.fixture(scope="module")
def device_world():
    # squeezenet in chunks of 16 ops: 5 steps per episode, 4 devices
    store = collect("DevicePlacement-v0", ["squeezenet"], 3, "random", seed=0,
                    env_kwargs=dict(devices="gpu4", groups=16, reward="speedup"), horizon=5)
    wm = WorldModel.for_replay(CFG, store)
    params = wm.init(jax.random.key(0), store)
    return store, wm, params


def test_device_placement_train_imagine_validate(device_world):
    store, wm, params = device_world
    assert wm.kind == "placement" and wm.num_slots == 4 and store.episode_len.tolist() == [5, 5, 5]
    state, hist = train(wm, params, store, steps=2, seed=0)
    assert all(np.isfinite(h["loss"]) for h in hist)
    starts = encode_starts(wm, state.params, store, np.arange(store.num_states))
    env = ImaginedEnv(wm, max_steps=5)
    s, ts = env.reset(state.params, jax.random.key(0), jax.tree.map(lambda x: x[0], starts))
    assert ts.action_mask.shape == (4,) and bool(ts.action_mask.any())        # devices only, no stop
    s, ts = jax.jit(env.step)(state.params, s, jnp.int32(2), jax.random.key(1))
    assert ts.action_mask.shape == (4,) and bool(ts.action_mask.any())        # never an empty mask
    rewards, done = jax.jit(lambda p, k, st: rollout(env, p, k, st, 5))(state.params, jax.random.key(2), starts)
    assert rewards.shape == (5, store.num_states) and bool(done[-1].all())     # truncated at max_steps at the latest
    m = evaluate(wm, state.params, store, ks=(1, 5), max_windows=0)
    # every episode ends with the simulated speedup: the final-step error and its baseline are reported
    real_final = store.reward[store.terminated]
    assert m["final_reward_mae_baseline_k1"] == pytest.approx(np.abs(real_final.mean() - real_final).mean(), rel=1e-5)
    assert np.isfinite(m["final_reward_mae_k1"]) and 0.0 <= m["mask_f1_k1"] <= 1.0


@pytest.mark.parametrize("env, extra", [
    ("DevicePlacement-v0", ["--data.groups", "32"]),
    ("MemoryPlacement-v0", []),
])
def test_train_world_model_on_placement(tmp_path, env, extra):
    logdir = str(tmp_path / "run")
    s = twm.main(["--preset", "tiny", "--env", env, "--graphs", "squeezenet", "--episodes", "2",
                  "--data.horizon", "5", "--train.ks", "1,5", "--train.eval_windows", "0", "--logdir", logdir] + extra)
    assert s["env"] == env and s["train_transitions"] > 0 and s["validation_transitions"] > 0
    assert s["final_reward_mae"] is not None and s["final_reward_mae_baseline"] is not None
    assert 0.0 <= s["mask_f1"] <= 1.0


def test_placement_flag_errors(tmp_path):
    with pytest.raises(ValueError, match="groups"):
        twm.main(["--preset", "tiny", "--env", "DevicePlacement-v0", "--data.groups", "-1",
                  "--logdir", str(tmp_path / "x")])
