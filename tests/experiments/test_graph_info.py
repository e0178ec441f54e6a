"""End-to-end tests of ``python -m experiments.graph_info``."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from systems_envs.graph.executor import execute
from systems_envs.graph.load import load_graph

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "systems_envs" / "data" / "taso_models"


def run(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "experiments.graph_info", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("graph", ["squeezenet", str(MODELS / "inceptionv3.model")])
def test_prints_table_and_json(graph):
    r = run(graph)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    g = load_graph(graph)
    assert result["graph"] == graph
    assert result["ops"] == g.num_ops()
    assert result["op_counts"] == g.op_counts()
    assert result["cost_ms"] > 0
    assert any(line.startswith("conv2d") for line in lines)  # the readable op table


def test_export_runs_in_onnxruntime(tmp_path):
    out = tmp_path / "sq.onnx"
    r = run("squeezenet", "--export", str(out))
    assert r.returncode == 0, r.stderr
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    g = load_graph("squeezenet")
    x = np.random.default_rng(0).standard_normal(g.inputs[0].shape).astype(np.float32)
    (got,) = sess.run(None, {g.inputs[0].attrs["name"]: x})
    (want,) = execute(g, {g.inputs[0].attrs["name"]: x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("make_arg, needle", [
    (lambda d: "no_such_graph", "not a built-in graph"),
    (lambda d: str(d / "missing.model"), "no such file"),
    (lambda d: _write(d / "trunc.model", "100\n0\n10:0\n"), "truncated"),
    (lambda d: _write(d / "cyc.model", "100\n0\n10:0\n1,3\n101\n8\n102:0\n1,3\n102\n8\n101:0\n1,3\n"), "cycle"),
    (lambda d: _write(d / "bad.onnx", "not an onnx file"), "bad.onnx"),
])
def test_bad_input_is_one_line(tmp_path, make_arg, needle):
    r = run(make_arg(tmp_path))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], r.stderr


def test_reports_opaque_op_types_and_exports_at_source_opset(tmp_path):
    """An opset-18 file with ops the IR does not model (Abs, TopK): the readable output and the
    JSON name them with their node counts; --export keeps the opset, names and dtypes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Abs", ["a"], ["b"]),
             helper.make_node("TopK", ["b", "k"], ["vals", "idx"], axis=1),
             helper.make_node("ReduceMean", ["vals", "axes"], ["m"], keepdims=0),
             helper.make_node("Relu", ["m"], ["score"])]
    graph = helper.make_graph(nodes, "opq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, [2]),
                               helper.make_tensor_value_info("idx", TensorProto.INT64, [2, 3])],
                              [numpy_helper.from_array(np.array([3], np.int64), "k"),
                               numpy_helper.from_array(np.array([1], np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    src = tmp_path / "opq.onnx"
    onnx.save(model, src)
    out = tmp_path / "out.onnx"
    r = run(str(src), "--export", str(out))
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["opaque"] == {"Abs": 2, "TopK": 1}
    assert result["opaque_nodes"] == 3
    assert "Abs x2" in r.stdout and "TopK x1" in r.stdout
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    assert [o.version for o in written.opset_import if o.domain == ""] == [18]
    assert [(o.name, o.type.tensor_type.elem_type) for o in written.graph.output] == \
        [("score", TensorProto.FLOAT), ("idx", TensorProto.INT64)]
    x = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    got = ort.InferenceSession(written.SerializeToString()).run(None, {"x": x})
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-6)
