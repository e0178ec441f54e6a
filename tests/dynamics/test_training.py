"""Dynamics models learn: loss decreases on a synthetic latent system; ensemble disagreement."""
import functools

import jax
import numpy as np
import pytest

from dynamics import make_dynamics
from tests.dynamics.test_dynamics import MODELS, Z, build, first, synthetic, train

N_SEQ, STEPS = 48, 200


@functools.lru_cache(maxsize=None)
def trained(key):
    """(dyn, params, per-step losses) after STEPS Adam steps on the synthetic data (cached:
    one compile per model for this file)."""
    dyn = build(key)
    params, losses = train(dyn, synthetic(b=N_SEQ), STEPS)
    return dyn, params, losses


@pytest.mark.parametrize("key", [pytest.param(k, marks=pytest.mark.slow) if k == "rssm_cat" else k for k in sorted(MODELS)])
def test_loss_decreases(key):
    _, _, losses = trained(key)
    assert np.isfinite(losses).all()
    first5, last5 = losses[:5].mean(), losses[-5:].mean()
    assert last5 < 0.6 * first5, (key, first5, last5)


def test_open_loop_unroll_is_a_different_objective():
    batch = synthetic()
    teacher, params, _ = trained("ensemble_det")
    opened = make_dynamics("ensemble", latent_dim=Z, unroll="open", **MODELS["ensemble_det"])
    lt, mt = teacher.loss(params, batch, jax.random.PRNGKey(0))
    lo, mo = opened.loss(params, batch, jax.random.PRNGKey(0))
    assert np.isfinite(float(lo))
    # trained with teacher forcing: feeding back its own predictions compounds errors
    assert float(mo["latent"]) > float(mt["latent"])


def test_ensemble_disagreement_larger_out_of_distribution():
    dyn, params, _ = trained("ensemble_det")
    batch = synthetic(b=N_SEQ)
    desc, _ = first(batch)
    dis = jax.jit(jax.vmap(lambda z, a: dyn.disagreement(params, dyn.initial_carry(params, z, desc), a)))
    d_in = dis(batch.latent[:, 0], batch.action[:, 0])
    d_out = dis(batch.latent[:, 0] * 6.0 + 3.0, batch.action[:, 0])  # far outside the training range
    assert float(d_in.min()) > 0.0
    assert float(d_out.mean()) > 2.0 * float(d_in.mean()), (float(d_in.mean()), float(d_out.mean()))
