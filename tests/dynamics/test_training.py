"""Dynamics models learn: loss decreases on a synthetic latent system; ensemble disagreement."""
import jax
import numpy as np
import pytest

from dynamics import make_dynamics
from tests.dynamics.test_dynamics import MODELS, Z, build, first, synthetic, train


@pytest.mark.parametrize("key", sorted(MODELS))
def test_loss_decreases(key):
    dyn = build(key)
    batch = synthetic()
    _, losses = train(dyn, batch, 150)
    assert np.isfinite(losses).all()
    first5, last5 = losses[:5].mean(), losses[-5:].mean()
    assert last5 < 0.6 * first5, (key, first5, last5)


def test_open_loop_unroll_differs_and_learns():
    batch = synthetic()
    teacher, opened = build("ensemble_det"), make_dynamics("ensemble", latent_dim=Z, unroll="open", **MODELS["ensemble_det"])
    desc, z0 = first(batch)
    params = teacher.init(jax.random.PRNGKey(0), z0, desc)
    lt, _ = teacher.loss(params, batch, jax.random.PRNGKey(0))
    lo, _ = opened.loss(params, batch, jax.random.PRNGKey(0))
    assert not np.isclose(float(lt), float(lo))
    _, losses = train(opened, batch, 150)
    assert losses[-5:].mean() < 0.6 * losses[:5].mean()


def test_ensemble_disagreement_larger_out_of_distribution():
    dyn = build("ensemble_det")
    batch = synthetic(b=64)
    params, _ = train(dyn, batch, 300)
    desc, _ = first(batch)
    dis = jax.jit(jax.vmap(lambda z, a: dyn.disagreement(params, dyn.initial_carry(params, z, desc), a)))
    d_in = dis(batch.latent[:, 0], batch.action[:, 0])
    d_out = dis(batch.latent[:, 0] * 6.0 + 3.0, batch.action[:, 0])  # far outside the training range
    assert float(d_in.min()) > 0.0
    assert float(d_out.mean()) > 2.0 * float(d_in.mean()), (float(d_in.mean()), float(d_out.mean()))
