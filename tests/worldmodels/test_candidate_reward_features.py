"""The candidate-reward feature reaches every candidate encoder: the model-free GNN policy,
the world model's slot descriptions (and so the latent policy), CMA-ES; and checkpoints
written before it get a clear error."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from controllers.networks import GraphPolicyValue
from dynamics import reward_feature
from encoders.graphs import batch_observations
from systems_envs.rewrite.env import GraphRewriteEnv
from worldmodels.checkpoint import Checkpointer, CheckpointError
from worldmodels.config import Config, WorldModelConfig, flatten
from worldmodels.world_model import WorldModel

CFG = WorldModelConfig(width=8, depth=1, latent_dim=8, hidden=16, slot_width=8, mixtures=2, batch_size=2, seq_len=2)


@pytest.fixture(scope="module")
def obs():
    env = GraphRewriteEnv("squeezenet", max_candidates=16, max_nodes=256, max_edges=512)
    o, _ = env.reset(seed=0)
    assert (o["candidate_reward"][:16] != 0).any()
    return o


def test_gnn_policy_reads_the_feature(obs):
    net = GraphPolicyValue(hidden=16, message_steps=1, num_rules=256)
    params = jax.jit(net.init)(jax.random.key(0), obs)
    assert params["params"]["act_hidden"]["kernel"].shape[0] == 3 * 16 + 1   # rule, location, global, reward
    apply = jax.jit(net.apply)
    logits, _ = apply(params, obs)
    flipped = dict(obs, candidate_reward=-obs["candidate_reward"])
    other, _ = apply(params, flipped)
    changed = np.asarray(logits[:16] != other[:16])
    assert changed[obs["candidate_reward"][:16] != 0].all() and not changed[obs["candidate_reward"][:16] == 0].any()
    # an observation without the key (toy environments) reads zeros: same as all-zero rewards
    bare = {k: v for k, v in obs.items() if k != "candidate_reward"}
    zeros = dict(obs, candidate_reward=np.zeros_like(obs["candidate_reward"]))
    np.testing.assert_array_equal(apply(params, bare)[0], apply(params, zeros)[0])


def test_cmaes_features_carry_the_feature(obs):
    from controllers.cmaes import default_features

    _, phi = default_features(obs)
    np.testing.assert_allclose(phi[:16, -2], reward_feature(obs["candidate_reward"][:16]), rtol=1e-6)
    assert phi[16, -2] == 0.0 and phi[16, -1] == 1.0   # the stop action: its own indicator only


@pytest.mark.parametrize("slot_rewards", [True, False])
def test_world_model_slots_carry_the_feature(obs, slot_rewards):
    """`WorldModel.slots` (what `WorldModel.encode` returns for the latent policy and the
    dynamics) over a batch of real observations, one of them with its rewards negated."""
    cfg = dataclasses.replace(CFG, slot_rewards=slot_rewards)
    wm = WorldModel.create(cfg, "rewrite", num_slots=16, num_rules=200)
    b = batch_observations([obs, dict(obs, candidate_reward=-obs["candidate_reward"])])
    emb = jnp.ones((b.graphs.nodes.shape[0], CFG.width))
    slots = wm.slots(emb, b.candidate_rule, b.candidate_nodes, b.candidate_reward)
    r = obs["candidate_reward"][:16]
    want = np.where(obs["candidate_rule"][:16] >= 0, np.stack([reward_feature(r), reward_feature(-r)]), 0.0)
    np.testing.assert_allclose(slots.features[..., -1], want if slot_rewards else 0.0, rtol=1e-6)
    assert slots.features.shape == (2, 16, CFG.width + 1)


def test_checkpoint_from_before_the_feature_is_refused(tmp_path):
    old = {k: v for k, v in flatten(Config()).items() if k != "model.slot_rewards"}
    ck = Checkpointer(tmp_path / "ck", config=old)
    ck.save(1, {"w": jnp.zeros((3, 4))})
    ck.close()
    ck = Checkpointer(tmp_path / "ck", config=Config())
    with pytest.raises(CheckpointError, match=r"model\.slot_rewards: '<missing>' \(checkpoint\) vs True \(now\)"):
        ck.restore({"w": jnp.zeros((3, 5))})
    ck.close()
