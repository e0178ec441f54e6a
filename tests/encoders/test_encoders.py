"""Encoders: shapes, padding invariance, batching invariance, one trace per bucket."""
import jax
import numpy as np
import pytest

from encoders import make_encoder
from encoders.graphs import Buckets, batch_graphs
from tests.encoders.test_graphs import make_obs

CFG = {"gn": dict(width=8, depth=2, latent_dim=4),
       "gat": dict(width=8, depth=2, heads=2, latent_dim=4),
       "gcn": dict(width=8, depth=2, latent_dim=4)}
SMALL = Buckets(nodes=(32, 64, 128), edges=(32, 64, 128))


@pytest.fixture(scope="module")
def graphs_and_obs():
    rng = np.random.default_rng(0)
    return [make_obs(rng, 7, 11), make_obs(rng, 9, 13)]


@pytest.mark.parametrize("name", sorted(CFG))
def test_padding_and_batching_invariance(name, graphs_and_obs):
    o1, o2 = graphs_and_obs
    enc = make_encoder(name, **CFG[name])
    tight = batch_graphs([o1, o2], SMALL)                     # 32 nodes, 32 edges, 3 graphs
    loose = batch_graphs([o1, o2], Buckets(nodes=(128,), edges=(128,)), n_graph=5)
    alone2 = batch_graphs([o2], SMALL)
    params = enc.init(jax.random.PRNGKey(0), tight)
    apply = jax.jit(enc.apply)
    x_t, z_t = apply(params, tight)
    x_l, z_l = apply(params, loose)
    x_2, z_2 = apply(params, alone2)
    assert x_t.shape == (32, 8) and z_t.shape == (3, 4) and z_l.shape == (5, 4)
    assert np.isfinite(np.asarray(x_l)).all() and np.isfinite(np.asarray(z_l)).all()
    np.testing.assert_allclose(x_t[:16], x_l[:16], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z_t[:2], z_l[:2], rtol=1e-5, atol=1e-5)
    # graph 2 encoded alone == graph 2 inside the batch
    np.testing.assert_allclose(x_2[:9], x_t[7:16], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z_2[0], z_t[1], rtol=1e-5, atol=1e-5)
    # and the output really depends on the input (not a constant map)
    assert not np.allclose(z_t[0], z_t[1])


@pytest.mark.parametrize("name", sorted(CFG))
def test_one_trace_per_bucket(name):
    rng = np.random.default_rng(5)
    enc = make_encoder(name, **CFG[name])
    traces = []

    @jax.jit
    def f(params, g):
        traces.append(g.nodes.shape)
        return enc.apply(params, g)

    batches = [batch_graphs([make_obs(rng, int(rng.integers(3, 10)), int(rng.integers(2, 15)))
                             for _ in range(2)], SMALL) for _ in range(4)]
    assert {b.nodes.shape for b in batches} == {(32, 5)}
    params = enc.init(jax.random.PRNGKey(1), batches[0])
    for b in batches:
        f(params, b)
    assert len(traces) == 1
    big = batch_graphs([make_obs(rng, 20, 40, max_nodes=20, max_edges=40) for _ in range(2)], SMALL)
    assert big.nodes.shape == (64, 5)
    f(params, big)
    f(params, batch_graphs([make_obs(rng, 19, 35) for _ in range(2)], SMALL))
    assert len(traces) == 2


def test_registry_errors():
    with pytest.raises(ValueError, match="did you mean 'gat'"):
        make_encoder("gatt")
    with pytest.raises(ValueError, match="unknown config fields"):
        make_encoder("gn", widht=3)
