"""The exporter writes a squeeze-and-excitation gate's broadcast Mul so that onnxruntime keeps
it in its NCHWc layout where onnxruntime can, and as the plain broadcast where it cannot;
both forms compute the same values."""
from __future__ import annotations

import collections
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from systems_envs.graph.executor import execute
from systems_envs.graph.ir import Graph
from systems_envs.graph.measure import make_session
from systems_envs.graph.onnx_io import _Exporter, channel_scale_operand, export_onnx, nchwc_upsampled
from systems_envs.graph.ort_cost import NCHWC_DOMAIN as NCHWC


def optimised_ops(model: onnx.ModelProto) -> collections.Counter:
    """(domain, op type) counts of the graph onnxruntime runs (default optimisations)."""
    fd, path = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        make_session(model, optimized_path=path)
        return collections.Counter((n.domain, n.op_type) for n in onnx.load(path).graph.node)
    finally:
        os.unlink(path)


def se_block(channels: int, squeeze: int, gate_first: bool = False) -> Graph:
    """conv -> squeeze-and-excitation (global pool, conv + relu, conv + sigmoid, channel
    scale) -> conv, on a 1 x ``channels`` x 8 x 8 image."""
    g = Graph("se")
    x = g.input("x", (1, channels, 8, 8))
    a = g.add("conv2d", [x, g.weight("w0", (channels, channels, 1, 1))], activation="relu")
    p = g.add("global_avgpool", [a])
    h = g.add("conv2d", [p, g.weight("w1", (squeeze, channels, 1, 1))], activation="relu")
    s = g.add("conv2d", [h, g.weight("w2", (channels, squeeze, 1, 1))], activation="sigmoid")
    m = g.add("mul", [s, a] if gate_first else [a, s])
    g.set_outputs([g.add("conv2d", [m, g.weight("w3", (channels, channels, 1, 1))])])
    return g


def nchwc_runtime() -> bool:
    """Whether onnxruntime runs convolutions of 32 channels in NCHWc layout on this machine."""
    g = Graph("conv")
    g.set_outputs([g.add("conv2d", [g.input("x", (1, 32, 8, 8)), g.weight("w", (32, 32, 1, 1))])])
    return any(d == NCHWC for d, _ in optimised_ops(export_onnx(g)))


def test_channel_scale_operand():
    g = se_block(32, 16)
    mul = next(n for n in g.nodes.values() if n.op == "mul")
    assert channel_scale_operand(g, mul, g.constant_nodes()) == 1
    g = se_block(32, 16, gate_first=True)
    mul = next(n for n in g.nodes.values() if n.op == "mul")
    assert channel_scale_operand(g, mul, g.constant_nodes()) == 0
    # same shapes (SiLU's x * sigmoid(x)) and a constant scale are no channel-scale muls
    g = Graph("other")
    x = g.input("x", (1, 4, 8, 8))
    same = g.add("mul", [x, g.add("sigmoid", [x])])
    const = g.add("mul", [x, g.weight("s", (1, 4, 1, 1))])
    g.set_outputs([same, const])
    for nid in (same, const):
        assert channel_scale_operand(g, g.nodes[nid], g.constant_nodes()) is None


@pytest.mark.parametrize("gate_first", [False, True])
def test_gate_upsampled_where_onnxruntime_keeps_nchwc(gate_first):
    if not nchwc_runtime():
        pytest.skip("onnxruntime has no NCHWc convolutions on this CPU")
    g = se_block(32, 16, gate_first)
    written = export_onnx(g)
    plain = export_onnx(g, ort_layout=False)
    assert [n.op_type for n in written.graph.node].count("Resize") == 1
    assert "Resize" not in [n.op_type for n in plain.graph.node]
    ops, plain_ops = optimised_ops(written), optimised_ops(plain)
    assert ops[(NCHWC, "Upsample")] == 1
    # only the graph output leaves the layout; the plain broadcast reorders out and back in
    assert ops[(NCHWC, "ReorderOutput")] == 1 < plain_ops[(NCHWC, "ReorderOutput")]
    assert plain_ops[(NCHWC, "ReorderInput")] > ops[(NCHWC, "ReorderInput")]
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 32, 8, 8)).astype(np.float32)}
    want = execute(g, feeds)[0]
    for model in (written, plain):
        got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def linear_gate_block(channels: int) -> Graph:
    """An SE block whose gate comes from linear layers on the pooled vector (as Keras writes
    it): Gemm, which onnxruntime runs in NCHW on any CPU."""
    g = Graph("se_linear")
    x = g.input("x", (1, channels, 8, 8))
    a = g.add("conv2d", [x, g.weight("w0", (channels, channels, 1, 1))], activation="relu")
    v = g.add("reshape", [g.add("global_avgpool", [a])], shape=(1, channels))
    h = g.add("linear", [v, g.weight("w1", (channels, 8))], activation="relu")
    s = g.add("linear", [h, g.weight("w2", (8, channels))], activation="sigmoid")
    m = g.add("mul", [a, g.add("reshape", [s], shape=(1, channels, 1, 1))])
    g.set_outputs([g.add("conv2d", [m, g.weight("w3", (channels, channels, 1, 1))])])
    return g


def upsample_kept(model: onnx.ModelProto) -> bool:
    """Whether onnxruntime turns the model's Resize into an NCHWc Upsample."""
    return optimised_ops(model)[(NCHWC, "Upsample")] > 0


@pytest.mark.parametrize("build", [lambda: linear_gate_block(32), lambda: se_block(32, 18)],
                         ids=["linear-gate", "squeeze-18"])
def test_gate_written_as_onnxruntime_runs_it(build):
    # the gate is upsampled exactly where onnxruntime then keeps it in NCHWc; elsewhere an
    # upsampled gate would be an NCHW Resize whose full-size output is reordered into the
    # layout, slower than the broadcast (the linear gate on any CPU; 18 squeeze channels,
    # no multiple of the block, on this one)
    g = build()
    forced = _Exporter(g, 17, 0, upsampled=None).run([("output_0", onnx.TensorProto.FLOAT)])
    assert [n.op_type for n in forced.graph.node].count("Resize") == 1
    written = [n.op_type for n in export_onnx(g).graph.node]
    assert written.count("Resize") == int(upsample_kept(forced))
    if g.name == "se_linear":
        assert "Resize" not in written
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 32, 8, 8)).astype(np.float32)}
    got = ort.InferenceSession(export_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got[0], execute(g, feeds)[0], rtol=1e-4, atol=1e-5)


def test_layout_check_falls_back_to_the_broadcast_when_onnxruntime_cannot_load():
    # an unloadable model (here: empty) leaves every gate a plain broadcast, never a failed export
    assert nchwc_upsampled(onnx.ModelProto(), {7: "upsample_7"}) == set()
