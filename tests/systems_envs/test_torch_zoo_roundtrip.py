"""Models written in PyTorch (torch_zoo) exported by both PyTorch exporters at opsets 17, 18
and 20, imported, written back unchanged and after greedy optimisation: each file loads in
onnxruntime, passes the full ONNX check, keeps the source interface and opset, computes
nothing constant at run time, and matches the PyTorch model's outputs.

A representative subset runs by default (every exporter, every opset, the operator
families: SE/ReduceMean + HardSwish, ReLU6 Clip, class-token Gather + exact GELU, masked
attention + tanh GELU, RMSNorm); the full matrix is marked slow.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from systems_envs.graph import torch_zoo  # noqa: E402
from systems_envs.graph.onnx_io import export_onnx, import_onnx  # noqa: E402
from systems_envs.rewrite.ruleset import default_rules  # noqa: E402
from systems_envs.rewrite.search import greedy  # noqa: E402

RTOL = ATOL = 1e-4
GREEDY_STEPS = 30
_RULES = None


def rules():
    global _RULES
    if _RULES is None:
        _RULES = default_rules()
    return _RULES


def interface(model: onnx.ModelProto):
    """(inputs, outputs) as (name, element type, shape) triples; initializers are not inputs."""
    def vi(v):
        t = v.type.tensor_type
        return v.name, t.elem_type, tuple(d.dim_value for d in t.shape.dim)

    inits = {i.name for i in model.graph.initializer}
    return [vi(v) for v in model.graph.input if v.name not in inits], [vi(v) for v in model.graph.output]


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def source_model(name: str, opset: int, dynamo: bool):
    if name in torch_zoo.TEXT_MODELS:
        pytest.importorskip("transformers")
    if dynamo:
        pytest.importorskip("onnxscript")
    model = torch_zoo.build(name)
    try:
        proto = torch_zoo.export_model(model, opset=opset, dynamo=dynamo)
    except torch_zoo.OpsetUnavailable as e:
        pytest.skip(str(e))
    return model, proto


def check_written(name: str, written: onnx.ModelProto, source: onnx.ModelProto, model) -> None:
    onnx.checker.check_model(written, full_check=True)
    assert interface(written) == interface(source), name
    stamp = lambda m: {o.domain or "": o.version for o in m.opset_import}  # noqa: E731
    assert stamp(written)[""] == stamp(source)[""], name
    # nothing constant is computed at run time: every node reads at least one non-constant tensor
    consts = {i.name for i in written.graph.initializer}
    for node in written.graph.node:
        assert node.op_type != "Constant", f"{name}: {node.name} is a Constant node"
        ins = [i for i in node.input if i]
        assert not ins or not all(i in consts for i in ins), \
            f"{name}: {node.op_type} node {node.name!r} reads only initializers"
    got = run_ort(written, model.inputs)
    want = model.torch_outputs()
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=name)


def round_trip(name: str, opset: int, dynamo: bool, optimise: bool):
    """Import, write back unchanged (and greedily optimised); return the imported graph."""
    model, source = source_model(name, opset, dynamo)
    graph = import_onnx(source)
    check_written(name, export_onnx(graph), source, model)
    if optimise:
        result = greedy(graph, rules(), max_steps=GREEDY_STEPS)
        check_written(f"{name} (greedy, {len(result.rewrites)} rewrites)", export_onnx(result.graph), source, model)
    return graph


# (model, opset, dynamo exporter, IR ops the import must produce, whether nothing may stay opaque)
FAST = [
    ("mobilenetv3", 18, True, {"hardswish", "hardsigmoid", "global_avgpool"}, True),  # SE blocks (ReduceMean)
    ("vit", 18, True, {"gather", "gelu", "layernorm"}, True),  # class-token scalar Gather, exact GELU (Erf)
    ("gpt2", 18, True, {"gelu_tanh", "gather"}, False),  # HF masked attention (Where/IsNaN/And), int64 inputs
    ("t5_encoder", 17, False, {"rmsnorm", "gather"}, False),  # RMSNorm from Pow/ReduceMean/Sqrt/Reciprocal
    ("mobilenetv2", 20, False, {"relu6"}, True),  # ReLU6 as Clip, TorchScript exporter
    ("convnext", 20, True, {"layernorm", "gelu"}, True),  # exact GELU as Gelu at opset 20
]


@pytest.mark.parametrize("name,opset,dynamo,ops,no_opaque", FAST,
                         ids=[f"{n}-{o}-{'dynamo' if d else 'ts'}" for n, o, d, _, _ in FAST])
def test_zoo_round_trip(name, opset, dynamo, ops, no_opaque):
    graph = round_trip(name, opset, dynamo, optimise=True)
    counts = graph.op_counts()
    assert ops <= set(counts), (name, counts)
    assert not no_opaque or "opaque" not in counts, (name, counts)


MATRIX = [(n, o, d) for n in torch_zoo.ZOO_NAMES for o in (17, 18, 20) for d in (True, False)]


@pytest.mark.slow
@pytest.mark.parametrize("name,opset,dynamo", MATRIX,
                         ids=[f"{n}-{o}-{'dynamo' if d else 'ts'}" for n, o, d in MATRIX])
def test_zoo_round_trip_matrix(name, opset, dynamo):
    round_trip(name, opset, dynamo, optimise=True)


def test_unknown_zoo_name_is_a_clear_error():
    with pytest.raises(torch_zoo.ZooError, match="unknown zoo model 'alexnet'"):
        torch_zoo.build("alexnet")
