"""SqueezeNet 1.1 (Iandola et al. 2016) at 224x224, the architecture of TASO's ``squeezenet.model``."""
from __future__ import annotations

from systems_envs.graph.ir import Graph
from systems_envs.graph.models.layers import Net, Tensor

# (squeeze, expand) channels of fire2..fire9; a 3x3/2 max pool follows conv1, fire3 and fire5
FIRES = ((16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256))
POOL_AFTER = {1, 3}  # indices into FIRES after which a max pool follows


def fire(net: Net, name: str, x: Tensor, squeeze: int, expand: int) -> int:
    """squeeze 1x1 conv-relu -> (expand 1x1 conv-relu || expand 3x3 conv-relu) -> concat: 7 ops."""
    s = net.relu(net.conv(f"{name}.squeeze", x, squeeze, 1, bias=True))
    e1 = net.relu(net.conv(f"{name}.expand1x1", s, expand, 1, bias=True))
    e3 = net.relu(net.conv(f"{name}.expand3x3", s, expand, 3, bias=True))
    return net.concat(1, [e1, e3])


def squeezenet(image: int = 224, classes: int = 1000) -> Graph:
    """SqueezeNet 1.1: input ``image`` [1, 3, 224, 224] -> [1, 1000]. 65 ops.

    conv1 3x3/2 (64, VALID) -> relu -> maxpool 3x3/2 -> fire2, fire3 -> maxpool ->
    fire4, fire5 -> maxpool -> fire6..fire9 -> conv10 1x1 (classes) -> relu ->
    global average pool -> reshape [1, classes]. Convolutions carry biases and separate
    ReLU ops (as in TASO's squeezenet.model: 26 conv + 26 relu); inference dropout is
    omitted. Sizes from torchvision's squeezenet1_1.
    """
    net = Net("squeezenet")
    x = net.input("image", (1, 3, image, image))
    t = net.relu(net.conv("conv1", x, 64, 3, stride=2, pad=0, bias=True))
    t = net.pool("maxpool", t, 3, 2)
    for i, (sq, ex) in enumerate(FIRES):
        t = fire(net, f"fire{i + 2}", t, sq, ex)
        if i in POOL_AFTER:
            t = net.pool("maxpool", t, 3, 2)
    t = net.relu(net.conv("conv10", t, classes, 1, bias=True))
    n, c = net.shape(t)[:2]
    return net.done(net.op("reshape", net.op("global_avgpool", t), shape=(n, c)))
