"""Observation -> GraphsTuple conversion, bucket padding, candidate alignment."""
import numpy as np
import pytest

from encoders.graphs import Buckets, batch_graphs, batch_observations, graph_mask, node_mask, edge_mask, to_graphs_tuple


def make_obs(rng, n, e, max_nodes=20, max_edges=40, F=5, E=3, G=2, A=6, K=3):
    """A random observation in the environment format; pad rows hold garbage on purpose."""
    nf = rng.normal(size=(max_nodes, F)).astype(np.float32)
    ef = rng.normal(size=(max_edges, E)).astype(np.float32)
    s = rng.integers(0, max_nodes, size=max_edges).astype(np.int32)
    r = rng.integers(0, max_nodes, size=max_edges).astype(np.int32)
    s[:e] = rng.integers(0, n, size=e)
    r[:e] = rng.integers(0, n, size=e)
    cand_nodes = np.full((A, K), -1, np.int32)
    cand_rule = np.full((A,), -1, np.int32)
    for a in range(A // 2):
        cand_rule[a] = rng.integers(0, 4)
        k = rng.integers(1, K + 1)
        cand_nodes[a, :k] = rng.choice(n, size=k, replace=False)
    mask = np.zeros(A + 1, np.int8)
    mask[: A // 2] = 1
    mask[-1] = 1
    return dict(node_features=nf, edge_features=ef, senders=s, receivers=r,
                n_node=np.array([n], np.int32), n_edge=np.array([e], np.int32),
                globals=rng.normal(size=G).astype(np.float32), action_mask=mask,
                candidate_rule=cand_rule, candidate_nodes=cand_nodes)


def test_to_graphs_tuple_trims_to_real_rows():
    rng = np.random.default_rng(0)
    obs = make_obs(rng, 7, 11)
    g = to_graphs_tuple(obs)
    assert g.nodes.shape == (7, 5) and g.edges.shape == (11, 3) and g.globals.shape == (1, 2)
    np.testing.assert_array_equal(g.nodes, obs["node_features"][:7])
    np.testing.assert_array_equal(g.senders, obs["senders"][:11])
    assert g.n_node.tolist() == [7] and g.n_edge.tolist() == [11]


def test_bad_observations_raise_clear_errors():
    rng = np.random.default_rng(1)
    obs = make_obs(rng, 7, 11)
    with pytest.raises(ValueError, match="missing keys"):
        to_graphs_tuple({k: v for k, v in obs.items() if k != "senders"})
    bad = dict(obs, n_node=np.array([99], np.int32))
    with pytest.raises(ValueError, match="n_node=99"):
        to_graphs_tuple(bad)
    bad = dict(obs, senders=obs["senders"].copy())
    bad["senders"][0] = 8
    with pytest.raises(ValueError, match="senders/receivers"):
        to_graphs_tuple(bad)
    with pytest.raises(ValueError, match="exceeds the largest bucket"):
        batch_graphs([obs], Buckets(nodes=(4,), edges=(64,)))
    with pytest.raises(ValueError, match="n_graph"):
        batch_graphs([obs, obs], n_graph=2)


def test_batch_pads_to_bucket_and_masks():
    rng = np.random.default_rng(2)
    obs = [make_obs(rng, 7, 11), make_obs(rng, 9, 13)]
    b = batch_graphs(obs, Buckets(nodes=(16, 32), edges=(16, 32, 64)), n_graph=4)
    assert b.nodes.shape == (32, 5)       # 16 real + 1 padding node needed -> 32
    assert b.edges.shape == (32, 3)       # 24 real edges -> 32
    assert b.n_node.shape == (4,)
    assert np.asarray(node_mask(b)).sum() == 16
    assert np.asarray(edge_mask(b)).sum() == 24
    assert np.asarray(graph_mask(b)).tolist() == [True, True, False, False]
    # second graph's edges are offset by the first graph's node count
    np.testing.assert_array_equal(b.senders[11:24], obs[1]["senders"][:13] + 7)


def test_candidates_are_offset_into_batched_nodes():
    rng = np.random.default_rng(3)
    obs = [make_obs(rng, 7, 11), make_obs(rng, 9, 13)]
    batch = batch_observations(obs)
    assert batch.candidate_nodes.shape == (2, 6, 3) and batch.action_mask.shape == (2, 7)
    for b, o in enumerate(obs):
        offset = 0 if b == 0 else 7
        valid = o["candidate_nodes"] >= 0
        np.testing.assert_array_equal(batch.candidate_nodes[b][valid], o["candidate_nodes"][valid] + offset)
        assert (batch.candidate_nodes[b][~valid] == -1).all()
        # the referenced batched node rows are the same features
        pos = batch.candidate_nodes[b][valid]
        np.testing.assert_array_equal(batch.graphs.nodes[pos], o["node_features"][o["candidate_nodes"][valid]])


def test_observations_without_candidates():
    rng = np.random.default_rng(4)
    obs = make_obs(rng, 5, 4)
    for k in ("candidate_rule", "candidate_nodes"):
        obs.pop(k)
    batch = batch_observations([obs])
    assert batch.candidate_nodes is None and batch.action_mask.shape == (1, 7)
