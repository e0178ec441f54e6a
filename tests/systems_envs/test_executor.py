"""The NumPy reference executor against torch.nn.functional."""
from __future__ import annotations

import numpy as np
import pytest

from systems_envs.graph.executor import execute
from systems_envs.graph.ir import Graph
from systems_envs.graph.ops import same_pads

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = dict(rtol=1e-4, atol=1e-5)
ACTS = {"none": lambda t: t, "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


def rand(shape, seed, positive=False):
    v = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return np.abs(v) + 0.5 if positive else v


def run1(g: Graph, feeds: dict) -> np.ndarray:
    return execute(g, feeds)[0]


@pytest.mark.parametrize(
    "cin,cout,k,stride,pad,groups,dil,act",
    [
        (4, 6, 3, 1, "same", 1, 1, "none"),
        (4, 6, 3, 2, "same", 2, 1, "relu"),
        (4, 6, 5, 2, "valid", 1, 1, "sigmoid"),
        (6, 6, 3, 1, (1, 0, 2, 1), 6, 1, "tanh"),  # depthwise, explicit asymmetric pads
        (4, 8, 3, 1, (2, 2, 2, 2), 4, 2, "relu"),  # dilation + groups
        (3, 5, 1, 1, "valid", 1, 1, "none"),
    ],
)
def test_conv2d_matches_torch(cin, cout, k, stride, pad, groups, dil, act):
    H = W = 9
    x, w, b = rand((2, cin, H, W), 0), rand((cout, cin // groups, k, k), 1), rand((cout,), 2)
    if pad == "same":
        ph, pw = same_pads(H, k, stride), same_pads(W, k, stride)
        pads = (ph[0], pw[0], ph[1], pw[1])
    elif pad == "valid":
        pads = (0, 0, 0, 0)
    else:
        pads = pad
    g = Graph()
    y = g.add("conv2d", [g.input("x", x.shape), g.weight("w", w.shape), g.weight("b", b.shape)],
              strides=(stride, stride), pads=pads, dilations=(dil, dil), groups=groups, activation=act)
    g.set_outputs([y])
    got = run1(g, {"x": x, "w": w, "b": b})
    pt, pl, pb, pr = pads
    xt = F.pad(torch.from_numpy(x), (pl, pr, pt, pb))
    want = ACTS[act](F.conv2d(xt, torch.from_numpy(w), torch.from_numpy(b), stride=stride, dilation=dil,
                              groups=groups)).numpy()
    if pad == "same":
        assert got.shape[2:] == (-(-H // stride), -(-W // stride))
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("include", [True, False])
def test_pools_match_torch(include):
    x = rand((2, 3, 7, 7), 3)
    g = Graph()
    xi = g.input("x", x.shape)
    ap = g.add("avgpool", [xi], kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), count_include_pad=include)
    mp = g.add("maxpool", [xi], kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), activation="relu")
    gp = g.add("global_avgpool", [xi])
    g.set_outputs([ap, mp, gp])
    got_ap, got_mp, got_gp = execute(g, {"x": x})
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(got_ap, F.avg_pool2d(xt, 3, 2, 1, count_include_pad=include).numpy(), **TOL)
    np.testing.assert_allclose(got_mp, torch.relu(F.max_pool2d(xt, 3, 2, 1)).numpy(), **TOL)
    np.testing.assert_allclose(got_gp, F.adaptive_avg_pool2d(xt, 1).numpy(), **TOL)


def test_batchnorm_layernorm_softmax_match_torch():
    x = rand((2, 4, 5, 5), 4)
    s, b, m, v = rand((4,), 5), rand((4,), 6), rand((4,), 7), rand((4,), 8, positive=True)
    t = rand((3, 6, 10), 9)
    gamma, beta = rand((10,), 10), rand((10,), 11)
    g = Graph()
    bn = g.add("batchnorm", [g.input("x", x.shape)] + [g.weight(n, (4,)) for n in "sbmv"], epsilon=1e-3)
    ti = g.input("t", t.shape)
    ln = g.add("layernorm", [ti, g.weight("gamma", (10,)), g.weight("beta", (10,))], epsilon=1e-5)
    sm1 = g.add("softmax", [ti], axis=1)
    sm2 = g.add("softmax", [ti], axis=-1)
    g.set_outputs([bn, ln, sm1, sm2])
    got = execute(g, {"x": x, "s": s, "b": b, "m": m, "v": v, "t": t, "gamma": gamma, "beta": beta})
    T = torch.from_numpy
    want = [
        F.batch_norm(T(x), T(m), T(v), T(s), T(b), training=False, eps=1e-3),
        F.layer_norm(T(t), (10,), T(gamma), T(beta), eps=1e-5),
        F.softmax(T(t), dim=1),
        F.softmax(T(t), dim=-1),
    ]
    for a, w in zip(got, want):
        np.testing.assert_allclose(a, w.numpy(), **TOL)


def test_matmul_batched_broadcast_and_linear():
    a, b = rand((3, 1, 4, 5), 12), rand((2, 5, 6), 13)
    x, w, bias = rand((7, 5), 14), rand((5, 3), 15), rand((3,), 16)
    g = Graph()
    mm = g.add("matmul", [g.input("a", a.shape), g.input("b", b.shape)], activation="tanh")
    lin = g.add("linear", [g.input("x", x.shape), g.weight("w", w.shape), g.weight("bias", (3,))],
                activation="sigmoid")
    g.set_outputs([mm, lin])
    got_mm, got_lin = execute(g, {"a": a, "b": b, "x": x, "w": w, "bias": bias})
    assert got_mm.shape == (3, 2, 4, 6)
    T = torch.from_numpy
    np.testing.assert_allclose(got_mm, torch.tanh(torch.matmul(T(a), T(b))).numpy(), **TOL)
    np.testing.assert_allclose(got_lin, torch.sigmoid(F.linear(T(x), T(w).T, T(bias))).numpy(), **TOL)


def test_gelu_and_elementwise():
    x, y = rand((4, 6), 17), rand((1, 6), 18, positive=True)
    g = Graph()
    xi, yi = g.input("x", x.shape), g.input("y", y.shape)
    outs = [g.add(op, [xi]) for op in ("gelu", "relu", "sigmoid", "tanh")]
    outs += [g.add(op, [xi, yi]) for op in ("add", "sub", "mul", "div")]
    g.set_outputs(outs)
    got = execute(g, {"x": x, "y": y})
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    want = [F.gelu(X), torch.relu(X), torch.sigmoid(X), torch.tanh(X), X + Y, X - Y, X * Y, X / Y]
    for a, w in zip(got, want):
        np.testing.assert_allclose(a, w.numpy(), **TOL)


def test_enlarge_1x1_equals_3x3_with_pad_1():
    x, w1 = rand((1, 4, 6, 6), 19), rand((5, 4, 1, 1), 20)
    g = Graph()
    xi = g.input("x", x.shape)
    wi = g.weight("w1", w1.shape)
    small = g.add("conv2d", [xi, wi])
    big_w = g.add("enlarge", [wi, g.weight("w3", (5, 4, 3, 3))])
    big = g.add("conv2d", [xi, big_w], pads=(1, 1, 1, 1))
    g.set_outputs([small, big, big_w])
    a, b, ew = execute(g, {"x": x, "w1": w1})
    np.testing.assert_allclose(a, b, **TOL)
    np.testing.assert_allclose(a, F.conv2d(torch.from_numpy(x), torch.from_numpy(w1)).numpy(), **TOL)
    assert ew.shape == (5, 4, 3, 3) and np.count_nonzero(ew[:, :, [0, 2]]) == 0


@pytest.mark.parametrize("groups,count", [(4, 2), (4, 4), (6, 3), (2, 0)])
def test_merge_gconv(groups, count):
    """conv(x, w, groups=G) == conv(x, merge_gconv(w, count), groups=G/count)."""
    count_eff = count or groups
    cin, cout = 2 * groups, 3 * groups
    x, w = rand((1, cin, 5, 5), 21), rand((cout, cin // groups, 3, 3), 22)
    g = Graph()
    xi, wi = g.input("x", x.shape), g.weight("w", w.shape)
    ref = g.add("conv2d", [xi, wi], groups=groups, pads=(1, 1, 1, 1))
    mw = g.add("merge_gconv", [wi], count=count_eff, groups=groups if count else 0)
    merged = g.add("conv2d", [xi, mw], groups=groups // count_eff, pads=(1, 1, 1, 1))
    g.set_outputs([ref, merged])
    a, b = execute(g, {"x": x, "w": w})
    np.testing.assert_allclose(a, b, **TOL)
    np.testing.assert_allclose(a, F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1,
                                           groups=groups).numpy(), **TOL)
