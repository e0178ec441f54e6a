"""Export fidelity on hand-built ONNX models (no PyTorch needed): the source interface and
opset are kept, scalar indices stay scalar, constants are initializers, composite ops are
recognised from their primitive forms, and everything still computes what the source does."""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from systems_envs.graph.executor import execute
from systems_envs.graph.ir import Graph, GraphError
from systems_envs.graph.onnx_io import export_onnx, import_onnx

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def make(nodes, inputs, outputs, inits=(), opset=18):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(*i) for i in inputs],
                          [helper.make_tensor_value_info(*o) for o in outputs],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    onnx.checker.check_model(m, full_check=True)
    return m


def run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def interface(model):
    vi = lambda v: (v.name, v.type.tensor_type.elem_type, tuple(d.dim_value for d in v.type.tensor_type.shape.dim))  # noqa
    return [vi(v) for v in model.graph.input], [vi(v) for v in model.graph.output]


def assert_same(model, written, feeds):
    onnx.checker.check_model(written, full_check=True)
    assert interface(written) == interface(model)
    assert {o.domain: o.version for o in written.opset_import}[""] == {o.domain: o.version for o in model.opset_import}[""]
    for a, b in zip(run(written, feeds), run(model, feeds)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


RNG = np.random.default_rng(0)
EMB = RNG.standard_normal((20, 8)).astype(np.float32)


def text_model(opset=18):
    """int64 token ids and mask (as Hugging Face writes them): embedding Gather, mask Where,
    class-token select with a scalar index, mean over the last axis (axes as an input at 18)."""
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["h"]),
             helper.make_node("Cast", ["attention_mask"], ["mb"], to=TensorProto.BOOL),
             helper.make_node("Unsqueeze", ["mb", "ax2"], ["mb3"]),
             helper.make_node("Where", ["mb3", "h", "zero"], ["hm"]),
             helper.make_node("Gather", ["hm", "zero_i"], ["cls"], axis=1),
             helper.make_node("ReduceMean", ["hm", "ax2"] if opset >= 18 else ["hm"], ["pooled"], keepdims=0,
                              **({} if opset >= 18 else {"axes": [2]}))]
    return make(nodes, [("input_ids", I64, [2, 5]), ("attention_mask", I64, [2, 5])],
                [("cls", F, [2, 8]), ("pooled", F, [2, 5])],
                [("emb", EMB), ("ax2", np.array([2], np.int64)), ("zero", np.float32(0)),
                 ("zero_i", np.array(0, np.int64))], opset=opset)


TEXT_FEEDS = {"input_ids": RNG.integers(0, 20, (2, 5)).astype(np.int64),
              "attention_mask": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int64)}


@pytest.mark.parametrize("opset", [13, 17, 18, 20])
def test_text_interface_dtypes_names_and_scalar_gather(opset):
    model = text_model(opset)
    g = import_onnx(model)
    assert {n.attrs["name"]: n.attrs["dtype"] for n in g.inputs} == {"input_ids": "int64", "attention_mask": "int64"}
    assert g.op_counts()["gather"] == 2 and "reduce_mean" in g.op_counts()
    assert [g.shape(o) for o in g.outputs] == [(2, 8), (2, 5)]  # the 0-d index keeps the class-token select 2-D
    written = export_onnx(g)
    assert_same(model, written, TEXT_FEEDS)
    assert not any(n.op_type == "Cast" and n.input[0] == "input_ids" for n in written.graph.node)  # ids stay int64


def test_export_to_another_opset_converts_or_says_why():
    model = text_model(18)
    g = import_onnx(model)
    written = export_onnx(g, opset=17)  # the opaque Unsqueeze/Where are converted by onnx.version_converter
    onnx.checker.check_model(written, full_check=True)
    assert {o.domain: o.version for o in written.opset_import}[""] == 17
    for a, b in zip(run(written, TEXT_FEEDS), run(model, TEXT_FEEDS)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(GraphError, match="export opset 9 is not supported"):
        export_onnx(g, opset=9)


def test_constant_subgraphs_are_initializers():
    """Concatenated weights and a folded batchnorm are written as values, not recomputed."""
    g = Graph("consts")
    x = g.input("x", (2, 4))
    w = g.add("concat", [g.weight("w1", (4, 3)), g.weight("w2", (4, 5))], axis=1)
    scale = g.add("batchnorm", [g.weight("s", (1, 8)), g.weight("gm", (8,)), g.weight("bt", (8,)),
                                g.weight("mu", (8,)), g.weight("var", (8,), init="positive")])
    y = g.add("mul", [g.add("matmul", [x, w]), scale])
    g.set_outputs([y])
    model = export_onnx(g)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Mul"]
    xv = RNG.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(run(model, {"x": xv})[0], execute(g, {"x": xv})[0], rtol=1e-5, atol=1e-6)
    assert [o.name for o in model.graph.output] == ["output_0"]  # graphs not imported from ONNX


def _gelu_erf(order):
    c = {"sqrt2": np.float32(math.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5),
         "inv": np.float32(1 / math.sqrt(2))}
    if order == "div":  # PyTorch's exporters: x / sqrt2 -> erf -> +1 -> x * . -> * 0.5
        nodes = [helper.make_node("Div", ["x", "sqrt2"], ["t"]), helper.make_node("Erf", ["t"], ["e"]),
                 helper.make_node("Add", ["e", "one"], ["p"]), helper.make_node("Mul", ["x", "p"], ["m"]),
                 helper.make_node("Mul", ["m", "half"], ["y"])]
    else:  # 0.5 * x first, erf(x * 1/sqrt2), constants on the left
        nodes = [helper.make_node("Mul", ["half", "x"], ["h"]), helper.make_node("Mul", ["x", "inv"], ["t"]),
                 helper.make_node("Erf", ["t"], ["e"]), helper.make_node("Add", ["one", "e"], ["p"]),
                 helper.make_node("Mul", ["h", "p"], ["y"])]
    return make(nodes, [("x", F, [3, 7])], [("y", F, [3, 7])], list(c.items()), opset=17)


def _rmsnorm():
    nodes = [helper.make_node("Pow", ["x", "two"], ["sq"]), helper.make_node("ReduceMean", ["sq", "axes"], ["ms"]),
             helper.make_node("Add", ["ms", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["sd"]),
             helper.make_node("Reciprocal", ["sd"], ["r"]), helper.make_node("Mul", ["x", "r"], ["n"]),
             helper.make_node("Mul", ["gamma", "n"], ["y"])]
    return make(nodes, [("x", F, [2, 3, 8])], [("y", F, [2, 3, 8])],
                [("two", np.float32(2)), ("axes", np.array([-1], np.int64)), ("eps", np.float32(1e-6)),
                 ("gamma", RNG.standard_normal(8).astype(np.float32))], opset=18)


def _layernorm():
    nodes = [helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]), helper.make_node("Sub", ["x", "mu"], ["d"]),
             helper.make_node("Mul", ["d", "d"], ["sq"]), helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["sd"]),
             helper.make_node("Div", ["d", "sd"], ["n"]), helper.make_node("Mul", ["n", "gamma"], ["s"]),
             helper.make_node("Add", ["s", "beta"], ["y"])]
    return make(nodes, [("x", F, [4, 8])], [("y", F, [4, 8])],
                [("eps", np.float32(1e-5)), ("gamma", RNG.standard_normal(8).astype(np.float32)),
                 ("beta", RNG.standard_normal(8).astype(np.float32))], opset=13)


@pytest.mark.parametrize("build,op", [(lambda: _gelu_erf("div"), "gelu"), (lambda: _gelu_erf("mul"), "gelu"),
                                      (_rmsnorm, "rmsnorm"), (_layernorm, "layernorm")],
                         ids=["gelu-div", "gelu-mul", "rmsnorm", "layernorm"])
def test_composites_recognised_from_primitive_forms(build, op):
    model = build()
    g = import_onnx(model)
    assert g.op_counts() == {op: 1}, g.op_counts()
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    x = (RNG.standard_normal(shape) * 2).astype(np.float32)
    assert_same(model, export_onnx(g), {"x": x})
    np.testing.assert_allclose(execute(g, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_not_recognised_when_an_intermediate_is_used_elsewhere():
    model = _gelu_erf("div")
    model.graph.output.append(helper.make_tensor_value_info("e", F, [3, 7]))  # erf output is also an output
    g = import_onnx(model)
    assert "gelu" not in g.op_counts()


def test_outputs_that_are_inputs_constants_or_repeated():
    g = Graph("odd_outputs")
    x = g.input("x", (2, 3))
    c = g.add("relu", [g.weight("w", (2, 3), value=np.arange(6, dtype=np.float32).reshape(2, 3) - 2)])
    y = g.add("add", [x, c])
    g.set_outputs([x, c, y, y])
    model = export_onnx(g)
    assert [o.name for o in model.graph.output] == ["output_0", "output_1", "output_2", "output_3"]
    xv = RNG.standard_normal((2, 3)).astype(np.float32)
    for a, b in zip(run(model, {"x": xv}), execute(g, {"x": xv})):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_static_slices_become_splits_and_are_written_as_slices():
    """Unit-step slices with constant bounds (torch chunk, rotate_half) are layout-only
    splits in the IR; parts nobody reads are not copied: the file has Slices again."""
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    nodes = [helper.make_node("Slice", ["x", "s0", "e0", "a1"], ["lo"]),
             helper.make_node("Slice", ["x", "s1", "e1", "a1"], ["hi"]),
             helper.make_node("Neg", ["hi"], ["nhi"]),
             helper.make_node("Concat", ["nhi", "lo"], ["rot"], axis=1),
             helper.make_node("Slice", ["x", "s2", "e2", "a02"], ["mid"])]
    model = make(nodes, [("x", F, [4, 6])], [("rot", F, [4, 6]), ("mid", F, [2, 4])],
                 [("s0", i64(0)), ("e0", i64(3)), ("s1", i64(3)), ("e1", i64(2 ** 62)), ("a1", i64(1)),
                  ("s2", i64(1, -5)), ("e2", i64(-1, 5)), ("a02", i64(0, 1))], opset=18)
    g = import_onnx(model)
    assert "opaque" not in g.op_counts() and g.op_counts()["split"] == 4, g.op_counts()
    written = export_onnx(g)
    assert "Split" not in {n.op_type for n in written.graph.node}
    assert_same(model, written, {"x": RNG.standard_normal((4, 6)).astype(np.float32)})
