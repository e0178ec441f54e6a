"""Graph IR: unit tests and hypothesis property tests on random valid DAGs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from systems_envs.graph.executor import execute
from systems_envs.graph.ir import Graph, GraphError

# ----------------------------------------------------------------------------- unit tests


def small_graph() -> tuple[Graph, dict[str, int]]:
    g = Graph("small")
    x = g.input("x", (1, 4, 8, 8))
    w = g.weight("w", (4, 4, 3, 3))
    c = g.add("conv2d", [x, w], pads=(1, 1, 1, 1))
    r = g.add("relu", [c])
    s = g.add("sigmoid", [c])
    a = g.add("add", [r, s])
    g.set_outputs([a])
    return g, dict(x=x, w=w, c=c, r=r, s=s, a=a)


def test_dangling_input_names_the_node():
    g = Graph()
    x = g.input("x", (2, 3))
    with pytest.raises(GraphError, match=r"relu#1.*dangling"):
        g.add("relu", [x + 7])
    with pytest.raises(GraphError, match=r"relu#1.*output 1 of 'x'"):
        g.add("relu", [(x, 1)])


def test_inconsistent_shapes_name_the_node():
    g = Graph()
    a, b = g.input("a", (2, 3)), g.input("b", (4, 5))
    with pytest.raises(GraphError, match=r"matmul#2.*inner dimensions"):
        g.add("matmul", [a, b])
    with pytest.raises(GraphError, match=r"add#2.*broadcast"):
        g.add("add", [a, b])
    x, w = g.input("x", (1, 4, 8, 8)), g.weight("w", (6, 3, 3, 3))
    with pytest.raises(GraphError, match=r"conv2d#4"):
        g.add("conv2d", [x, w])
    with pytest.raises(GraphError, match=r"reshape#4.*cannot reshape"):
        g.add("reshape", [a], shape=(7,))
    with pytest.raises(GraphError, match="no attribute 'bogus'"):
        g.add("relu", [a], bogus=1)


def test_cycle_via_replace_uses_is_caught_by_validate():
    g, ids = small_graph()
    g.validate()
    # make the conv consume the final add: add -> conv -> relu -> add
    g.replace_uses((ids["x"], 0), (ids["a"], 0))
    with pytest.raises(GraphError, match="cycle"):
        g.validate()


def test_duplicate_source_name():
    g = Graph()
    g.input("x", (2,))
    with pytest.raises(GraphError, match="'x'.*duplicate"):
        g.weight("x", (2,))
    with pytest.raises(GraphError, match="non-positive"):
        g.input("z", (0, 2))


def test_replace_uses_remove_prune_copy():
    g, ids = small_graph()
    h0 = g.hash()
    copy = g.copy()
    # shape mismatch is refused
    other = g.input("y", (3,))
    with pytest.raises(GraphError, match="shapes differ"):
        g.replace_uses((ids["r"], 0), (other, 0))
    # re-point the users of sigmoid to relu: add(relu, relu)
    g.replace_uses((ids["s"], 0), (ids["r"], 0))
    assert g[ids["a"]].inputs == ((ids["r"], 0), (ids["r"], 0))
    assert g.uses(ids["s"]) == []
    assert sorted(g.uses(ids["r"])) == [(ids["a"], 0), (ids["a"], 1)]
    with pytest.raises(GraphError, match="still used"):
        g.remove(ids["r"])
    removed = g.prune()
    assert removed == [ids["s"]]
    assert ids["s"] not in g and other in g  # sources are kept
    assert g.prune(keep_sources=False) == [other]
    assert g.hash() != h0
    g.validate()
    # the copy is independent
    assert copy.hash() == h0 and ids["s"] in copy and len(copy.uses(ids["c"])) == 2
    copy.validate()
    # outputs follow replace_uses
    g.replace_uses((ids["a"], 0), (ids["c"], 0))
    assert g.outputs == [(ids["c"], 0)]
    g.prune()
    assert g.op_counts() == {"conv2d": 1}
    # removing a weight drops its value
    g2 = Graph()
    w = g2.weight("w", (2,), value=np.ones(2))
    assert "w" in g2.values
    g2.remove(w)
    assert "w" not in g2.values


def test_constant_nodes():
    g, ids = small_graph()
    w2 = g.weight("w2", (4, 4, 3, 3))
    cat = g.add("concat", [ids["w"], w2], axis=0)
    assert g.constant_nodes() >= {ids["w"], w2, cat}
    assert not g.is_constant(ids["c"]) and g.is_constant(cat)


# ----------------------------------------------------------------------------- random DAGs

SHAPE = (2, 4, 6, 6)  # every step produces a tensor of this shape, so any wiring is valid
UNARY = ("relu", "sigmoid", "tanh", "gelu", "identity")
BINARY = ("add", "sub", "mul")
KINDS = UNARY + BINARY + ("conv", "conv1x1", "pool", "bn", "softmax", "catsplit", "reshape2", "transposeHW")
TOGGLE = {"conv": "activation", "conv1x1": "activation", "pool": "count_include_pad", "softmax": "axis"}


@st.composite
def dag_steps(draw):
    """A list of steps ``(kind, input indices, variant)``; index 0 and 1 are graph inputs."""
    n = draw(st.integers(1, 12))
    steps = []
    for i in range(n):
        kind = draw(st.sampled_from(KINDS))
        avail = i + 2
        arity = 2 if kind in BINARY or kind == "catsplit" else 1
        ins = tuple(draw(st.integers(0, avail - 1)) for _ in range(arity))
        variant = draw(st.integers(0, 1))
        steps.append((kind, ins, variant))
    return steps


def add_step(g: Graph, i: int, kind: str, ins: list, variant: int):
    if kind in UNARY:
        return g.add(kind, ins)
    if kind in BINARY:
        return g.add(kind, ins)
    if kind == "conv":
        w = g.weight(f"w{i}", (4, 2 if variant else 4, 3, 3))
        return g.add("conv2d", [ins[0], w], pads=(1, 1, 1, 1), groups=2 if variant else 1,
                     activation=("relu", "tanh")[variant])
    if kind == "conv1x1":
        return g.add("conv2d", [ins[0], g.weight(f"w{i}", (4, 4, 1, 1)), g.weight(f"b{i}", (4,))],
                     activation=("none", "sigmoid")[variant])
    if kind == "pool":
        return g.add("avgpool" if variant else "maxpool", ins, kernel=(3, 3), pads=(1, 1, 1, 1),
                     count_include_pad=bool(variant))
    if kind == "bn":
        p = [g.weight(f"{k}{i}", (4,), init="positive" if k == "v" else "normal") for k in "sbmv"]
        return g.add("batchnorm", [ins[0]] + p)
    if kind == "softmax":
        return g.add("softmax", ins, axis=(1, -1)[variant])
    if kind == "catsplit":
        cat = g.add("concat", ins, axis=1)
        sp = g.add("split", [cat], axis=1, sizes=(4, 4))
        return (sp, variant)
    if kind == "reshape2":
        r = g.add("reshape", ins, shape=(2, 4, 36))
        return g.add("reshape", [r], shape=SHAPE)
    if kind == "transposeHW":
        return g.add("transpose", ins, perm=(0, 1, 3, 2))
    raise AssertionError(kind)


def build(steps, order, toggle: int | None = None) -> Graph:
    """Build the DAG inserting steps in ``order`` (a topological order of step indices)."""
    g = Graph("random")
    tensors: dict[int, tuple[int, int]] = {}
    for j, name in enumerate(("x0", "x1") if order[0] % 2 == 0 else ("x1", "x0")):
        tensors[int(name[1])] = (g.input(name, SHAPE), 0)
    for i in order:
        kind, ins, variant = steps[i]
        if toggle == i:
            variant = 1 - variant
        t = add_step(g, i, kind, [tensors[k] for k in ins], variant)
        tensors[i + 2] = t if isinstance(t, tuple) else (t, 0)
    used = {k for _, ins, _ in steps for k in ins}
    g.set_outputs([tensors[k] for k in range(2, len(steps) + 2) if k not in used])
    return g


def random_topo_order(steps, rnd) -> list[int]:
    deps = {i: {k - 2 for k in ins if k >= 2} for i, (_, ins, _) in enumerate(steps)}
    done: set[int] = set()
    order = []
    while len(order) < len(steps):
        ready = sorted(i for i in deps if i not in done and deps[i] <= done)
        pick = rnd.choice(ready)
        order.append(pick)
        done.add(pick)
    return order


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(steps=dag_steps(), rnd=st.randoms(use_true_random=False))
def test_hash_independent_of_insertion_order(steps, rnd):
    a = build(steps, list(range(len(steps))))
    b = build(steps, random_topo_order(steps, rnd))
    a.validate()
    b.validate()
    assert a.hash() == b.hash()
    assert a.op_counts() == b.op_counts()
    assert b.copy().hash() == b.hash()


@SETTINGS
@given(steps=dag_steps(), rnd=st.randoms(use_true_random=False))
def test_changed_attribute_changes_hash(steps, rnd):
    toggles = [i for i, (kind, _, _) in enumerate(steps) if kind in TOGGLE]
    assume(toggles)
    i = rnd.choice(toggles)
    a = build(steps, list(range(len(steps))))
    b = build(steps, random_topo_order(steps, rnd), toggle=i)
    assert a.hash() != b.hash()


@SETTINGS
@given(steps=dag_steps())
def test_executor_shapes_equal_inferred_shapes(steps):
    g = build(steps, list(range(len(steps))))
    vals = execute(g, seed=1, keep_all=True)
    assert set(vals) == {(nid, i) for nid, n in g.nodes.items() for i in range(len(n.shapes))}
    for (nid, i), v in vals.items():
        assert v.shape == g[nid].shapes[i]
        assert np.isfinite(v).all()
