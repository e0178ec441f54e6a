"""World model: loss decreases on a fixed dataset, one compile per bucket, save/restore."""
import dataclasses

import jax
import numpy as np
import pytest

from worldmodels import world_model as wmod
from worldmodels.imagined_env import ImaginedEnv, encode_starts, open_loop
from worldmodels.world_model import (Trainer, WorldModel, WorldModelConfig, make_train_batch, restore_world_model,
                                     save_world_model, train_buckets)

CFG = WorldModelConfig(width=8, depth=1, latent_dim=8, hidden=16, slot_width=8, mixtures=2, batch_size=3,
                       seq_len=3, lr=3e-3)


@pytest.fixture(scope="module")
def setup(small_world):
    return small_world(CFG, episodes=2, seed=0, max_steps=6, horizon=10)


def test_loss_decreases_and_no_retrace(setup):
    store, wm, params = setup
    trainer = Trainer(wm)
    state = trainer.init(params)
    buckets = train_buckets(store, CFG)
    rng = np.random.default_rng(0)
    batches = [make_train_batch(store, rng.integers(0, store.num_transitions, 3), 3, buckets) for _ in range(3)]
    before = wmod.TRACE_COUNT["train_step"]
    losses = []
    for i in range(80):
        state, m = trainer.step(state, batches[i % 3], jax.random.key(i % 3))
        losses.append(float(m["loss"]))
    # every batch of the same bucket reuses the one compiled step
    assert wmod.TRACE_COUNT["train_step"] - before == 1
    assert all(b.graphs.nodes.shape == batches[0].graphs.nodes.shape for b in batches)
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert np.isfinite(losses).all() and last < 0.7 * first, (first, last)
    assert int(state.step) == 80
    # the reward normaliser is not trained
    assert float(state.params["norm"]["reward_mean"]) == float(params["norm"]["reward_mean"])


def test_save_restore_identical_predictions(setup, tmp_path):
    store, wm, params = setup
    trainer = Trainer(wm)
    state, _ = wmod.train(wm, params, store, 2, seed=1, state=trainer.init(params))
    save_world_model(tmp_path / "ck", state, {"test": 1})
    back = restore_world_model(tmp_path / "ck", trainer.init(params), {"test": 1})
    assert int(back.step) == 2
    starts = encode_starts(wm, state.params, store, np.arange(4))
    starts2 = encode_starts(wm, back.params, store, np.arange(4))
    np.testing.assert_array_equal(np.asarray(starts.latent), np.asarray(starts2.latent))
    acts = np.zeros(3, np.int32)
    env = ImaginedEnv(wm, max_steps=3)
    out1 = open_loop(env, state.params, jax.tree.map(lambda x: x[0], starts), acts, jax.random.key(5))
    out2 = open_loop(env, back.params, jax.tree.map(lambda x: x[0], starts2), acts, jax.random.key(5))
    for a, b in zip(out1, out2):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # a different config is refused with a clear error
    with pytest.raises(ValueError, match="incompatible config"):
        restore_world_model(tmp_path / "ck", trainer.init(params), {"test": 2})


def test_bad_names():
    with pytest.raises(ValueError, match="unknown encoder"):
        WorldModel.create(dataclasses.replace(CFG, encoder="gnn"), "rewrite", 4, 3)
    with pytest.raises(ValueError, match="unknown dynamics"):
        WorldModel.create(dataclasses.replace(CFG, dynamics="mdn"), "rewrite", 4, 3)
    with pytest.raises(ValueError, match="kind"):
        WorldModel.create(CFG, "routing", 4, 3)
    with pytest.raises(ValueError, match="mask_loss"):
        WorldModel.create(dataclasses.replace(CFG, mask_loss="some"), "rewrite", 4, 3)


def test_residual_mask_loss_ignores_consumed_slots(setup):
    """mask_loss="residual": the targets of slots consumed by the window's actions (the
    applied candidate and those sharing a node with it) do not enter the loss; "all" uses them."""
    store, _, params = setup
    a = store.num_slots
    t = np.flatnonzero(store.action < a)[0]
    batch = make_train_batch(store, np.array([t]), 3, train_buckets(store, CFG))
    flipped = batch._replace(next_mask=batch.next_mask.copy())
    flipped.next_mask[0, :, store.action[t]] = 1.0 - flipped.next_mask[0, :, store.action[t]]
    losses = {}
    for mode in ("all", "residual"):
        wm = WorldModel.for_replay(dataclasses.replace(CFG, mask_loss=mode), store)
        losses[mode] = [float(wm.loss(params, b, jax.random.key(0))[1]["mask"]) for b in (batch, flipped)]
    assert losses["residual"][0] == losses["residual"][1]
    assert losses["all"][0] != losses["all"][1]
    assert losses["residual"][0] != losses["all"][0]
