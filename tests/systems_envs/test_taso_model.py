"""Tests of the TASO ``.model`` loader: the shipped files and synthetic files for every op type."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from systems_envs.graph.executor import execute, random_feeds
from systems_envs.graph.ir import GraphError
from systems_envs.graph.taso_model import load_taso_model, write_taso_records

DATA = Path(__file__).resolve().parents[2] / "systems_envs" / "data" / "taso_models"

# FORMATS.md 1.8 (compute records), in IR op names: DROPOUT -> identity, POOL2D_* -> *pool,
# EW_ADD -> add. Weights left after dropping pool weights and unused 1-D weights.
SHIPPED = {
    "squeezenet": ({"conv2d": 26, "identity": 1, "maxpool": 3, "avgpool": 1, "relu": 26, "concat": 8,
                    "reshape": 1}, 26, [(1, 1000)]),
    "bts": ({"relu": 1, "reshape": 32, "transpose": 32, "matmul": 48}, 32, [(64, 1024)] * 9),
    "inceptionv3": ({"conv2d": 94, "maxpool": 5, "avgpool": 9, "concat": 30}, 94, [(1, 2048, 1, 1)]),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_files_load_validate_and_run(name):
    counts, n_weights, out_shapes = SHIPPED[name]
    g = load_taso_model(DATA / f"{name}.model")
    g.validate()
    assert g.name == name
    assert g.op_counts() == dict(sorted(counts.items()))
    assert g.num_ops() == sum(counts.values())
    assert len(g.weights) == n_weights and len(g.inputs) == 1
    assert all(g.uses(w.id) for w in g.weights)  # unused/pool weights were dropped
    outs = execute(g, seed=0)
    assert [o.shape for o in outs] == out_shapes
    assert all(np.isfinite(o).all() for o in outs)


def test_shipped_inception_convs_fuse_relu_and_use_taso_pads():
    g = load_taso_model(DATA / "inceptionv3.model")
    convs = [n for n in g.compute_nodes() if n.op == "conv2d"]
    assert all(n.attrs["activation"] == "relu" for n in convs)
    # record 189: 1x7 SAME conv on 17x17 -> pads (0, 3, 0, 3)
    assert any(n.attrs["pads"] == (0, 3, 0, 3) and g.shape(n.inputs[1])[2:] == (1, 7) for n in convs)


def test_loader_seed_does_not_change_the_graph():
    a = load_taso_model(DATA / "squeezenet.model", seed=0)
    b = load_taso_model(DATA / "squeezenet.model", seed=5)
    assert a.hash() == b.hash()


# ----------------------------------------------------------------------------- synthetic files


def _load(tmp_path: Path, records, name="synthetic"):
    path = tmp_path / f"{name}.model"
    path.write_text(write_taso_records(records))
    return load_taso_model(path)


def _only(g, op):
    nodes = [n for n in g.compute_nodes() if n.op == op]
    assert len(nodes) == 1, g.op_counts()
    return nodes[0]


def test_depthwise_strided_same_conv_matches_cudnn_symmetric_padding(tmp_path):
    torch = pytest.importorskip("torch")
    # 10x10, k3, s2, SAME: total pad 1 -> TASO pads 1 on both sides, output 5x5
    g = _load(tmp_path, [
        (100, 0, "10:0", "1,8,10,10"),
        (101, 1, "11:0", "8,1,3,3"),
        (102, 3, "100:0,101:0", "1,8,10,10,8,1,3,3,2,2,0,2,1,1"),
    ])
    conv = _only(g, "conv2d")
    assert conv.attrs["groups"] == 8 and conv.attrs["activation"] == "relu"
    assert conv.attrs["pads"] == (1, 1, 0, 0) and conv.shape == (1, 8, 5, 5)
    feeds = random_feeds(g, seed=3)
    (y,) = execute(g, feeds)
    ref = torch.nn.functional.conv2d(torch.from_numpy(feeds["input_100"]), torch.from_numpy(feeds["w_101"]),
                                     stride=2, padding=1, groups=8).relu().numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_vgg_style_stack_with_dropout_and_valid_pool(tmp_path):
    g = _load(tmp_path, [
        (100, 0, "10:0", "1,3,8,8"),
        (101, 1, "11:0", "4,3,3,3"),
        (102, 1, "11:0", "4,4,3,3"),
        (103, 1, "11:0", "4,1,2,2"),  # synthetic pool weight
        (104, 1, "11:0", "16,5"),
        (105, 1, "11:0", "7"),  # unused weight
        (106, 3, "100:0,101:0", "1,3,8,8,4,3,3,3,1,1,0,0,1,1"),
        (107, 8, "106:0", "1,4,8,8"),
        (108, 3, "107:0,102:0", "1,4,8,8,4,4,3,3,1,1,0,2,1,1"),
        (109, 6, "108:0,103:0", "1,4,8,8,6,2,2,2,2,1,0,0,0"),
        (110, 4, "109:0", "1,4,4,4"),
        (111, 14, "110:0", "4,16"),
        (112, 18, "111:0,104:0", "0,2"),
    ])
    assert g.op_counts() == {"conv2d": 2, "identity": 1, "matmul": 1, "maxpool": 1, "relu": 1, "reshape": 1}
    assert {w.attrs["name"] for w in g.weights} == {"w_101", "w_102", "w_104"}
    (y,) = execute(g)
    assert y.shape == (4, 5) and np.isfinite(y).all()


def test_split_with_two_used_outputs_and_ew_ops(tmp_path):
    g = _load(tmp_path, [
        (100, 0, "10:0", "4,6"),
        (101, 13, "100:0", "1,2,4"),
        (102, 8, "101:0", "4,2"),
        (103, 10, "101:1", "4,4"),
        (104, 1, "11:0", "4,2"),
        (105, 28, "102:0,104:0", "4,2"),
        (106, 29, "103:0,103:0", "4,4"),
    ])
    split = _only(g, "split")
    assert split.shapes == ((4, 2), (4, 4))
    assert g.op_counts() == {"div": 1, "relu": 1, "split": 1, "sub": 1, "tanh": 1}
    feeds = random_feeds(g, seed=1)
    a, b = execute(g, feeds)
    x = feeds["input_100"]
    np.testing.assert_allclose(a, np.maximum(x[:, :2], 0) - feeds["w_104"], rtol=1e-6)
    np.testing.assert_allclose(b, np.ones((4, 4)), rtol=1e-6)


def test_sigmoid_both_layouts_tanh_and_ew_mul(tmp_path):
    g = _load(tmp_path, [
        (100, 0, "10:0", "2,3"),
        (101, 9, "100:0", "2,3"),  # upstream layout: input dims
        (102, 9, "100:0", "1"),  # fork layout: inPlace flag
        (103, 10, "100:0", "2,3"),
        (104, 17, "101:0,102:0", "2,3"),
        (105, 16, "104:0,103:0", "2,3"),
    ])
    assert g.op_counts() == {"add": 1, "mul": 1, "sigmoid": 2, "tanh": 1}
    feeds = random_feeds(g)
    (y,) = execute(g, feeds)
    x = feeds["input_100"]
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(y, s * s + np.tanh(x), rtol=1e-5)


def test_batchnorm_variance_weight_is_positive(tmp_path):
    g = _load(tmp_path, [
        (100, 0, "10:0", "1,4,3,3"),
        (101, 1, "11:0", "4"), (102, 1, "11:0", "4"), (103, 1, "11:0", "4"), (104, 1, "11:0", "4"),
        (105, 11, "100:0,101:0,102:0,103:0,104:0", "1,4,3,3"),
    ])
    assert g.node_by_name("w_104").attrs["init"] == "positive"
    assert g.node_by_name("w_101").attrs["init"] == "normal"
    assert (random_feeds(g, seed=0)["w_104"] > 0).all()
    (y,) = execute(g)
    assert y.shape == (1, 4, 3, 3) and np.isfinite(y).all()


@pytest.mark.parametrize("params, perm", [
    ("2,0,1,1", (2, 0, 1)),  # variant B: perm, shuffle
    ("3,2,0,1,0", (2, 0, 1)),  # variant C: rank, perm, shuffle
    ("4,2,3", (2, 0, 1)),  # variant A: output dims, unique permutation
    ("1,0,2,1", (1, 0, 2)),
])
def test_transpose_variants(tmp_path, params, perm):
    g = _load(tmp_path, [(100, 0, "10:0", "2,3,4"), (101, 15, "100:0", params)])
    t = _only(g, "transpose")
    assert t.attrs["perm"] == perm
    feeds = random_feeds(g)
    np.testing.assert_array_equal(execute(g, feeds)[0], feeds["input_100"].transpose(perm))


def test_transpose_variant_a_ambiguous_is_an_error(tmp_path):
    with pytest.raises(GraphError, match=r"guid 101 .*cannot be recovered"):
        _load(tmp_path, [(100, 0, "10:0", "3,3,2"), (101, 15, "100:0", "3,2,3")])


def test_transpose_variant_a_size_one_dims(tmp_path):
    g = _load(tmp_path, [(100, 0, "10:0", "1,5,1"), (101, 15, "100:0", "5,1,1")])
    assert _only(g, "transpose").attrs["perm"] == (1, 0, 2)


def test_enlarge_and_merge_gconv(tmp_path):
    g = _load(tmp_path, [
        (100, 0, "10:0", "1,4,6,6"),
        (101, 1, "11:0", "8,4,1,1"),
        (102, 1, "11:0", "8,4,3,3"),
        (103, 1, "11:0", "8,2,3,3"),
        (104, 20, "101:0,102:0", "8,4,1,1"),
        (105, 21, "103:0", "2"),
        (106, 3, "100:0,104:0", "1,4,6,6,8,4,3,3,1,1,0,0,1,1"),
        (107, 3, "100:0,105:0", "1,4,6,6,8,4,3,3,1,1,0,0,1,1"),
        (108, 16, "106:0,107:0", "1,8,6,6"),
    ])
    assert _only(g, "enlarge").shape == (8, 4, 3, 3)
    mg = _only(g, "merge_gconv")
    assert mg.attrs["count"] == 2 and mg.shape == (8, 4, 3, 3)
    feeds = random_feeds(g)
    (y,) = execute(g, feeds)
    w1 = np.pad(feeds["w_101"], ((0, 0), (0, 0), (1, 1), (1, 1)))
    g2 = _load(tmp_path, [(100, 0, "10:0", "1,4,6,6"), (101, 1, "11:0", "8,4,3,3"),
                          (102, 3, "100:0,101:0", "1,4,6,6,8,4,3,3,1,1,0,0,1,1")], name="plain")
    (y1,) = execute(g2, {"input_100": feeds["input_100"], "w_101": w1})
    # the merged grouped weight is block diagonal: conv with it == grouped conv with 2 groups
    w3 = feeds["w_103"]
    x = feeds["input_100"]
    g3 = _load(tmp_path, [(100, 0, "10:0", "1,4,6,6"), (101, 1, "11:0", "8,2,3,3"),
                          (102, 3, "100:0,101:0", "1,4,6,6,8,2,3,3,1,1,0,0,1,1")], name="grouped")
    (y2,) = execute(g3, {"input_100": x, "w_101": w3})
    np.testing.assert_allclose(y, y1 + y2, rtol=1e-5, atol=1e-5)


def test_records_out_of_order_still_load(tmp_path):
    g = _load(tmp_path, [
        (103, 8, "102:0", "2,2"),
        (102, 18, "100:0,101:0", "0,2"),
        (101, 1, "11:0", "2,2"),
        (100, 0, "10:0", "2,2"),
    ])
    assert g.op_counts() == {"matmul": 1, "relu": 1}


# ----------------------------------------------------------------------------- malformed input


def _expect_error(tmp_path, text: str, pattern: str):
    path = tmp_path / "bad.model"
    path.write_text(text)
    with pytest.raises(GraphError, match=pattern) as info:
        load_taso_model(path)
    msg = str(info.value)
    assert "\n" not in msg and "bad.model" in msg
    return msg


GOOD = [(100, 0, "10:0", "2,2"), (101, 1, "11:0", "2,2"), (102, 18, "100:0,101:0", "0,2")]


def test_cycle_is_rejected_naming_a_record(tmp_path):
    text = write_taso_records([(100, 0, "10:0", "2,2"), (101, 16, "100:0,102:0", "2,2"),
                               (102, 8, "101:0", "2,2")])
    _expect_error(tmp_path, text, r"record guid 10[12] .*cycle")


def test_truncated_file(tmp_path):
    text = write_taso_records(GOOD)
    _expect_error(tmp_path, text.rsplit("\n", 3)[0] + "\n", r"not a multiple of 4.*line 9")


def test_unknown_type(tmp_path):
    _expect_error(tmp_path, write_taso_records(GOOD + [(103, 45, "102:0", "2,2")]),
                  r"guid 103 \(line 13\).*unsupported op type.*45")


@pytest.mark.parametrize("records, pattern", [
    (GOOD + [(103, 8, "102:0", "2,x")], r"guid 103 \(line 13\) parameter: 'x' is not an integer"),
    ([(100, 0, "10:0", "2,2"), ("1o1", 1, "11:0", "2,2")], r"line 5 \(guid\): '1o1' is not an integer"),
    (GOOD + [(103, 8, "102", "2,2")], r"guid 103.*not 'guid:index'"),
    (GOOD + [(103, 8, "999:0", "2,2")], r"guid 103.*unknown guid 999"),
    (GOOD + [(103, 8, "102:1", "2,2")], r"guid 103.*output 1"),
    (GOOD + [(103, 8, "102:0", "2,3")], r"guid 103.*differ from the actual shape"),
    (GOOD[:2] + [(102, 18, "100:0,101:0", "0")], r"guid 102.*expected 2 parameters"),
    (GOOD[:2] + [(102, 18, "100:0,101:0", "0,3")], r"guid 102.*rank parameter 3"),
    (GOOD[:2] + [(102, 18, "100:0,101:0", "7,2")], r"guid 102.*unknown activation code 7"),
    (GOOD + [(102, 8, "101:0", "2,2")], r"guid 102.*duplicate guid"),
    (GOOD + [(103, 8, "5:0", "2,2")], r"guid 103.*pseudo-source 5"),
    ([(100, 0, "10:0", "1,3,8,8"), (101, 1, "11:0", "4,3,3,3"),
      (102, 3, "100:0,101:0", "1,3,8,8,4,3,3,3,1,1,0,0,0,0")], r"guid 102.*SAME padding.*\(1, 1\)"),
    ([(100, 0, "10:0", "1,3,8,8"), (101, 1, "11:0", "4,3,3,3"),
      (102, 3, "100:0,101:0", "1,3,9,8,4,3,3,3,1,1,1,0,0,0")], r"guid 102.*input dims"),
    ([(100, 0, "10:0", "1,4,8,8"), (101, 1, "11:0", "4,3,3,3"),
      (102, 3, "100:0,101:0", "1,4,8,8,4,3,3,3,1,1,1,0,0,0")], r"guid 102.*do not divide input channels"),
    ([(100, 0, "10:0", "1,4,8,8"), (101, 6, "100:0", "1,4,8,8,7,2,2,2,2,1,0,0,0")],
     r"guid 101.*pool type parameter 7"),
    ([(100, 0, "10:0", "2,3,4"), (101, 15, "100:0", "1,0")], r"guid 101.*TRANSPOSE has 2 parameters"),
    ([(100, 0, "10:0", "2,3")], r"no outputs"),
])
def test_malformed_records(tmp_path, records, pattern):
    _expect_error(tmp_path, write_taso_records(records), pattern)


def test_empty_and_missing_file(tmp_path):
    _expect_error(tmp_path, "", r"empty file")
    with pytest.raises(GraphError, match="no such file"):
        load_taso_model(tmp_path / "absent.model")
