"""Inception-v3 (Szegedy et al. 2016) at 299x299, the architecture of TASO's ``inceptionv3.model``.

Every convolution is conv (no bias) -> batchnorm (epsilon 1e-3) -> relu ("BasicConv2d"),
94 of them; module layout and channel sizes follow torchvision's inception_v3 (no
auxiliary classifier, inference dropout omitted). Average pools exclude padding from
the count (TASO's cuDNN mode). Op count: 94 x 3 + 13 pools + 15 concats + head 3 = 313.
"""
from __future__ import annotations

from systems_envs.graph.ir import Graph
from systems_envs.graph.models.layers import Net, Tensor


def _c(net: Net, name: str, x: Tensor, out: int, k, stride: int = 1, pad=None) -> int:
    """BasicConv2d: conv -> batchnorm -> relu; ``pad`` defaults to "same" for stride 1."""
    if pad is None:
        kh, kw = (k, k) if isinstance(k, int) else k
        pad = (kh // 2, kw // 2)
    return net.conv_bn(name, x, out, k, stride=stride, pad=pad, epsilon=1e-3)


def _avg_branch(net: Net, name: str, x: Tensor, out: int) -> int:
    return _c(net, name, net.pool("avgpool", x, 3, 1, 1), out, 1)


def block_a(net: Net, name: str, x: Tensor, pool_features: int) -> int:
    """35x35 module: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 -> concat."""
    b1 = _c(net, f"{name}.b1x1", x, 64, 1)
    b5 = _c(net, f"{name}.b5x5_2", _c(net, f"{name}.b5x5_1", x, 48, 1), 64, 5)
    d = _c(net, f"{name}.dbl_1", x, 64, 1)
    d = _c(net, f"{name}.dbl_3", _c(net, f"{name}.dbl_2", d, 96, 3), 96, 3)
    return net.concat(1, [b1, b5, d, _avg_branch(net, f"{name}.pool", x, pool_features)])


def block_b(net: Net, name: str, x: Tensor) -> int:
    """Grid reduction 35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | maxpool 3x3/2 -> concat."""
    b3 = _c(net, f"{name}.b3x3", x, 384, 3, stride=2, pad=0)
    d = _c(net, f"{name}.dbl_2", _c(net, f"{name}.dbl_1", x, 64, 1), 96, 3)
    d = _c(net, f"{name}.dbl_3", d, 96, 3, stride=2, pad=0)
    return net.concat(1, [b3, d, net.pool("maxpool", x, 3, 2)])


def block_c(net: Net, name: str, x: Tensor, c7: int) -> int:
    """17x17 module with factorised 7x7 convolutions (1x7 and 7x1)."""
    b1 = _c(net, f"{name}.b1x1", x, 192, 1)
    b7 = _c(net, f"{name}.b7_1", x, c7, 1)
    b7 = _c(net, f"{name}.b7_3", _c(net, f"{name}.b7_2", b7, c7, (1, 7)), 192, (7, 1))
    d = _c(net, f"{name}.dbl_1", x, c7, 1)
    for i, (k, out) in enumerate((((7, 1), c7), ((1, 7), c7), ((7, 1), c7), ((1, 7), 192))):
        d = _c(net, f"{name}.dbl_{i + 2}", d, out, k)
    return net.concat(1, [b1, b7, d, _avg_branch(net, f"{name}.pool", x, 192)])


def block_d(net: Net, name: str, x: Tensor) -> int:
    """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool 3x3/2 -> concat."""
    b3 = _c(net, f"{name}.b3_2", _c(net, f"{name}.b3_1", x, 192, 1), 320, 3, stride=2, pad=0)
    b7 = _c(net, f"{name}.b7_1", x, 192, 1)
    b7 = _c(net, f"{name}.b7_3", _c(net, f"{name}.b7_2", b7, 192, (1, 7)), 192, (7, 1))
    b7 = _c(net, f"{name}.b7_4", b7, 192, 3, stride=2, pad=0)
    return net.concat(1, [b3, b7, net.pool("maxpool", x, 3, 2)])


def block_e(net: Net, name: str, x: Tensor) -> int:
    """8x8 module with expanded 1x3 || 3x1 filter banks (3 concats)."""
    b1 = _c(net, f"{name}.b1x1", x, 320, 1)
    b3 = _c(net, f"{name}.b3_1", x, 384, 1)
    b3 = net.concat(1, [_c(net, f"{name}.b3_2a", b3, 384, (1, 3)), _c(net, f"{name}.b3_2b", b3, 384, (3, 1))])
    d = _c(net, f"{name}.dbl_2", _c(net, f"{name}.dbl_1", x, 448, 1), 384, 3)
    d = net.concat(1, [_c(net, f"{name}.dbl_3a", d, 384, (1, 3)), _c(net, f"{name}.dbl_3b", d, 384, (3, 1))])
    return net.concat(1, [b1, b3, d, _avg_branch(net, f"{name}.pool", x, 192)])


def inception_v3(image: int = 299, classes: int = 1000) -> Graph:
    """Inception-v3: input ``image`` [1, 3, 299, 299] -> logits [1, 1000]. 313 ops.

    Stem (5 convs, 2 max pools) -> 35x35: 3 x A -> B -> 17x17: 4 x C (c7 = 128, 160,
    160, 192) -> D -> 8x8: 2 x E -> global average pool -> linear. Sizes from TASO's
    ``examples/inceptionv3.py`` (1x3x299x299) and torchvision.
    """
    net = Net("inception_v3")
    x = net.input("image", (1, 3, image, image))
    t = _c(net, "stem.1a", x, 32, 3, stride=2, pad=0)
    t = _c(net, "stem.2a", t, 32, 3, pad=0)
    t = net.pool("maxpool", _c(net, "stem.2b", t, 64, 3), 3, 2)
    t = _c(net, "stem.3b", t, 80, 1)
    t = net.pool("maxpool", _c(net, "stem.4a", t, 192, 3, pad=0), 3, 2)
    for i, pf in enumerate((32, 64, 64)):
        t = block_a(net, f"mixed5{'bcd'[i]}", t, pf)
    t = block_b(net, "mixed6a", t)
    for i, c7 in enumerate((128, 160, 160, 192)):
        t = block_c(net, f"mixed6{'bcde'[i]}", t, c7)
    t = block_d(net, "mixed7a", t)
    t = block_e(net, "mixed7b", t)
    t = block_e(net, "mixed7c", t)
    return net.done(net.classifier("fc", t, classes))
