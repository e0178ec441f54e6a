"""NASNet-A (Zoph et al. 2018) cells as in TASO's ``examples/nasnet_a.py`` benchmark.

A separable convolution is a depthwise conv (``groups = C``, weight ``[C, 1, k, k]``)
followed by a pointwise 1x1 conv; all convolutions and pools use TensorFlow SAME padding.
Cells take the two previous cell outputs (``prev``, ``cur``); ``cur`` is squeezed to
the cell width by a 1x1 conv-relu and ``prev`` is fitted to it (1x1 conv-relu, or a 3x3
stride-2 conv-relu if the resolution differs). Each cell combines five pairs by
addition and concatenates the five sums (as TASO's builder does).
"""
from __future__ import annotations

from systems_envs.graph.ir import Graph
from systems_envs.graph.models.layers import Net, Tensor


def sep_conv(net: Net, name: str, x: Tensor, k: int, stride: int = 1) -> int:
    """Depthwise kxk (stride) -> pointwise 1x1, same channel count: 2 ops."""
    c = net.shape(x)[1]
    t = net.conv(f"{name}.dw", x, c, k, stride=stride, pad="same", groups=c)
    return net.conv(f"{name}.pw", t, c, 1, pad=0)


def _inputs(net: Net, name: str, prev: Tensor, cur: Tensor, width: int) -> tuple[int, int]:
    cur = net.conv(f"{name}.squeeze", cur, width, 1, pad=0, act="relu")
    if net.shape(prev)[2] == net.shape(cur)[2]:
        prev = net.conv(f"{name}.fit", prev, width, 1, pad=0, act="relu")
    else:
        prev = net.conv(f"{name}.fit", prev, width, 3, stride=2, pad="same", act="relu")
    return prev, cur


def normal_cell(net: Net, name: str, prev: Tensor, cur: Tensor, width: int) -> int:
    """NASNet-A normal cell: output [N, 5 * width, H, W]. 21 ops."""
    p, c = _inputs(net, name, prev, cur, width)
    avg = lambda t: net.same_pool("avgpool", t, 3, 1)  # noqa: E731
    sums = [
        net.add(sep_conv(net, f"{name}.s0", c, 3), c),
        net.add(sep_conv(net, f"{name}.s1a", p, 3), sep_conv(net, f"{name}.s1b", c, 5)),
        net.add(avg(c), p),
        net.add(avg(p), avg(p)),
        net.add(sep_conv(net, f"{name}.s4a", p, 5), sep_conv(net, f"{name}.s4b", p, 3)),
    ]
    return net.concat(1, sums)


def reduction_cell(net: Net, name: str, prev: Tensor, cur: Tensor, width: int) -> int:
    """NASNet-A reduction cell: output [N, 5 * width, H/2, W/2]. 22 ops."""
    p, c = _inputs(net, name, prev, cur, width)
    c1 = net.add(sep_conv(net, f"{name}.s0a", p, 7, 2), sep_conv(net, f"{name}.s0b", c, 5, 2))
    c2 = net.add(net.same_pool("maxpool", c, 3, 2), sep_conv(net, f"{name}.s1", p, 7, 2))
    c3 = net.add(net.same_pool("avgpool", c, 3, 2), sep_conv(net, f"{name}.s2", p, 5, 2))
    c4 = net.add(net.same_pool("maxpool", c, 3, 2), sep_conv(net, f"{name}.s3", c1, 3))
    c5 = net.add(net.same_pool("avgpool", c1, 3, 1), c2)
    return net.concat(1, [c1, c2, c3, c4, c5])


def nasnet_a(channels: int = 128, size: int = 56, cells: int = 5, stages: int = 3) -> Graph:
    """NASNet-A body at TASO's sizes: input ``x`` [1, 128, 56, 56] -> [1, 5120, 7, 7]. 381 ops.

    3 stages of 5 normal cells (widths 128, 256, 512), each followed by a reduction cell
    at twice the width (256, 512, 1024), as in TASO's ``examples/nasnet_a.py``. Kernel
    sizes per the NASNet-A cell of the paper (TASO uses 3x3 in every normal-cell
    separable conv). No stem or classifier, as in TASO.
    """
    net = Net("nasnet_a")
    x = net.input("x", (1, channels, size, size))
    width = channels
    for s in range(stages):
        prev = cur = x
        for i in range(cells):
            prev, cur = cur, normal_cell(net, f"stage{s}.normal{i}", prev, cur, width)
        width *= 2
        x = reduction_cell(net, f"stage{s}.reduce", prev, cur, width)
    return net.done(x)
