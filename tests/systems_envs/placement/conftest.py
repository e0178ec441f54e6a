"""Small graphs and device sets with round numbers for hand-computed schedules."""
import pytest

from systems_envs.graph.ir import Graph
from systems_envs.placement.devices import make_device_set

N = 1000  # floats per tensor -> 4000 bytes
BYTES = 4 * N
# link: 0.5 ms latency, 4e6 B/s -> a 4000-byte tensor takes 1 ms on the wire
LAT_MS, XFER_MS = 0.5, 1.0


@pytest.fixture
def devs2():
    return make_device_set("test2", ["v100", "v100"], link=(4e6, 0.5e-3))


@pytest.fixture
def chain():
    g = Graph("chain")
    x = g.input("x", (1, N))
    a = g.add("relu", [x])
    b = g.add("tanh", [a])
    c = g.add("sigmoid", [b])
    g.set_outputs([c])
    return g


@pytest.fixture
def diamond():
    g = Graph("diamond")
    x = g.input("x", (1, N))
    a = g.add("relu", [x])
    b = g.add("tanh", [a])
    c = g.add("sigmoid", [a])
    d = g.add("add", [b, c])
    g.set_outputs([d])
    return g


def branchy(branches=4, depth=3, batch=8, ch=64, hw=28):
    """x -> `branches` parallel chains of 3x3 convs -> concat: the toy graph for baselines."""
    g = Graph("branchy")
    x = g.input("x", (batch, ch, hw, hw))
    outs = []
    for b in range(branches):
        h = x
        for k in range(depth):
            w = g.weight(f"w{b}_{k}", (ch, ch, 3, 3))
            h = g.add("conv2d", [h, w], pads=(1, 1, 1, 1), activation="relu")
        outs.append(h)
    y = g.add("concat", outs, axis=1)
    g.set_outputs([y])
    return g
