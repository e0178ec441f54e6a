"""Cost models: analytic roofline against hand-computed counts, caching, and measured mode."""
from __future__ import annotations

import json

import pytest

from systems_envs.graph.cost import DEVICES, CostModel, flops_and_bytes, get_device, roofline_ms
from systems_envs.graph.ir import Graph

V100 = DEVICES["v100"]


def node_flops_bytes(g: Graph, nid: int) -> tuple[float, float]:
    n = g[nid]
    return flops_and_bytes(n.op, n.attrs, [g.shape(r) for r in n.inputs], list(n.shapes))


def expected_ms(flops: float, nbytes: float, dev=V100) -> float:
    return 1e3 * (max(flops / dev.peak_flops, nbytes / dev.mem_bandwidth) + dev.launch_overhead_s)


def test_conv2d_counts_by_hand():
    # x [1, 16, 32, 32], w [32, 16, 3, 3], pad 1, stride 1, bias, relu -> y [1, 32, 32, 32]
    g = Graph()
    c = g.add("conv2d", [g.input("x", (1, 16, 32, 32)), g.weight("w", (32, 16, 3, 3)), g.weight("b", (32,))],
              pads=(1, 1, 1, 1), activation="relu")
    out = 1 * 32 * 32 * 32  # 32768 output elements
    macs_per_out = 16 * 3 * 3  # C_in/groups * kH * kW = 144
    flops = 2 * out * macs_per_out + out + out  # MACs x2, + relu (1/elem) + bias add (1/elem)
    assert flops == 9_502_720
    nbytes = 4 * (16 * 32 * 32 + 32 * 16 * 9 + 32 + out)  # read x, w, b; write y (float32)
    assert nbytes == 4 * (16_384 + 4_608 + 32 + 32_768)
    assert node_flops_bytes(g, c) == (flops, nbytes)
    assert CostModel("v100").node_cost(g, g[c]) == pytest.approx(expected_ms(flops, nbytes))


def test_grouped_conv_counts_by_hand():
    # depthwise: x [2, 8, 10, 10], w [8, 1, 3, 3], groups 8, stride 2, no pad -> y [2, 8, 4, 4]
    g = Graph()
    c = g.add("conv2d", [g.input("x", (2, 8, 10, 10)), g.weight("w", (8, 1, 3, 3))], groups=8, strides=(2, 2))
    assert g[c].shape == (2, 8, 4, 4)
    out = 2 * 8 * 4 * 4
    flops = 2 * out * (1 * 3 * 3)
    nbytes = 4 * (2 * 8 * 100 + 8 * 9 + out)
    assert node_flops_bytes(g, c) == (flops, nbytes)


def test_matmul_counts_by_hand():
    # a [4, 64, 128] x b [128, 32] -> [4, 64, 32], tanh (4 flops/elem)
    g = Graph()
    m = g.add("matmul", [g.input("a", (4, 64, 128)), g.weight("b", (128, 32))], activation="tanh")
    out = 4 * 64 * 32
    flops = 2 * out * 128 + 4 * out
    nbytes = 4 * (4 * 64 * 128 + 128 * 32 + out)
    assert node_flops_bytes(g, m) == (flops, nbytes)
    cm = CostModel("a100")
    assert cm.node_cost(g, g[m]) == pytest.approx(expected_ms(flops, nbytes, DEVICES["a100"]))


def test_elementwise_counts_by_hand():
    # add with broadcast: [8, 16, 16] + [16] -> 1 flop per output element
    g = Graph()
    x = g.input("x", (8, 16, 16))
    a = g.add("add", [x, g.input("y", (16,))])
    r = g.add("relu", [a])
    out = 8 * 16 * 16
    assert node_flops_bytes(g, a) == (out, 4 * (out + 16 + out))
    assert node_flops_bytes(g, r) == (out, 4 * (out + out))
    # memory bound on the v100: bytes / bandwidth dominates
    f, b = node_flops_bytes(g, a)
    assert b / V100.mem_bandwidth > f / V100.peak_flops
    assert CostModel().node_cost(g, g[a]) == pytest.approx(1e3 * (b / V100.mem_bandwidth + V100.launch_overhead_s))


def test_layout_only_and_constant_nodes_cost_zero():
    g = Graph()
    x = g.input("x", (2, 6, 4))
    r = g.add("reshape", [x], shape=(12, 4))
    s = g.add("split", [r], axis=0, sizes=(4, 8))
    i = g.add("identity", [(s, 0)])
    w1, w2 = g.weight("w1", (4, 3)), g.weight("w2", (4, 5))
    wc = g.add("concat", [w1, w2], axis=1)  # depends on weights only: constant-folded
    y = g.add("matmul", [(s, 1), wc])
    g.set_outputs([i, y])
    cm = CostModel()
    costs = cm.node_costs(g)
    for nid in (x, r, s, i, w1, w2, wc):
        assert costs[nid] == 0.0
    assert costs[y] > 0
    assert cm.node_cost(g, g[wc]) > 0  # the same concat would cost if it were not constant


def test_signature_cache_and_graph_cost_is_sum():
    g = Graph()
    x = g.input("x", (1, 8, 16, 16))
    nodes = []
    h = x
    for k in range(3):  # three identical conv signatures
        h = g.add("conv2d", [h, g.weight(f"w{k}", (8, 8, 3, 3))], pads=(1, 1, 1, 1), activation="relu")
        nodes.append(h)
    p = g.add("maxpool", [h], kernel=(2, 2), strides=(2, 2))
    g.set_outputs([p])
    calls = []

    def fake_measure(graph, node):
        calls.append(node.op)
        return {"conv2d": 1.5, "maxpool": 0.25}[node.op]

    cm = CostModel(mode="measured", measure=fake_measure)
    assert cm.graph_cost(g) == pytest.approx(3 * 1.5 + 0.25)
    assert sorted(calls) == ["conv2d", "maxpool"]  # each signature costed once
    cm.graph_cost(g)
    assert len(calls) == 2
    analytic = CostModel()
    assert analytic.graph_cost(g) == pytest.approx(sum(analytic.node_costs(g).values()))
    assert analytic.graph_cost(g) == pytest.approx(3 * analytic.node_cost(g, g[nodes[0]]) + analytic.node_cost(g, g[p]))


def test_unknown_device_and_mode():
    with pytest.raises(ValueError, match="tpu9"):
        CostModel("tpu9")
    with pytest.raises(ValueError, match="unknown device"):
        get_device("nope")
    with pytest.raises(ValueError, match="mode"):
        CostModel(mode="guess")
    assert roofline_ms(0, 0, V100) == pytest.approx(1e3 * V100.launch_overhead_s)


# ----------------------------------------------------------------------------- measured mode


def conv_graph(c: int, hw: int) -> Graph:
    g = Graph(f"conv{c}x{hw}")
    x = g.input("x", (1, c, hw, hw))
    y = g.add("conv2d", [x, g.weight("w", (c, c, 3, 3))], pads=(1, 1, 1, 1), activation="relu")
    z = g.add("add", [y, x])
    r = g.add("reshape", [z], shape=(c, hw * hw))
    g.set_outputs([r])
    return g


def test_measured_costs_cached_on_disk(tmp_path, monkeypatch):
    from systems_envs.graph import measure

    monkeypatch.setenv("SYSWORLD_CACHE_DIR", str(tmp_path))
    small = conv_graph(4, 8)
    timer = measure.OnnxRuntimeTimer(repeats=5)
    assert timer.cache_path == tmp_path / "measured_costs.json"
    cm = CostModel(mode="measured", measure=timer)
    costs = cm.node_costs(small)
    assert sum(costs.values()) > 0
    assert all(costs[n.id] == 0.0 for n in small.nodes.values() if n.op in ("input", "weight", "reshape"))
    assert all(costs[n.id] > 0 for n in small.nodes.values() if n.op in ("conv2d", "add"))
    assert timer.timed == 2
    data = json.loads(timer.cache_path.read_text())
    assert len(data[timer.machine]) == 2

    # a second model (and timer) reads from the cache: nothing is timed again
    timer2 = measure.OnnxRuntimeTimer()
    monkeypatch.setattr(timer2, "time_node", lambda *a: pytest.fail("re-timed a cached signature"))
    cm2 = CostModel(mode="measured", measure=timer2)
    assert cm2.graph_cost(small) == pytest.approx(cm.graph_cost(small))
    assert timer2.timed == 0

    # a much larger convolution costs more than a tiny one
    big = conv_graph(32, 32)
    big_conv = next(n for n in big.nodes.values() if n.op == "conv2d")
    small_conv = next(n for n in small.nodes.values() if n.op == "conv2d")
    timer3 = measure.OnnxRuntimeTimer(cache_dir=tmp_path / "other", repeats=5)
    assert timer3(big, big_conv) > timer3(small, small_conv)
    assert (tmp_path / "other" / "measured_costs.json").is_file()
