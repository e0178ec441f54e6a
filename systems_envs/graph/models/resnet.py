"""Bottleneck residual networks: ``resnet50`` and ``resnext50`` (32x4d), ImageNet at 224x224.

Inference graphs with explicit batchnorm after every convolution and separate ReLU ops
(TASO's builders fold batchnorm away and fuse the ReLU; keeping them explicit gives
the conv+batchnorm and conv+relu fusion rewrites something to do). Strides sit on the
3x3 convolution (ResNet v1.5 / torchvision), as in TASO's ``resnext50.py``.
Op count: stem 4 + 16 blocks x 10 + 4 projection shortcuts x 2 + head 3 = 175.
"""
from __future__ import annotations

from systems_envs.graph.ir import Graph
from systems_envs.graph.models.layers import Net, Tensor

STAGES = (3, 4, 6, 3)  # bottleneck blocks per stage (50 layers)


def bottleneck(net: Net, name: str, x: Tensor, width: int, out_ch: int, stride: int, groups: int) -> int:
    """1x1 conv-bn-relu -> 3x3 (grouped, strided) conv-bn-relu -> 1x1 conv-bn, + shortcut, relu.

    The shortcut is a 1x1 strided conv-bn when the shape changes. 10 ops (12 with it).
    """
    t = net.conv_bn(f"{name}.conv1", x, width, 1)
    t = net.conv_bn(f"{name}.conv2", t, width, 3, stride=stride, groups=groups)
    t = net.conv_bn(f"{name}.conv3", t, out_ch, 1, relu=False)
    if stride != 1 or net.shape(x)[1] != out_ch:
        x = net.conv_bn(f"{name}.down", x, out_ch, 1, stride=stride, relu=False)
    return net.relu(net.add(t, x))


def _resnet(name: str, widths: tuple[int, ...], groups: int, image: int, classes: int) -> Graph:
    net = Net(name)
    x = net.input("image", (1, 3, image, image))
    t = net.conv_bn("stem", x, 64, 7, stride=2)
    t = net.pool("maxpool", t, 3, 2, 1)
    for s, (blocks, width) in enumerate(zip(STAGES, widths)):
        out_ch = 256 * 2 ** s
        for b in range(blocks):
            t = bottleneck(net, f"stage{s + 1}.{b}", t, width, out_ch, 2 if b == 0 and s > 0 else 1, groups)
    return net.done(net.classifier("fc", t, classes))


def resnet50(image: int = 224, classes: int = 1000) -> Graph:
    """ResNet-50 (He et al. 2016, v1.5): input ``image`` [1, 3, 224, 224] -> logits [1, 1000].

    Bottleneck widths 64/128/256/512, outputs 256/512/1024/2048; 175 ops. Sizes as in
    TASO's ``examples/resnet50.py`` (batch 1, 224x224) and torchvision's resnet50.
    """
    return _resnet("resnet50", (64, 128, 256, 512), 1, image, classes)


def resnext50(image: int = 224, classes: int = 1000) -> Graph:
    """ResNeXt-50 32x4d (Xie et al. 2017): input ``image`` [1, 3, 224, 224] -> logits [1, 1000].

    Grouped 3x3 convolutions with 32 groups; bottleneck widths 128/256/512/1024, outputs
    256/512/1024/2048; 175 ops. Sizes as in TASO's ``examples/resnext50.py``.
    """
    return _resnet("resnext50", (128, 256, 512, 1024), 32, image, classes)
