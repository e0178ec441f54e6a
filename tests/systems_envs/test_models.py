"""Tests of the built-in benchmark graphs and of ``load_graph``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import erf

from systems_envs.graph.executor import execute, random_feeds
from systems_envs.graph.ir import GraphError
from systems_envs.graph.load import load_graph
from systems_envs.graph.models import BUILTIN_GRAPHS, build_graph
from systems_envs.graph.models.transformer import bert

DATA = Path(__file__).resolve().parents[2] / "systems_envs" / "data" / "taso_models"

# exact compute-op counts and output shapes of every built-in graph
EXPECTED = {
    "bert": (184, [(64, 1024)]),
    "inception_v3": (313, [(1, 1000)]),
    "nasnet_a": (381, [(1, 5120, 7, 7)]),
    "nasrnn": (230, [(1, 512)]),
    "resnet50": (175, [(1, 1000)]),
    "resnext50": (175, [(1, 1000)]),
    "squeezenet": (65, [(1, 1000)]),
    "vit": (284, [(1, 1000)]),
}


def test_registry_names():
    assert sorted(BUILTIN_GRAPHS) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_builds_validates_and_runs(name):
    n_ops, out_shapes = EXPECTED[name]
    g = build_graph(name)
    g.validate()
    assert g.name == name
    assert 50 <= g.num_ops() <= 400
    assert g.num_ops() == n_ops, g.op_counts()
    assert [g.shape(o) for o in g.outputs] == out_shapes
    assert build_graph(name).hash() == g.hash()  # deterministic builder
    outs = execute(g, seed=0)
    assert [o.shape for o in outs] == out_shapes
    assert all(np.isfinite(o).all() and np.abs(o).max() > 0 for o in outs)
    assert_onnxruntime_matches(g, outs)


def assert_onnxruntime_matches(g, reference_outputs):
    """Export ``g`` to ONNX, run it in onnxruntime on the executor's seed-0 feeds, compare."""
    import onnxruntime as ort

    from systems_envs.graph.onnx_io import export_onnx

    model = export_onnx(g, seed=0)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = random_feeds(g, seed=0)
    got = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})
    assert len(got) == len(reference_outputs)
    for a, b in zip(got, reference_outputs):
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * scale)


def test_architecture_details():
    def convs(g):
        return [n for n in g.compute_nodes() if n.op == "conv2d"]

    rx = build_graph("resnext50")
    assert sum(n.attrs["groups"] == 32 for n in convs(rx)) == 16
    assert rx.op_counts()["batchnorm"] == len(convs(rx)) == 53
    inc = build_graph("inception_v3")
    assert len(convs(inc)) == 94 and inc.op_counts()["concat"] == 15
    nas = build_graph("nasnet_a")
    depthwise = [n for n in convs(nas) if n.attrs["groups"] == nas.shape(n.inputs[0])[1] > 1]
    assert len(depthwise) == 15 * 5 + 3 * 5
    sq = build_graph("squeezenet")
    assert sq.op_counts()["conv2d"] == sq.op_counts()["relu"] == 26
    vit = build_graph("vit")
    assert any(n.op == "conv2d" and n.attrs["strides"] == (16, 16) for n in vit.compute_nodes())
    assert vit.op_counts()["softmax"] == 12


def test_bert_attention_output_feeds_the_output_projection():
    g = build_graph("bert")

    def producer(t):
        return g[t[0]]

    projections = 0
    for n in g.compute_nodes():
        if n.op != "matmul" or g[n.inputs[1][0]].op != "weight" or not g[n.inputs[1][0]].name.endswith(".o.w"):
            continue
        projections += 1
        reshape = producer(n.inputs[0])
        transpose = producer(reshape.inputs[0])
        context = producer(transpose.inputs[0])
        assert (reshape.op, transpose.op, context.op) == ("reshape", "transpose", "matmul")
        assert producer(context.inputs[0]).op == "softmax"
        # the residual add right after the projection also reads the layer input
        (user, _), = g.uses(n.id)
        assert g[user].op == "add"
    assert projections == 8


def _bert_reference(feeds, x, layers, heads):
    """Textbook post-LN BERT encoder in NumPy, weights taken by name from ``feeds``."""
    def ln(v, p):
        mu = v.mean(-1, keepdims=True)
        var = ((v - mu) ** 2).mean(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + 1e-12) * feeds[p + ".gamma"] + feeds[p + ".beta"]

    s, d = x.shape
    dh = d // heads
    for i in range(layers):
        p = f"layer{i}"
        q, k, v = (x @ feeds[f"{p}.attn.{c}.w"] for c in "qkv")
        q, k, v = (t.reshape(s, heads, dh).transpose(1, 0, 2) for t in (q, k, v))
        scale = feeds[f"{p}.attn.scale"]  # the float32 constant 1/sqrt(d_head)
        np.testing.assert_allclose(scale, [1 / np.sqrt(dh)], rtol=1e-7)
        scores = q @ k.transpose(0, 2, 1) * scale
        e = np.exp(scores - scores.max(-1, keepdims=True))
        ctx = (e / e.sum(-1, keepdims=True)) @ v
        attn = ctx.transpose(1, 0, 2).reshape(s, d) @ feeds[f"{p}.attn.o.w"]
        x = ln(x + attn, f"{p}.ln1")
        h = x @ feeds[f"{p}.ffn.fc1.w"]
        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
        x = ln(x + h @ feeds[f"{p}.ffn.fc2.w"], f"{p}.ln2")
    return x


def test_bert_matches_a_textbook_encoder():
    g = bert(layers=2, seq=8, hidden=32, heads=4)
    feeds = {k: v.astype(np.float64) for k, v in random_feeds(g, seed=7).items()}
    (y,) = execute(g, feeds, dtype=np.float64)
    ref = _bert_reference(feeds, feeds["x"], layers=2, heads=4)
    np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_graph_builtin_names(name):
    g = load_graph(name)
    assert g.name == name and g.num_ops() == EXPECTED[name][0]


@pytest.mark.parametrize("path", sorted(DATA.glob("*.model")), ids=lambda p: p.stem)
def test_load_graph_taso_files(path):
    g = load_graph(path, seed=1)
    g.validate()
    assert g.name == path.stem and g.num_ops() > 0
    assert load_graph(str(path)).hash() == g.hash()
    outs = execute(g, seed=0)
    assert all(np.isfinite(o).all() for o in outs)
    assert_onnxruntime_matches(g, outs)


def test_load_graph_errors(tmp_path):
    with pytest.raises(GraphError, match="not a built-in graph") as info:
        load_graph("resnet51")
    assert "\n" not in str(info.value) and "resnet50" in str(info.value)
    with pytest.raises(GraphError, match="no such file") as info:
        load_graph(tmp_path / "missing.model")
    assert "\n" not in str(info.value) and "missing.model" in str(info.value)
    with pytest.raises(GraphError, match="unknown built-in graph"):
        build_graph("resnet51")
