"""The simulator against hand-computed schedules and memory accounting."""
import math

import numpy as np
import pytest

from systems_envs.graph.cost import DEVICES, flops_and_bytes, roofline_ms
from systems_envs.graph.ir import Graph, GraphError
from systems_envs.placement.devices import PRESETS, get_device_set
from systems_envs.placement.simulator import DEFAULT_OP_OVERHEAD_MS, compile_graph, simulate, step_time

from .conftest import BYTES, LAT_MS, N, XFER_MS


def test_presets():
    for name in ("gpu2", "gpu4", "gpu8", "cpu+gpu4"):
        ds = get_device_set(name)
        assert len(ds) == {"gpu2": 2, "gpu4": 4, "gpu8": 8, "cpu+gpu4": 5}[name]
        assert np.all(ds.capacity > 0)
    het = get_device_set("cpu+gpu4")
    assert het.specs[0].name == "cpu" and {s.name for s in het.specs[1:]} == {"v100"}
    assert het.bandwidth[0, 1] < het.bandwidth[1, 2]
    with pytest.raises(ValueError, match="unknown device preset 'tpu'"):
        get_device_set("tpu")
    assert set(PRESETS) >= {"gpu2", "gpu4", "gpu8", "cpu+gpu4"}


def test_durations_are_roofline_plus_overhead(chain, devs2):
    cg = compile_graph(chain, devs2)
    f, b = flops_and_bytes("relu", {}, [(1, N)], [(1, N)])
    expect = roofline_ms(f, b, DEVICES["v100"]) + DEFAULT_OP_OVERHEAD_MS
    assert cg.dur_ms[0, 0] == pytest.approx(expect)
    assert cg.n == 3 and cg.op_types == ["relu", "tanh", "sigmoid"]


def test_chain_on_one_device(chain, devs2):
    cg = compile_graph(chain, devs2)
    d = cg.dur_ms[:, 0]
    r = simulate(cg, [0, 0, 0])
    assert r.valid
    assert r.step_time_ms == pytest.approx(d.sum())
    np.testing.assert_allclose(r.start_ms, [0, d[0], d[0] + d[1]])
    assert r.transferred_bytes == 0
    np.testing.assert_allclose(r.busy_ms, [d.sum(), 0])


def test_chain_split_pays_latency_and_bandwidth(chain, devs2):
    cg = compile_graph(chain, devs2)
    d = cg.dur_ms[:, 0]
    r = simulate(cg, [0, 0, 1])
    expect = d[0] + d[1] + LAT_MS + XFER_MS + d[2]
    assert r.step_time_ms == pytest.approx(expect)
    assert r.transferred_bytes == BYTES
    r2 = simulate(cg, [0, 1, 0])  # two transfers, there and back
    assert r2.step_time_ms == pytest.approx(d.sum() + 2 * (LAT_MS + XFER_MS))
    assert r2.transferred_bytes == 2 * BYTES


def test_diamond_branches_run_in_parallel(diamond, devs2):
    cg = compile_graph(diamond, devs2)
    da, db, dc, dd = cg.dur_ms[:, 0]
    x = LAT_MS + XFER_MS
    r = simulate(cg, [0, 0, 1, 0])  # c on device 1
    c_start = da + x
    c_end = c_start + dc
    d_start = max(da + db, c_end + x)
    np.testing.assert_allclose(r.start_ms, [0, da, c_start, d_start])
    assert r.step_time_ms == pytest.approx(d_start + dd)
    # with a free link, parallel branches beat the serial schedule
    fast = get_device_set("gpu2")
    big = Graph("wide_diamond")
    a = big.add("relu", [big.input("x", (8, 512, 7, 7))])
    ends = []
    for br in range(2):
        h = a
        for k in range(4):
            h = big.add("conv2d", [h, big.weight(f"w{br}{k}", (512, 512, 3, 3))], pads=(1, 1, 1, 1))
        ends.append(h)
    big.set_outputs([big.add("add", ends)])
    cgb = compile_graph(big, fast)
    assert step_time(cgb, [0] * 5 + [1] * 4 + [0]) < step_time(cgb, [0] * 10)


def test_fan_out_transfers_serialised_on_one_link(devs2):
    g = Graph("fan")
    x = g.input("x", (1, N))
    a1 = g.add("relu", [x])
    a2 = g.add("tanh", [x])
    b1 = g.add("relu", [a1])
    b2 = g.add("relu", [a2])
    b3 = g.add("sigmoid", [a1])  # reuses the copy of a1 already on device 1
    g.set_outputs([b1, b2, b3])
    cg = compile_graph(g, devs2)
    assert cg.op_types == ["relu", "tanh", "relu", "relu", "sigmoid"]
    d = cg.dur_ms[:, 0]
    x = LAT_MS + XFER_MS
    r = simulate(cg, [0, 0, 1, 1, 1])
    a1_arr = d[0] + x
    a2_arr = max(a1_arr, d[0] + d[1]) + x  # waits for the link, not for a2
    b1_end = a1_arr + d[2]
    b2_start = max(b1_end, a2_arr)
    b3_start = b2_start + d[3]
    np.testing.assert_allclose(r.start_ms, [0, d[0], a1_arr, b2_start, b3_start])
    assert r.transferred_bytes == 2 * BYTES
    assert r.step_time_ms == pytest.approx(b3_start + d[4])


def test_peak_memory_hand_computed(chain, devs2):
    cg = compile_graph(chain, devs2)
    # one device: input x resident (4000) + at most two live activations (8000)
    r = simulate(cg, [0, 0, 0])
    np.testing.assert_allclose(r.peak_memory_bytes, [3 * BYTES, 0])
    # split: device 0 holds x and a until its transfer ends; device 1 holds the copy of a, b, c
    r = simulate(cg, [0, 1, 1])
    np.testing.assert_allclose(r.peak_memory_bytes, [2 * BYTES, 2 * BYTES])


def test_weights_stay_resident_once_per_device(devs2):
    g = Graph("w")
    x = g.input("x", (1, N))
    w = g.weight("w", (N, N))
    a = g.add("linear", [x, w])
    b = g.add("linear", [a, w])  # same weight on the same device: counted once
    g.set_outputs([b])
    cg = compile_graph(g, devs2)
    wbytes = 4 * N * N
    r = simulate(cg, [0, 0])
    assert r.peak_memory_bytes[0] == pytest.approx(wbytes + 3 * BYTES)
    r = simulate(cg, [0, 1])  # both devices need the weight
    assert r.peak_memory_bytes[0] == pytest.approx(wbytes + 2 * BYTES)
    assert r.peak_memory_bytes[1] == pytest.approx(wbytes + 2 * BYTES)


def test_out_of_memory_is_invalid_never_fast(chain, devs2):
    small = devs2.with_memory(2.5 * BYTES)
    cg = compile_graph(chain, small)
    r = simulate(cg, [0, 0, 0])
    assert not r.valid and r.oom_devices == [0]
    assert math.isinf(r.step_time_ms) and math.isinf(step_time(cg, [0, 0, 0]))
    ok = simulate(cg, [0, 1, 1])  # splitting fits
    assert ok.valid and math.isfinite(ok.step_time_ms)


def test_constant_subgraphs_are_not_placed(devs2):
    g = Graph("const")
    x = g.input("x", (1, N))
    w = g.weight("w", (1, N))
    wf = g.add("relu", [w])  # folded at load time
    g.set_outputs([g.add("add", [x, wf])])
    cg = compile_graph(g, devs2)
    assert cg.op_types == ["add"]
    assert simulate(cg, [1]).peak_memory_bytes[1] == pytest.approx(3 * BYTES)


def test_bad_placement_rejected(chain, devs2):
    cg = compile_graph(chain, devs2)
    with pytest.raises(ValueError, match="shape"):
        simulate(cg, [0, 0])
    with pytest.raises(ValueError, match="device indices"):
        simulate(cg, [0, 0, 5])
    g = Graph("empty")
    g.set_outputs([g.input("x", (1, 2))])
    with pytest.raises(GraphError, match="no operators"):
        compile_graph(g, devs2)
