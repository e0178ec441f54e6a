"""Dynamics models: shapes, purity, learning on a synthetic latent system, ensemble disagreement."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dynamics import SequenceBatch, make_dynamics, rewrite_slots
from dynamics.heads import NEG_LOGIT, SlotDescription

Z, A, T, B = 4, 4, 4, 16
MODELS = {
    "mdnrnn": dict(hidden=16, n_mixtures=2, slot_width=8),
    "ensemble": dict(hidden=16, n_members=4, slot_width=8),
    "ensemble_det": dict(hidden=16, n_members=4, slot_width=8, probabilistic=False),
    "rssm": dict(deter=16, stoch=4, hidden=16, slot_width=8),
    "rssm_cat": dict(deter=16, stoch=4, classes=4, hidden=16, slot_width=8),
}


def build(key):
    name = key.split("_")[0]
    return make_dynamics(name, latent_dim=Z, **MODELS[key])


def synthetic(seed=0, b=B, scale=1.0):
    """A small deterministic latent system: z' = tanh(W z + U[a]); reward = z'[0];
    terminated = z'[1] > 0.5; slot j legal in s' iff z' . V[j] > 0 (stop always legal);
    slot 3 is padding in every sequence."""
    rng = np.random.default_rng(seed)
    sys_rng = np.random.default_rng(1234)
    W = sys_rng.normal(size=(Z, Z)) * 0.6
    U = sys_rng.normal(size=(A + 1, Z))
    V = sys_rng.normal(size=(A, Z))
    feats = np.concatenate([np.eye(A), sys_rng.normal(size=(A, 2))], 1).astype(np.float32)
    valid_slots = np.array([True, True, True, False])
    z = np.zeros((b, T + 1, Z), np.float32)
    z[:, 0] = rng.normal(size=(b, Z)) * 0.5 * scale
    act = rng.choice([0, 1, 2, A], size=(b, T)).astype(np.int32)
    for t in range(T):
        z[:, t + 1] = np.tanh(z[:, t] @ W + U[act[:, t]]) * scale
    mask = np.concatenate([(z[:, 1:] @ V.T > 0) & valid_slots, np.ones((b, T, 1), bool)], -1).astype(np.float32)
    slots = SlotDescription(jnp.full((b, A), -1, jnp.int32), jnp.broadcast_to(feats, (b, A, feats.shape[1])),
                            jnp.broadcast_to(valid_slots, (b, A)))
    return SequenceBatch(jnp.asarray(z), slots, jnp.asarray(act), jnp.asarray(z[:, 1:, 0]),
                         jnp.asarray((z[:, 1:, 1] > 0.5).astype(np.float32)), jnp.asarray(mask),
                         jnp.ones((b, T), jnp.float32))


def first(batch):
    return jax.tree.map(lambda x: x[0], batch.slots), batch.latent[0, 0]


def train(dyn, batch, steps, seed=0, lr=3e-3):
    desc, z0 = first(batch)
    params = jax.jit(dyn.init)(jax.random.PRNGKey(seed), z0, desc)
    opt = optax.adam(lr)
    state = opt.init(params)

    @jax.jit
    def run(params, state, key):
        def upd(c, k):
            p, s = c
            (l, m), g = jax.value_and_grad(dyn.loss, has_aux=True)(p, batch, k)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), l
        (params, state), losses = jax.lax.scan(upd, (params, state), jax.random.split(key, steps))
        return params, losses

    params, losses = run(params, state, jax.random.PRNGKey(seed + 1))
    return params, np.asarray(losses)


@pytest.mark.parametrize("key", sorted(MODELS))
def test_shapes_and_purity(key):
    dyn = build(key)
    batch = synthetic()
    desc, z0 = first(batch)
    params = jax.jit(dyn.init)(jax.random.PRNGKey(0), z0, desc)
    carry = jax.jit(dyn.initial_carry)(params, z0, desc)
    step = jax.jit(dyn.step)
    c1, p1 = step(params, carry, jnp.int32(1), jax.random.PRNGKey(7))
    c2, p2 = step(params, carry, jnp.int32(1), jax.random.PRNGKey(7))
    assert p1.z_next.shape == (Z,) and p1.reward.shape == () and p1.terminated.shape == ()
    assert p1.mask_logits.shape == (A + 1,)
    assert float(p1.mask_logits[3]) == NEG_LOGIT          # padded slot never legal
    for a, b in zip(jax.tree.leaves((c1, p1)), jax.tree.leaves((c2, p2))):
        np.testing.assert_array_equal(a, b)              # same key -> identical
    zs = [step(params, carry, jnp.int32(1), jax.random.PRNGKey(k))[1].z_next for k in range(8)]
    assert max(float(jnp.abs(z - zs[0]).max()) for z in zs) > 1e-6   # different keys -> different samples
    # batched use: vmap over a batch of carries and actions
    keys = jax.random.split(jax.random.PRNGKey(3), B)

    @jax.jit
    def batched(params, latent, slots, action, keys):
        carries = jax.vmap(dyn.initial_carry, (None, 0, 0))(params, latent, slots)
        return jax.vmap(dyn.step, (None, 0, 0, 0))(params, carries, action, keys)

    _, preds = batched(params, batch.latent[:, 0], batch.slots, batch.action[:, 0], keys)
    assert preds.z_next.shape == (B, Z) and preds.mask_logits.shape == (B, A + 1)


def test_rewrite_slots_pool_candidate_nodes():
    emb = jnp.arange(12.0).reshape(6, 2)
    rule = jnp.array([3, 0, -1])
    nodes = jnp.array([[0, 2, -1], [5, -1, -1], [-1, -1, -1]])
    d = rewrite_slots(emb, rule, nodes, jnp.array([1e-3, -0.02, 0.5]))
    np.testing.assert_allclose(d.features[0, :2], (emb[0] + emb[2]) / 2)
    np.testing.assert_allclose(d.features[1, :2], emb[5])
    np.testing.assert_allclose(d.features[2], 0.0)  # padded slot: no embedding, no reward
    # the last column is the candidate reward, symlog(1e3 r): same order as the rewards
    np.testing.assert_allclose(d.features[:2, 2], [np.log(2.0), -np.log(21.0)], rtol=1e-6)
    np.testing.assert_allclose(rewrite_slots(emb, rule, nodes).features[:, 2], 0.0)
    assert d.valid.tolist() == [True, True, False]
    dyn = make_dynamics("rssm", latent_dim=Z, num_rules=4, deter=8, stoch=2, hidden=8, slot_width=8)

    @jax.jit
    def run(d):
        params = dyn.init(jax.random.PRNGKey(0), jnp.zeros(Z), d)
        return dyn.step(params, dyn.initial_carry(params, jnp.zeros(Z), d), jnp.int32(0), jax.random.PRNGKey(1))

    _, pred = run(d)
    assert pred.mask_logits.shape == (4,) and float(pred.mask_logits[2]) == NEG_LOGIT


def test_bad_config_and_batch_errors():
    with pytest.raises(ValueError, match="did you mean 'rssm'"):
        make_dynamics("rsm", latent_dim=Z)
    with pytest.raises(ValueError, match="unknown config fields"):
        make_dynamics("rssm", latent_dim=Z, determ=3)
    with pytest.raises(ValueError, match="unroll"):
        make_dynamics("rssm", latent_dim=Z, unroll="closed")
    dyn = build("mdnrnn")
    batch = synthetic()
    with pytest.raises(ValueError, match="next_mask"):   # checked before params are touched
        dyn.loss(None, batch._replace(next_mask=batch.next_mask[..., :2]), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="latent must be"):
        dyn.init(jax.random.PRNGKey(0), batch.latent[0], first(batch)[0])
