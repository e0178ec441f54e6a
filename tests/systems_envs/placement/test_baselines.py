"""Every baseline gives a valid placement; the good ones beat one device on a branchy graph."""
import math

import numpy as np
import pytest

from systems_envs.placement.baselines import BASELINES, anneal, run_baseline
from systems_envs.placement.devices import get_device_set
from systems_envs.placement.simulator import compile_graph, step_time

from .conftest import branchy


@pytest.fixture(scope="module")
def toy():
    return compile_graph(branchy(), "gpu4")


@pytest.mark.parametrize("method", list(BASELINES))
def test_baseline_valid(toy, method):
    kw = {"iters": 200} if method == "anneal" else {}
    p, res = run_baseline(toy, method, seed=0, **kw)
    assert p.shape == (toy.n,) and p.min() >= 0 and p.max() < 4
    assert res.valid and math.isfinite(res.step_time_ms)


@pytest.mark.parametrize("method", ["metis", "expert", "etf", "anneal"])
def test_beats_or_ties_single(toy, method):
    kw = {"iters": 200} if method == "anneal" else {}
    single = run_baseline(toy, "single")[1].step_time_ms
    t = run_baseline(toy, method, seed=0, **kw)[1].step_time_ms
    assert t <= single + 1e-9
    if method in ("etf", "anneal"):
        assert t < 0.6 * single  # four independent branches on four GPUs


def test_anneal_improves_and_is_seeded(toy):
    start = np.zeros(toy.n, dtype=np.int64)
    a = anneal(toy, seed=3, iters=300, start=start)
    b = anneal(toy, seed=3, iters=300, start=start)
    np.testing.assert_array_equal(a, b)
    assert step_time(toy, a) < step_time(toy, start)


def test_too_big_for_one_device():
    """Small-memory GPUs: one device cannot hold the weights, the other baselines split them."""
    g = branchy(branches=4, depth=4, batch=1, ch=256, hw=8)  # 16 x 2.36 MB weights
    devs = get_device_set("gpu4").with_memory(20e6)
    cg = compile_graph(g, devs)
    p, res = run_baseline(cg, "single")
    assert not res.valid and math.isinf(res.step_time_ms)
    for m in ("expert", "metis", "etf", "anneal"):
        kw = {"iters": 100} if m == "anneal" else {}
        assert run_baseline(cg, m, seed=0, **kw)[1].valid, m


def test_transformer_l32_d4096_needs_several_gpus():
    from systems_envs.placement.graphs import load_placement_graph

    cg = compile_graph(load_placement_graph("transformer_l32_d4096"), "gpu4")
    assert not run_baseline(cg, "single")[1].valid
    for m in ("expert", "metis", "etf"):
        assert run_baseline(cg, m)[1].valid, m


def test_unknown_method(toy):
    with pytest.raises(ValueError, match="unknown placement method 'x'"):
        run_baseline(toy, "x")
