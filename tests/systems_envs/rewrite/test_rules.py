"""Soundness of every hand-written rule: for each rule, graphs where it applies; every match
is applied, the graph pruned and validated, and the outputs compared with the NumPy
executor in float64. Negative cases check the key applicability conditions."""
from __future__ import annotations

from collections import defaultdict
from typing import Callable

import numpy as np
import pytest

from systems_envs.graph.executor import execute
from systems_envs.graph.ir import Graph
from systems_envs.rewrite.rules import builtin_rules

RULES = {r.name: r for r in builtin_rules()}
CASES: dict[str, list[Callable[[], Graph]]] = defaultdict(list)
NEGATIVE: list[tuple[str, Callable[[], Graph]]] = []


def case(*names):
    def deco(fn):
        for n in names:
            CASES[n].append(fn)
        return fn
    return deco


def negative(*names):
    def deco(fn):
        NEGATIVE.extend((n, fn) for n in names)
        return fn
    return deco


def all_matches(rule, g):
    return [m for nid in g.topo_order() for m in rule.match_at(g, nid)]


def source_names(g):
    return {n.attrs["name"] for n in g.nodes.values() if n.op in ("input", "weight")}


def assert_sound(rule, g):
    """Apply every match of ``rule`` on ``g`` (each on a fresh copy) and compare outputs."""
    g.validate()
    ref = execute(g, dtype=np.float64)
    matches = all_matches(rule, g)
    assert matches, f"{rule.name} found no match"
    for m in matches:
        assert m.rule == rule.name
        h = g.copy()
        changed = rule.apply(h, m)
        assert isinstance(changed, set)
        h.prune()
        h.validate()
        assert h.hash() != g.hash(), f"{rule.name} did not change the graph"
        assert source_names(h) <= source_names(g), "a rule must not add inputs or weights"
        out = execute(h, dtype=np.float64)
        assert len(out) == len(ref)
        for a, b in zip(out, ref):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    return matches


# ----------------------------------------------------------------------------- elementwise


def _assoc(op, slot):
    def build():
        g = Graph("assoc")
        x, y, z = g.input("x", (2, 3)), g.input("y", (2, 3)), g.input("z", (3,))
        inner = g.add(op, [x, y])
        g.set_outputs([g.add(op, [inner, z] if slot == 0 else [z, inner])])
        return g
    return build


for _op in ("add", "mul"):
    case(f"{_op}_assoc")(_assoc(_op, 0))
    case(f"{_op}_assoc")(_assoc(_op, 1))


@negative("add_assoc")
def assoc_inner_is_output():
    g = _assoc("add", 0)()
    inner = g.nodes[g.outputs[0][0]].inputs[0]
    g.set_outputs([g.outputs[0], inner])
    return g


@case("factor_mul_over_add")
def factor_mul():
    g = Graph("factor")
    a, b, c = g.input("a", (2, 3)), g.input("b", (2, 3)), g.weight("c", (1, 3))
    g.set_outputs([g.add("add", [g.add("mul", [a, c]), g.add("mul", [c, b])])])
    return g


@negative("factor_mul_over_add")
def factor_no_common():
    g = Graph("factor_neg")
    a, b, c, d = (g.input(n, (2, 3)) for n in "abcd")
    g.set_outputs([g.add("add", [g.add("mul", [a, c]), g.add("mul", [d, b])])])
    return g


@case("distribute_mul_over_add")
def distribute():
    g = Graph("distribute")
    a, b, c = g.input("a", (2, 3)), g.input("b", (2, 3)), g.weight("c", (3,))
    s = g.add("add", [b, c])
    g.set_outputs([g.add("mul", [a, s]), g.add("relu", [g.add("mul", [s, g.input("e", (2, 3))])])])
    g.set_outputs([g.outputs[0]])
    g.prune()
    return g


# ----------------------------------------------------------------------------- matmul


@case("matmul_assoc_left_to_right")
def mm_assoc_ltr():
    g = Graph("mm_assoc")
    a, b, c = g.input("a", (2, 3, 4)), g.weight("b", (4, 5)), g.weight("c", (5, 6))
    g.set_outputs([g.add("matmul", [g.add("matmul", [a, b]), c], activation="relu")])
    return g


@negative("matmul_assoc_left_to_right")
def mm_assoc_inner_act():
    g = Graph("mm_assoc_neg")
    a, b, c = g.input("a", (3, 4)), g.weight("b", (4, 5)), g.weight("c", (5, 6))
    g.set_outputs([g.add("matmul", [g.add("matmul", [a, b], activation="relu"), c])])
    return g


@case("matmul_assoc_right_to_left")
def mm_assoc_rtl():
    g = Graph("mm_assoc_rtl")
    a, b, c = g.input("a", (3, 4)), g.input("b", (2, 4, 5)), g.weight("c", (5, 6))
    g.set_outputs([g.add("matmul", [a, g.add("matmul", [b, c])])])
    return g


@case("matmul_factor_left")
def mm_factor_left():
    g = Graph("mm_factor_l")
    a, b, c = g.input("a", (3, 4)), g.weight("b", (4, 5)), g.weight("c", (4, 5))
    g.set_outputs([g.add("add", [g.add("matmul", [a, b]), g.add("matmul", [a, c])])])
    return g


@case("matmul_factor_right")
def mm_factor_right():
    g = Graph("mm_factor_r")
    a, b, c = g.input("a", (3, 4)), g.input("b", (3, 4)), g.weight("c", (4, 5))
    g.set_outputs([g.add("add", [g.add("matmul", [a, c]), g.add("matmul", [b, c])])])
    return g


@negative("matmul_factor_left", "matmul_factor_right")
def mm_factor_none_shared():
    g = Graph("mm_factor_neg")
    a, b, c, d = g.input("a", (3, 4)), g.input("b", (3, 4)), g.weight("c", (4, 5)), g.weight("d", (4, 5))
    g.set_outputs([g.add("add", [g.add("matmul", [a, c]), g.add("matmul", [b, d])])])
    return g


# ----------------------------------------------------------------------------- merge_matmul


@case("merge_matmul_shared_left")
def mm_shared_left():
    g = Graph("mm_shared_l")
    a, w1, w2 = g.input("a", (2, 3, 4)), g.weight("w1", (4, 5)), g.weight("w2", (4, 6))
    m1 = g.add("matmul", [a, w1], activation="relu")
    m2 = g.add("matmul", [a, w2], activation="relu")
    g.set_outputs([m1, g.add("tanh", [m2])])
    return g


@negative("merge_matmul_shared_left")
def mm_shared_left_act_differs():
    g = mm_shared_left()
    m2 = [n for n in g.nodes.values() if n.op == "matmul"][1]
    new = g.add("matmul", list(m2.inputs), activation="sigmoid")
    g.replace_uses((m2.id, 0), (new, 0))
    g.prune()
    return g


@negative("merge_matmul_shared_left")
def mm_shared_left_would_cycle():
    g = Graph("mm_cycle")
    a, w = g.input("a", (4, 4)), g.weight("w", (4, 4))
    m1 = g.add("matmul", [a, w])
    g.set_outputs([g.add("matmul", [a, m1])])  # a @ (a @ w): merging the two would make a cycle
    return g


@case("merge_matmul_shared_right")
def mm_shared_right():
    g = Graph("mm_shared_r")
    a, w1, w2 = g.input("a", (3, 4)), g.weight("w1", (5, 3)), g.weight("w2", (2, 3))
    g.set_outputs([g.add("matmul", [w1, a]), g.add("matmul", [w2, a])])
    return g


@case("merge_linear_shared_input")
def linear_shared_bias():
    g = Graph("lin_shared")
    x = g.input("x", (2, 3, 8))
    l1 = g.add("linear", [x, g.weight("w1", (8, 4)), g.weight("b1", (4,))], activation="sigmoid")
    l2 = g.add("linear", [x, g.weight("w2", (8, 3)), g.weight("b2", (3,))], activation="sigmoid")
    g.set_outputs([l1, l2])
    return g


@case("merge_linear_shared_input")
def linear_shared_nobias():
    g = Graph("lin_shared_nb")
    x = g.input("x", (2, 8))
    g.set_outputs([g.add("linear", [x, g.weight("w1", (8, 4))]), g.add("linear", [x, g.weight("w2", (8, 3))])])
    return g


@negative("merge_linear_shared_input")
def linear_shared_bias_mismatch():
    g = Graph("lin_shared_neg")
    x = g.input("x", (2, 8))
    l1 = g.add("linear", [x, g.weight("w1", (8, 4)), g.weight("b1", (4,))])
    g.set_outputs([l1, g.add("linear", [x, g.weight("w2", (8, 3))])])
    return g


@case("merge_matmul_sum")
def mm_sum():
    g = Graph("mm_sum")
    a1, a2 = g.input("a1", (3, 4)), g.input("a2", (3, 2))
    w1, w2 = g.weight("w1", (4, 5)), g.weight("w2", (2, 5))
    g.set_outputs([g.add("add", [g.add("matmul", [a1, w1]), g.add("matmul", [a2, w2])])])
    return g


@negative("merge_matmul_sum")
def mm_sum_broadcast_add():
    g = Graph("mm_sum_neg")
    a1, a2 = g.input("a1", (3, 4)), g.input("a2", (1, 2))
    w1, w2 = g.weight("w1", (4, 5)), g.weight("w2", (2, 5))
    g.set_outputs([g.add("add", [g.add("matmul", [a1, w1]), g.add("matmul", [a2, w2])])])
    return g


# ----------------------------------------------------------------------------- merge_conv


def _conv_pair(stride2=(1, 1), act="relu", bias=True):
    g = Graph("conv_pair")
    x = g.input("x", (1, 4, 6, 6))
    ins1 = [x, g.weight("w1", (8, 4, 3, 3))] + ([g.weight("b1", (8,))] if bias else [])
    ins2 = [x, g.weight("w2", (5, 4, 3, 3))] + ([g.weight("b2", (5,))] if bias else [])
    c1 = g.add("conv2d", ins1, pads=(1, 1, 1, 1), activation=act)
    c2 = g.add("conv2d", ins2, pads=(1, 1, 1, 1), strides=stride2, activation=act)
    g.set_outputs([c1, g.add("relu", [c2])])
    return g


case("merge_conv_shared_input")(lambda: _conv_pair())
case("merge_conv_shared_input")(lambda: _conv_pair(act="none", bias=False))
negative("merge_conv_shared_input")(lambda: _conv_pair(stride2=(2, 2)))


@negative("merge_conv_shared_input")
def conv_pair_act_differs():
    g = _conv_pair(act="none")
    c2 = [n for n in g.nodes.values() if n.op == "conv2d"][1]
    new = g.add("conv2d", list(c2.inputs), pads=(1, 1, 1, 1), activation="tanh")
    g.replace_uses((c2.id, 0), (new, 0))
    g.prune()
    return g


def _conv_sum(act="none", **attrs2):
    def build():
        g = Graph("conv_sum")
        x1, x2 = g.input("x1", (2, 3, 6, 6)), g.input("x2", (2, 5, 6, 6))
        c1 = g.add("conv2d", [x1, g.weight("w1", (4, 3, 3, 3)), g.weight("b1", (4,))], pads=(1, 1, 1, 1),
                   strides=(2, 2), activation=act)
        c2 = g.add("conv2d", [x2, g.weight("w2", (4, 5, 3, 3))], **{"pads": (1, 1, 1, 1), "strides": (2, 2), **attrs2})
        g.set_outputs([g.add("add", [c1, c2])])
        return g
    return build


case("merge_conv_sum")(_conv_sum())
negative("merge_conv_sum")(_conv_sum(act="relu"))
negative("merge_conv_sum")(_conv_sum(pads=(2, 2, 2, 2), dilations=(2, 2)))  # same output shape, other geometry


@case("merge_conv_sum")
def conv_sum_two_biases():
    g = Graph("conv_sum_b")
    x1, x2 = g.input("x1", (1, 3, 5, 5)), g.input("x2", (1, 2, 5, 5))
    c1 = g.add("conv2d", [x1, g.weight("w1", (4, 3, 1, 1)), g.weight("b1", (4,))])
    c2 = g.add("conv2d", [x2, g.weight("w2", (4, 2, 1, 1)), g.weight("b2", (4,))])
    g.set_outputs([g.add("add", [c1, c2])])
    return g


# ----------------------------------------------------------------------------- fusion


def _fuse(op, act, extra_use=False, reshape=False):
    def build():
        g = Graph(f"fuse_{op}_{act}")
        if op == "conv2d":
            p = g.add("conv2d", [g.input("x", (1, 3, 5, 5)), g.weight("w", (4, 3, 3, 3))], strides=(2, 2))
        elif op == "matmul":
            p = g.add("matmul", [g.input("x", (2, 3, 4)), g.weight("w", (4, 5))])
        else:
            p = g.add("linear", [g.input("x", (3, 4)), g.weight("w", (4, 5)), g.weight("b", (5,))])
        q = g.add("reshape", [p], shape=(1,) + g[p].shape) if reshape else p  # act(reshape(op))
        g.set_outputs([g.add(act, [q])] + ([p] if extra_use else []))
        return g
    return build


for _op, _short in (("conv2d", "conv"), ("matmul", "matmul"), ("linear", "linear")):
    for _act in ("relu", "sigmoid", "tanh", "relu6", "hardsigmoid", "hardswish", "gelu", "gelu_tanh"):
        case(f"fuse_{_short}_{_act}")(_fuse(_op, _act))
        case(f"fuse_{_short}_{_act}")(_fuse(_op, _act, reshape=True))
        negative(f"fuse_{_short}_{_act}")(_fuse(_op, _act, extra_use=True))
        negative(f"fuse_{_short}_{_act}")(_fuse(_op, _act, extra_use=True, reshape=True))


def _matmul_bias(bshape, slot, const=True, wshape=(4, 5)):
    def build():
        g = Graph("matmul_bias")
        m = g.add("matmul", [g.input("x", (2, 3, 4)), g.weight("w", wshape)])
        b = g.weight("b", bshape) if const else g.input("b", bshape)
        g.set_outputs([g.add("add", [m, b] if slot == 0 else [b, m])])
        return g
    return build


case("fold_matmul_bias")(_matmul_bias((5,), 0))
case("fold_matmul_bias")(_matmul_bias((1, 1, 5), 1))
negative("fold_matmul_bias")(_matmul_bias((5,), 0, const=False))
negative("fold_matmul_bias")(_matmul_bias((3, 5), 0))


def _scale(shape, slot, bias, const=True):
    def build():
        g = Graph("scale")
        ins = [g.input("x", (2, 3, 5, 5)), g.weight("w", (4, 3, 3, 3))] + ([g.weight("b", (4,))] if bias else [])
        c = g.add("conv2d", ins, pads=(0, 1, 2, 1))
        s = g.weight("s", shape) if const else g.input("s", shape)
        g.set_outputs([g.add("mul", [c, s] if slot == 0 else [s, c])])
        return g
    return build


case("fold_conv_scale")(_scale((1, 4, 1, 1), 0, True))
case("fold_conv_scale")(_scale((4, 1, 1), 1, False))
negative("fold_conv_scale")(_scale((1, 4, 1, 1), 0, True, const=False))
negative("fold_conv_scale")(_scale((1, 4, 5, 1), 0, True))


def _bn(bias, extra_use=False):
    def build():
        g = Graph("bn")
        ins = [g.input("x", (2, 3, 6, 6)), g.weight("w", (5, 3, 3, 3))] + ([g.weight("b", (5,))] if bias else [])
        c = g.add("conv2d", ins, pads=(1, 1, 1, 1), strides=(2, 2))
        params = [g.weight("gamma", (5,)), g.weight("beta", (5,)), g.weight("mean", (5,)),
                  g.weight("var", (5,), init="positive")]
        bn = g.add("batchnorm", [c, *params], epsilon=1e-3)
        g.set_outputs([g.add("relu", [bn])] + ([c] if extra_use else []))
        return g
    return build


case("fuse_conv_batchnorm")(_bn(True))
case("fuse_conv_batchnorm")(_bn(False))
negative("fuse_conv_batchnorm")(_bn(False, extra_use=True))


# ----------------------------------------------------------------------------- concat_split


def _split_concat(sizes):
    def build():
        g = Graph("split_concat")
        c = g.add("concat", [g.input("a", (2, 3)), g.input("b", (2, 5))], axis=1)
        s = g.add("split", [c], axis=-1, sizes=sizes)
        g.set_outputs([g.add("relu", [(s, 0)]), (s, 1), c])
        return g
    return build


case("split_concat_cancel")(_split_concat((3, 5)))
negative("split_concat_cancel")(_split_concat((4, 4)))


@case("unary_into_concat")
def unary_into_concat():
    g = Graph("u_concat")
    c = g.add("concat", [g.input("a", (2, 3, 4)), g.input("b", (2, 1, 4))], axis=-2)
    g.set_outputs([g.add("gelu", [c])])
    return g


def _unary_out(ops):
    def build():
        g = Graph("u_out")
        a, b = g.input("a", (2, 3)), g.input("b", (4, 3))
        g.set_outputs([g.add("concat", [g.add(ops[0], [a]), g.add(ops[1], [b])], axis=0)])
        return g
    return build


case("unary_out_of_concat")(_unary_out(("tanh", "tanh")))
negative("unary_out_of_concat")(_unary_out(("relu", "tanh")))


@case("binary_into_concat")
def binary_into_concat():
    g = Graph("b_concat")
    a, b, c, d = g.input("a", (2, 3)), g.input("b", (5, 3)), g.input("c", (2, 3)), g.weight("d", (5, 3))
    g.set_outputs([g.add("sub", [g.add("concat", [a, b], axis=0), g.add("concat", [c, d], axis=0)])])
    return g


@negative("binary_into_concat")
def binary_into_concat_misaligned():
    g = Graph("b_concat_neg")
    a, b, c, d = g.input("a", (2, 3)), g.input("b", (5, 3)), g.input("c", (4, 3)), g.input("d", (3, 3))
    g.set_outputs([g.add("add", [g.add("concat", [a, b], axis=0), g.add("concat", [c, d], axis=0)])])
    return g


def _axis_swap(d_cols):
    def build():
        g = Graph("axis_swap")
        a, b, c, d = g.input("a", (2, 3)), g.input("b", (2, 4)), g.input("c", (5, 7 - d_cols)), g.input("d", (5, d_cols))
        g.set_outputs([g.add("concat", [g.add("concat", [a, b], axis=1), g.add("concat", [c, d], axis=1)], axis=0)])
        return g
    return build


case("concat_axis_swap")(_axis_swap(4))
negative("concat_axis_swap")(_axis_swap(2))


# ----------------------------------------------------------------------------- enlarge, group_conv


def _enlarge(strides2=(2, 2)):
    def build():
        g = Graph("enlarge")
        x = g.input("x", (1, 4, 7, 7))
        c1 = g.add("conv2d", [x, g.weight("w1", (6, 4, 1, 1)), g.weight("b1", (6,))], strides=(2, 2))
        c2 = g.add("conv2d", [x, g.weight("w2", (5, 4, 3, 3))], strides=strides2, pads=(1, 1, 1, 1))
        g.set_outputs([c1, c2])
        return g
    return build


case("enlarge_conv_kernel")(_enlarge())
negative("enlarge_conv_kernel")(_enlarge((1, 1)))


def test_enlarge_enables_conv_merge():
    """1x1 stride-2 conv + 3x3 stride-2 sibling: enlarge, then merge into one conv, same outputs."""
    g = _enlarge()()
    c1 = [n for n in g.nodes.values() if n.op == "conv2d"][0]
    g.replace_uses((c1.id, 0), (g.add("conv2d", list(c1.inputs[:2]), strides=(2, 2)), 0))  # drop the bias
    g.prune()
    enl, merge = RULES["enlarge_conv_kernel"], RULES["merge_conv_shared_input"]
    ref = execute(g, dtype=np.float64)
    assert not all_matches(merge, g)
    enl.apply(g, all_matches(enl, g)[0])
    g.prune()
    merge.apply(g, all_matches(merge, g)[0])
    g.prune()
    g.validate()
    assert g.op_counts()["conv2d"] == 1
    for a, b in zip(execute(g, dtype=np.float64), ref):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@case("merge_group_conv")
def group_conv():
    g = Graph("gconv")
    x = g.input("x", (2, 8, 5, 5))
    c = g.add("conv2d", [x, g.weight("w", (12, 2, 3, 3)), g.weight("b", (12,))], groups=4, pads=(1, 1, 1, 1))
    g.set_outputs([c])
    return g


@negative("merge_group_conv")
def plain_conv():
    g = Graph("conv")
    g.set_outputs([g.add("conv2d", [g.input("x", (1, 3, 4, 4)), g.weight("w", (2, 3, 3, 3))])])
    return g


# ----------------------------------------------------------------------------- transpose


def _tt(p2):
    def build():
        g = Graph("tt")
        t1 = g.add("transpose", [g.input("x", (2, 3, 4))], perm=(1, 2, 0))
        g.set_outputs([g.add("relu", [g.add("transpose", [t1], perm=p2)])])
        return g
    return build


case("transpose_compose")(_tt((2, 0, 1)))  # identity: the pair cancels
case("transpose_compose")(_tt((1, 0, 2)))


@case("matmul_transpose")
def matmul_transpose():
    g = Graph("mt")
    m = g.add("matmul", [g.input("a", (2, 3, 4)), g.weight("b", (4, 5))], activation="relu")
    g.set_outputs([g.add("transpose", [m], perm=(0, 2, 1))])
    return g


@negative("matmul_transpose")
def matmul_transpose_wrong_perm():
    g = Graph("mt_neg")
    m = g.add("matmul", [g.input("a", (2, 3, 4)), g.weight("b", (4, 5))])
    g.set_outputs([g.add("transpose", [m], perm=(1, 0, 2))])
    return g


@case("transpose_out_of_binary")
def transpose_binary():
    g = Graph("tb")
    ta = g.add("transpose", [g.input("a", (3, 4))], perm=(1, 0))
    tb = g.add("transpose", [g.weight("b", (1, 4))], perm=(1, 0))
    g.set_outputs([g.add("mul", [ta, tb])])
    return g


@negative("transpose_out_of_binary")
def transpose_binary_perm_differs():
    g = Graph("tb_neg")
    ta = g.add("transpose", [g.input("a", (2, 3, 2))], perm=(2, 1, 0))
    tb = g.add("transpose", [g.input("b", (2, 3, 2))], perm=(0, 1, 2))
    g.set_outputs([g.add("add", [ta, tb])])
    return g


@case("move_transpose_after_unary")
def unary_of_transpose():
    g = Graph("ut")
    g.set_outputs([g.add("relu", [g.add("transpose", [g.input("x", (2, 3, 4))], perm=(2, 0, 1))])])
    return g


@case("move_transpose_before_unary")
def transpose_of_unary():
    g = Graph("tu")
    g.set_outputs([g.add("transpose", [g.add("sigmoid", [g.input("x", (2, 3, 4))])], perm=(2, 0, 1))])
    return g


@case("transpose_out_of_concat")
def transpose_concat():
    g = Graph("tc")
    ta = g.add("transpose", [g.input("a", (2, 3, 4))], perm=(1, 0, 2))
    tb = g.add("transpose", [g.input("b", (2, 5, 4))], perm=(1, 0, 2))
    g.set_outputs([g.add("concat", [ta, tb], axis=0)])
    return g


# ----------------------------------------------------------------------------- reshape


def _lin_reshape(x_shape=(2, 3, 4), flat=(6, 4), back=None, bias=True, act="relu", extra_use=False):
    def build():
        g = Graph("lr")
        f = g.add("reshape", [g.input("x", x_shape)], shape=flat)
        ins = [f, g.weight("w", (flat[1], 5))] + ([g.weight("b", (5,))] if bias else [])
        lin = g.add("linear", ins, activation=act)
        out = g.add("reshape", [lin], shape=back or tuple(x_shape[:-1]) + (5,))
        g.set_outputs([out, lin] if extra_use else [out])
        return g
    return build


case("linear_through_reshape")(_lin_reshape())
case("linear_through_reshape")(_lin_reshape((1, 2, 2, 3), (4, 3), bias=False, act="none"))
negative("linear_through_reshape")(_lin_reshape(back=(3, 2, 5)))  # leading axes not restored
negative("linear_through_reshape")(_lin_reshape((2, 2, 6), (8, 3), back=(2, 2, 10)))  # last axis changed
negative("linear_through_reshape")(_lin_reshape(extra_use=True))  # the 2-D result is used elsewhere
negative("linear_through_reshape")(_lin_reshape((6, 4), (6, 4), back=(6, 5)))  # nothing to flatten


@case("linear_through_reshape")
def mlp_through_reshape():
    """GPT-2's MLP once the reshapes between its layers are gone: reshape, linear, GELU, linear, reshape."""
    g = Graph("mlp")
    f = g.add("reshape", [g.input("x", (1, 4, 3))], shape=(4, 3))
    h = g.add("gelu_tanh", [g.add("linear", [f, g.weight("w1", (3, 6)), g.weight("b1", (6,))])])
    y = g.add("linear", [h, g.weight("w2", (6, 3)), g.weight("b2", (3,))])
    g.set_outputs([g.add("reshape", [y], shape=(1, 4, 3))])
    return g


@negative("linear_through_reshape")
def mlp_hidden_used_elsewhere():
    g = mlp_through_reshape()
    gelu = next(n.id for n in g.nodes.values() if n.op == "gelu_tanh")
    g.set_outputs([*g.outputs, (gelu, 0)])
    return g


@negative("linear_through_reshape")
def unary_only_through_reshape():
    g = Graph("unary_reshape")
    f = g.add("reshape", [g.input("x", (1, 4, 3))], shape=(4, 3))
    g.set_outputs([g.add("reshape", [g.add("relu", [f])], shape=(1, 4, 3))])
    return g


def _layout(x_shape, steps, extra_use=None, then_relu=True):
    """``x`` through the layout ``steps`` (("reshape", shape) / ("transpose", perm)); node ``extra_use``
    of the chain (an index) is also a graph output."""
    def build():
        g = Graph("layout")
        ref, ids = g.input("x", x_shape), []
        for op, arg in steps:
            ref = g.add(op, [ref], **({"shape": arg} if op == "reshape" else {"perm": arg}))
            ids.append(ref)
        outs = [g.add("relu", [ref]) if then_relu else ref]
        g.set_outputs(outs + ([ids[extra_use]] if extra_use is not None else []))
        return g
    return build


GPT2_KEY = (("reshape", (1, 8, 2, 16)), ("transpose", (0, 2, 1, 3)), ("reshape", (2, 8, 16)),
            ("transpose", (0, 2, 1)), ("reshape", (1, 2, 16, 8)))
SHUFFLE = (("reshape", (1, 2, 3, 2, 2)), ("transpose", (0, 2, 1, 3, 4)), ("reshape", (1, 6, 2, 2)))

case("collapse_layout_chain")(_layout((1, 8, 32), GPT2_KEY))  # -> reshape + transpose (0, 2, 3, 1)
case("collapse_layout_chain")(_layout((1, 8, 32), GPT2_KEY, then_relu=False))  # the chain's end is an output
case("collapse_layout_chain")(_layout((1, 8, 32), GPT2_KEY, extra_use=1))  # the tail still collapses
case("collapse_layout_chain")(_layout((2, 3, 4), (("reshape", (6, 4)), ("reshape", (2, 3, 4)))))  # identity
case("collapse_layout_chain")(_layout((2, 3, 4), (("transpose", (1, 0, 2)), ("reshape", (3, 8)),
                                                  ("reshape", (24,)))))  # -> transpose + reshape
case("collapse_layout_chain")(_layout((2, 3, 4), (("reshape", (2, 3, 4)),)))  # a no-op reshape
case("collapse_layout_chain")(_layout((17, 1, 96), (("reshape", (17, 1, 3, 32)), ("reshape", (1, 17, 1, 3, 32)),
                                                    ("transpose", (3, 1, 2, 0, 4)),
                                                    ("reshape", (3, 17, 1, 32)))))  # ViT's q/k/v split
negative("collapse_layout_chain")(_layout((1, 6, 2, 2), SHUFFLE))  # a channel shuffle is no shorter
negative("collapse_layout_chain")(_layout((2, 3, 4), (("reshape", (6, 4)), ("reshape", (4, 6))),
                                          extra_use=0))  # the intermediate is used elsewhere
negative("collapse_layout_chain")(_layout((2, 3, 4), (("transpose", (1, 0, 2)),
                                                      ("transpose", (0, 2, 1)))))  # transpose_compose's
negative("collapse_layout_chain")(_layout((2, 3, 4), (("reshape", (6, 4)), ("transpose", (1, 0)))))  # minimal


# ----------------------------------------------------------------------------- tests

POSITIVE = [(name, fn) for name, fns in CASES.items() for fn in fns]


def test_every_rule_has_a_case():
    names = set(RULES)
    assert len(names) == len(builtin_rules()), "rule names must be unique"
    assert set(CASES) == names, f"rules without a test case: {sorted(names - set(CASES))}"
    assert {n for n, _ in NEGATIVE} <= names


def test_rule_metadata():
    families = {"elementwise", "matmul", "merge_matmul", "merge_conv", "fusion", "concat_split", "enlarge",
                "group_conv", "transpose", "reshape"}
    for r in builtin_rules():
        assert r.family in families and r.radius >= 1, r


@pytest.mark.parametrize("name,build", POSITIVE, ids=[f"{n}-{i}" for i, (n, _) in enumerate(POSITIVE)])
def test_rule_is_sound(name, build):
    assert_sound(RULES[name], build())


@pytest.mark.parametrize("name,build", NEGATIVE, ids=[f"{n}-{i}" for i, (n, _) in enumerate(NEGATIVE)])
def test_rule_does_not_match(name, build):
    g = build()
    g.validate()
    assert all_matches(RULES[name], g) == []


def test_group_conv_all_divisors():
    g = group_conv()
    assert sorted(m.data for m in all_matches(RULES["merge_group_conv"], g)) == [2, 4]


def test_layout_chain_collapses_gpt2_key():
    """GPT-2's key chain (5 layout ops) becomes one reshape and one transpose at its last node."""
    g = _layout((1, 8, 32), GPT2_KEY)()
    rule = RULES["collapse_layout_chain"]
    last = max(n.id for n in g.nodes.values() if n.op == "reshape")
    (m,) = rule.match_at(g, last)
    assert len(m.nodes) == 5 and m.data == (("reshape", (1, 8, 2, 16)), ("transpose", (0, 2, 3, 1)))
    rule.apply(g, m)
    g.prune()
    assert g.op_counts()["reshape"] == 1 and g.op_counts()["transpose"] == 1


def test_layout_chain_keeps_the_input_unit_axes():
    """ViT's query (17, 1, 32) -> (1, 2, 17, 16): the reshape keeps the input's unit axis where it is,
    the form whose transpose onnxruntime folds into its MatMul."""
    from systems_envs.rewrite.rules.reshape import shortest_layout

    steps = (("reshape", (17, 2, 16)), ("transpose", (1, 0, 2)), ("reshape", (1, 2, 17, 16)))
    assert shortest_layout((17, 1, 32), steps) == (("reshape", (17, 1, 2, 16)), ("transpose", (1, 2, 0, 3)))


def test_shortest_layout_on_random_chains():
    """Whatever ``shortest_layout`` returns moves random data exactly as the chain does, and is shorter."""
    from systems_envs.rewrite.rules.reshape import shortest_layout

    rng = np.random.default_rng(0)
    found = 0
    for _ in range(300):
        dims = [int(d) for d in rng.choice([1, 2, 3, 4], size=rng.integers(2, 5))]
        x = rng.standard_normal(dims)
        y, steps = x, []
        for _ in range(rng.integers(2, 5)):
            if rng.random() < 0.5:
                p = tuple(int(i) for i in rng.permutation(y.ndim))
                y, step = np.transpose(y, p), ("transpose", p)
            else:
                flat = [d for d in y.shape if d > 1] or [1]
                shape = tuple(int(d) for d in rng.permutation(flat))
                if rng.random() < 0.5:
                    shape = (1,) + shape
                y, step = y.reshape(shape), ("reshape", shape)
            steps.append(step)
        plan = shortest_layout(tuple(dims), tuple(steps))
        if plan is None:
            continue
        found += 1
        assert len(plan) < len(steps)
        z = x
        for op, arg in plan:
            z = z.reshape(arg) if op == "reshape" else np.transpose(z, arg)
        assert z.shape == y.shape and np.array_equal(z, y)
    assert found > 50


def test_transpose_pair_cancels():
    g = _tt((2, 0, 1))()
    rule = RULES["transpose_compose"]
    rule.apply(g, all_matches(rule, g)[-1])
    g.prune()
    assert "transpose" not in g.op_counts()
