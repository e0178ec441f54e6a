"""NAS recurrent cell (Zoph & Le 2017) unrolled, as in TASO's ``examples/nasrnn.py``."""
from __future__ import annotations

from systems_envs.graph.ir import Graph
from systems_envs.graph.models.layers import Net, Tensor


def nas_node(net: Net, name: str, h: Tensor, x: Tensor) -> int:
    """One step of the NAS cell: 8 projections ``x Wx_i + h Wh_i`` (3 ops each) fed to a
    fixed tree of activations, adds and muls; returns the new state [1, hidden]. 46 ops."""
    d = net.shape(h)[-1]
    t = [net.add(net.matmul(f"{name}.x{i}", x, d), net.matmul(f"{name}.h{i}", h, d)) for i in range(8)]
    a = lambda op, v: net.op(op, v)  # noqa: E731
    m0 = net.add(a("relu", t[0]), a("sigmoid", t[3]))
    m1 = net.add(a("sigmoid", t[1]), a("tanh", t[2]))
    m2 = net.mul(a("sigmoid", t[4]), a("tanh", t[5]))
    m3 = net.mul(a("sigmoid", t[6]), a("relu", t[7]))
    m4 = net.add(a("sigmoid", m1), a("tanh", m2))
    m5 = net.mul(a("tanh", m0), a("tanh", m3))
    m6 = net.mul(a("tanh", m4), a("tanh", m5))
    return a("tanh", m6)


def nasrnn(hidden: int = 512, length: int = 5) -> Graph:
    """NASRNN: inputs ``x0..x4`` [1, 512]; the initial state is a weight ``h0`` [1, 512];
    output the final state [1, 512]. 5 steps x 46 = 230 ops. Sizes from TASO's
    ``examples/nasrnn.py`` (hidden 512, length 5)."""
    net = Net("nasrnn")
    xs = [net.input(f"x{i}", (1, hidden)) for i in range(length)]
    h = net.weight("h0", (1, hidden))
    for i, x in enumerate(xs):
        h = nas_node(net, f"step{i}", h, x)
    return net.done(h)
