"""Generated training graphs: parametric families of the benchmark architectures and their neighbours.

A generated graph is named ``gen:FAMILY:seed=N`` (N >= 0), and that name works wherever a
GRAPH name is accepted (:func:`systems_envs.graph.load.load_graph`). The same name always
builds the same graph (its structure hash is a function of the name), and two families
with the same seed are independent draws (the family name is part of the seed).

Each family draws its hyper-parameters (depth, widths, kernel sizes, branch structure,
sequence length, ...) from ``numpy.random.default_rng`` and builds the graph with the
layer helpers the built-in benchmarks use (:class:`systems_envs.graph.models.layers.Net`,
explicit batchnorm and separate ReLUs as real exported graphs have them). A draw whose op
count (compute nodes, inputs and weights excluded) falls outside [``MIN_OPS``,
``MAX_OPS``] is redrawn from the same generator, so every name gives a graph of 50-1,000
ops. Tensor sizes are kept modest (images of 32-64 pixels, widths up to a few hundred
channels, sequences up to 128 tokens), so the NumPy reference executor runs any of them in
about a second at most.

Families (``FAMILIES``):

==============  ===============================================================
resnet          basic or bottleneck residual CNN with batchnorm (ResNet-18..50-like)
resnext         bottleneck residual CNN with grouped 3x3 convolutions (ResNeXt)
inception       inception modules: 1x1 / 1x1-kxk / double 3x3 / pool branches,
                factorised 1xk-kx1 convolutions, grid reductions (Inception-v3-like)
nasnet          NASNet-style cells: a random normal-cell genotype (separable convs,
                pools, identity, pairwise sums, concat) + NASNet-A reduction cells
mobilenet       depthwise-separable (MobileNet v1) or inverted-residual (v2) blocks
squeezenet      fire modules (squeeze 1x1, expand 1x1 || 3x3, concat)
transformer     encoder stacks (BERT/ViT-like), pre- or post-LN, varied width,
                heads, FFN ratio and sequence length
decoder         decoder stacks: causal self-attention (additive mask), optional
                cross-attention to an encoder memory input, FFN
mlp             MLP blocks: residual (layernorm, two matmuls) or plain, parallel
                projections sharing an input, varied widths and activations
rnn             unrolled recurrent cells: NAS cell (NASRNN), LSTM or GRU, 1-2 layers
==============  ===============================================================
"""
from __future__ import annotations

import math
import re
import zlib
from typing import Callable

import numpy as np

from systems_envs.graph.ir import Graph, GraphError
from systems_envs.graph.models.layers import Net, Tensor
from systems_envs.graph.models.nasnet import reduction_cell, sep_conv
from systems_envs.graph.models.nasrnn import nas_node
from systems_envs.graph.models.resnet import bottleneck
from systems_envs.graph.models.squeezenet import fire
from systems_envs.graph.models.transformer import encoder_layer

PREFIX = "gen:"
MIN_OPS, MAX_OPS = 50, 1000
_MAX_DRAWS = 64
_NAME = re.compile(r"^gen:([a-z0-9_]+):seed=(\d+)$")


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _image_input(net: Net, rng: np.random.Generator, sizes=(32, 48, 64)) -> int:
    s = int(_pick(rng, sizes))
    return net.input("image", (1, 3, s, s))


# ----------------------------------------------------------------------------- CNN families


def _basic_block(net: Net, name: str, x: Tensor, out_ch: int, stride: int) -> int:
    """ResNet basic block: 3x3 conv-bn-relu -> 3x3 conv-bn, + shortcut (1x1 conv-bn when
    the shape changes), relu. 7 ops (9 with the projection)."""
    t = net.conv_bn(f"{name}.conv1", x, out_ch, 3, stride=stride)
    t = net.conv_bn(f"{name}.conv2", t, out_ch, 3, relu=False)
    if stride != 1 or net.shape(x)[1] != out_ch:
        x = net.conv_bn(f"{name}.down", x, out_ch, 1, stride=stride, relu=False)
    return net.relu(net.add(t, x))


def _stem(net: Net, rng: np.random.Generator, x: Tensor, ch: int) -> int:
    """A 3x3 conv-bn-relu stem, or a 7x7/2 conv-bn-relu + 3x3/2 max pool for larger images."""
    if net.shape(x)[2] >= 64 and rng.random() < 0.5:
        return net.pool("maxpool", net.conv_bn("stem", x, ch, 7, stride=2), 3, 2, 1)
    return net.conv_bn("stem", x, ch, 3)


def resnet(net: Net, rng: np.random.Generator) -> Graph:
    x = _image_input(net, rng)
    use_bottleneck = rng.random() < 0.5
    stages = int(rng.integers(2, 5))
    base = int(_pick(rng, (16, 24, 32, 48)))
    t = _stem(net, rng, x, base)
    for s in range(stages):
        blocks = int(rng.integers(1, 7) if use_bottleneck else rng.integers(2, 9))
        width = base * 2 ** s
        for b in range(blocks):
            stride = 2 if b == 0 and s > 0 else 1
            if use_bottleneck:
                t = bottleneck(net, f"stage{s + 1}.{b}", t, width, 4 * width, stride, 1)
            else:
                t = _basic_block(net, f"stage{s + 1}.{b}", t, width, stride)
    return net.done(net.classifier("fc", t, int(_pick(rng, (10, 100, 1000)))))


def resnext(net: Net, rng: np.random.Generator) -> Graph:
    x = _image_input(net, rng)
    groups = int(_pick(rng, (4, 8, 16, 32)))
    per_group = int(_pick(rng, (2, 4, 8)))
    stages = int(rng.integers(2, 5))
    t = _stem(net, rng, x, int(_pick(rng, (32, 64))))
    for s in range(stages):
        width = groups * per_group * 2 ** s
        for b in range(int(rng.integers(1, 7))):
            t = bottleneck(net, f"stage{s + 1}.{b}", t, width, 2 * width, 2 if b == 0 and s > 0 else 1, groups)
    return net.done(net.classifier("fc", t, int(_pick(rng, (10, 100, 1000)))))


def _cbr(net: Net, name: str, x: Tensor, out: int, k, stride: int = 1) -> int:
    """conv-bn(eps 1e-3)-relu with PyTorch padding k // 2 (Inception's BasicConv2d)."""
    kh, kw = (k, k) if isinstance(k, int) else k
    return net.conv_bn(name, x, out, k, stride=stride, pad=(kh // 2, kw // 2), epsilon=1e-3)


def _inception_module(net: Net, rng: np.random.Generator, name: str, x: Tensor, width: int) -> int:
    """2-4 parallel branches concatenated on channels: a 1x1 conv, 1x1 -> kxk (or
    factorised 1xk -> kx1), 1x1 -> 3x3 -> 3x3, and an avg/max pool -> 1x1 branch."""
    ch = lambda: max(8, int(width * _pick(rng, (0.25, 0.375, 0.5))))  # noqa: E731
    kinds = ["1x1", "kxk", "dbl", "pool"]
    keep = [k for k in kinds if rng.random() < 0.8] or ["1x1", "kxk"]
    if len(keep) == 1:
        keep.append("kxk" if keep[0] != "kxk" else "1x1")
    branches = []
    for kind in keep:
        if kind == "1x1":
            branches.append(_cbr(net, f"{name}.b1", x, ch(), 1))
        elif kind == "kxk":
            t = _cbr(net, f"{name}.bk_1", x, ch(), 1)
            k = int(_pick(rng, (3, 5, 7)))
            if k > 3 and rng.random() < 0.6:
                t = _cbr(net, f"{name}.bk_3", _cbr(net, f"{name}.bk_2", t, ch(), (1, k)), ch(), (k, 1))
            else:
                t = _cbr(net, f"{name}.bk_2", t, ch(), k)
            branches.append(t)
        elif kind == "dbl":
            t = _cbr(net, f"{name}.bd_1", x, ch(), 1)
            t = _cbr(net, f"{name}.bd_3", _cbr(net, f"{name}.bd_2", t, ch(), 3), ch(), 3)
            branches.append(t)
        else:
            pool = "avgpool" if rng.random() < 0.7 else "maxpool"
            branches.append(_cbr(net, f"{name}.bp", net.pool(pool, x, 3, 1, 1), ch(), 1))
    return net.concat(1, branches)


def _grid_reduction(net: Net, rng: np.random.Generator, name: str, x: Tensor, width: int) -> int:
    """Halve the resolution: 3x3/2 conv | 1x1 -> 3x3 -> 3x3/2 | 3x3/2 max pool -> concat."""
    c = max(8, width // 2)
    a = _cbr(net, f"{name}.b3", x, c, 3, stride=2)
    d = _cbr(net, f"{name}.bd_2", _cbr(net, f"{name}.bd_1", x, c // 2, 1), c, 3)
    d = _cbr(net, f"{name}.bd_3", d, c, 3, stride=2)
    return net.concat(1, [a, d, net.pool("maxpool", x, 3, 2, 1)])


def inception(net: Net, rng: np.random.Generator) -> Graph:
    x = _image_input(net, rng, (48, 64))
    width = int(_pick(rng, (32, 48, 64)))
    t = _cbr(net, "stem.1", x, width // 2, 3, stride=2)
    t = _cbr(net, "stem.2", t, width, 3)
    for s in range(int(rng.integers(2, 5))):
        for m in range(int(rng.integers(1, 5))):
            t = _inception_module(net, rng, f"stage{s}.m{m}", t, width)
        width = min(2 * width, 256)
        if net.shape(t)[2] >= 8:
            t = _grid_reduction(net, rng, f"stage{s}.reduce", t, width)
    return net.done(net.classifier("fc", t, int(_pick(rng, (10, 100, 1000)))))


_NAS_OPS = ("sep3", "sep5", "sep7", "avg3", "max3", "identity")


def _nas_op(net: Net, name: str, op: str, x: Tensor) -> int | Tensor:
    if op.startswith("sep"):
        return sep_conv(net, name, x, int(op[3:]))
    if op == "avg3":
        return net.same_pool("avgpool", x, 3, 1)
    if op == "max3":
        return net.same_pool("maxpool", x, 3, 1)
    return x


def _normal_cell(net: Net, name: str, prev: Tensor, cur: Tensor, width: int, genotype) -> int:
    """A NASNet-style normal cell of ``genotype``: inputs fitted to ``width`` channels
    (1x1 conv-relu, or 3x3/2 conv-relu for a larger ``prev``), then 5 pairwise sums of
    (op, input) pairs, where an input is prev, cur or an earlier sum; the sums concatenated."""
    c = net.conv(f"{name}.squeeze", cur, width, 1, pad=0, act="relu")
    if net.shape(prev)[2] == net.shape(c)[2]:
        p = net.conv(f"{name}.fit", prev, width, 1, pad=0, act="relu")
    else:
        p = net.conv(f"{name}.fit", prev, width, 3, stride=2, pad="same", act="relu")
    states: list[Tensor] = [p, c]
    for i, ((op_a, in_a), (op_b, in_b)) in enumerate(genotype):
        a = _nas_op(net, f"{name}.s{i}a", op_a, states[in_a])
        b = _nas_op(net, f"{name}.s{i}b", op_b, states[in_b])
        states.append(net.add(a, b))
    return net.concat(1, states[2:])


def nasnet(net: Net, rng: np.random.Generator) -> Graph:
    size = int(_pick(rng, (16, 32)))
    channels = int(_pick(rng, (16, 24, 32)))
    x = net.input("x", (1, channels, size, size))
    genotype = []
    for i in range(5):  # each of the 5 sums reads two of: prev, cur, earlier sums
        pair = tuple((str(_pick(rng, _NAS_OPS)), int(rng.integers(0, 2 + i))) for _ in range(2))
        genotype.append(pair)
    width = channels
    stages = int(rng.integers(2, 4))
    cells = int(rng.integers(1, 7))
    for s in range(stages):
        prev = cur = x
        for i in range(cells):
            prev, cur = cur, _normal_cell(net, f"stage{s}.normal{i}", prev, cur, width, genotype)
        width *= 2
        if s < stages - 1:
            x = reduction_cell(net, f"stage{s}.reduce", prev, cur, width)
        else:
            x = cur
    return net.done(x)


def mobilenet(net: Net, rng: np.random.Generator) -> Graph:
    x = _image_input(net, rng, (48, 64))
    mult = float(_pick(rng, (0.35, 0.5, 0.75, 1.0)))
    ch = lambda c: max(8, int(round(c * mult / 8)) * 8)  # noqa: E731
    v2 = rng.random() < 0.6
    t = net.conv_bn("stem", x, ch(32), 3, stride=2)
    stages = int(rng.integers(4, 8))
    c_out = ch(16)
    for s in range(stages):
        c_out = ch(int(_pick(rng, (16, 24, 32, 64, 96, 160)))) if s else c_out
        c_out = max(c_out, net.shape(t)[1] if v2 else 0)
        stride = 2 if s and net.shape(t)[2] > 4 and rng.random() < 0.6 else 1
        k = int(_pick(rng, (3, 3, 5)))
        for b in range(int(rng.integers(1, 5))):
            name, st = f"stage{s}.{b}", stride if b == 0 else 1
            c_in = net.shape(t)[1]
            if v2:  # inverted residual: expand 1x1 -> depthwise kxk -> project 1x1 (+ residual)
                e = c_in * int(_pick(rng, (1, 3, 4, 6)))
                h = net.conv_bn(f"{name}.expand", t, e, 1) if e != c_in else t
                h = net.conv_bn(f"{name}.dw", h, e, k, stride=st, groups=e)
                h = net.conv_bn(f"{name}.project", h, c_out, 1, relu=False)
                t = net.add(h, t) if st == 1 and c_in == c_out else h
            else:  # depthwise-separable: depthwise kxk conv-bn-relu -> pointwise 1x1 conv-bn-relu
                h = net.conv_bn(f"{name}.dw", t, c_in, k, stride=st, groups=c_in)
                t = net.conv_bn(f"{name}.pw", h, c_out, 1)
    t = net.conv_bn("head", t, ch(640), 1)
    return net.done(net.classifier("fc", t, int(_pick(rng, (10, 100, 1000)))))


def squeezenet(net: Net, rng: np.random.Generator) -> Graph:
    x = _image_input(net, rng, (48, 64))
    t = net.relu(net.conv("conv1", x, int(_pick(rng, (32, 64, 96))), 3, stride=2, pad=0, bias=True))
    t = net.pool("maxpool", t, 3, 2)
    fires = int(rng.integers(6, 13))
    squeeze = int(_pick(rng, (8, 16, 24)))
    for i in range(fires):
        sq = squeeze * (1 + i // 3)
        t = fire(net, f"fire{i + 2}", t, sq, 4 * sq)
        if rng.random() < 0.25 and net.shape(t)[2] >= 6:
            t = net.pool("maxpool", t, 3, 2)
    classes = int(_pick(rng, (10, 100, 1000)))
    t = net.relu(net.conv("conv10", t, classes, 1, bias=True))
    n, c = net.shape(t)[:2]
    return net.done(net.op("reshape", net.op("global_avgpool", t), shape=(n, c)))


# ----------------------------------------------------------------------------- sequence families


def _transformer_dims(rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(sequence, hidden, heads, ffn) with hidden divisible by heads."""
    seq = int(_pick(rng, (16, 32, 64, 128)))
    hidden = int(_pick(rng, (64, 128, 192, 256)))
    heads = int(_pick(rng, [h for h in (1, 2, 4, 8, 12, 16) if hidden % h == 0 and hidden // h >= 16]))
    return seq, hidden, heads, hidden * int(_pick(rng, (2, 4)))


def transformer(net: Net, rng: np.random.Generator) -> Graph:
    seq, hidden, heads, ffn = _transformer_dims(rng)
    pre_ln = rng.random() < 0.5
    if rng.random() < 0.3:  # ViT-like: patch embedding of a small image, class token, positions
        image, patch = int(_pick(rng, (32, 64))), int(_pick(rng, (8, 16)))
        x = net.input("image", (1, 3, image, image))
        n = (image // patch) ** 2
        t = net.conv("embed.patch", x, hidden, patch, stride=patch, pad=0, bias=True)
        t = net.op("transpose", net.op("reshape", t, shape=(hidden, n)), perm=(1, 0))
        t = net.concat(0, [net.weight("embed.cls", (1, hidden)), t])
        t = net.add(t, net.weight("embed.pos", (n + 1, hidden)))
    else:
        t = net.input("x", (seq, hidden))
    for i in range(int(rng.integers(3, 25))):
        t = encoder_layer(net, f"layer{i}", t, heads, ffn, pre_ln=pre_ln, eps=1e-6 if pre_ln else 1e-12)
    if pre_ln:
        t = net.layernorm("final_ln", t, 1e-6)
    return net.done(t)


def _attention(net: Net, name: str, x: Tensor, kv: Tensor, heads: int, mask: int | None) -> int:
    """Multi-head attention of queries ``x`` [S, D] over keys/values ``kv`` [Sk, D], with an
    optional additive mask [S, Sk] on the scores (0 = attend, -1e9 = masked). 15-16 ops."""
    s, d = net.shape(x)
    sk = net.shape(kv)[0]
    dh = d // heads
    q = net.op("reshape", net.matmul(f"{name}.q", x, d), shape=(s, heads, dh))
    k = net.op("reshape", net.matmul(f"{name}.k", kv, d), shape=(sk, heads, dh))
    v = net.op("reshape", net.matmul(f"{name}.v", kv, d), shape=(sk, heads, dh))
    scores = net.op("matmul", net.op("transpose", q, perm=(1, 0, 2)), net.op("transpose", k, perm=(1, 2, 0)))
    scores = net.mul(scores, net.const(f"{name}.scale", 1.0 / math.sqrt(dh)))
    if mask is not None:
        scores = net.add(scores, mask)
    probs = net.op("softmax", scores, axis=-1)
    ctx = net.op("transpose", net.op("matmul", probs, net.op("transpose", v, perm=(1, 0, 2))), perm=(1, 0, 2))
    return net.matmul(f"{name}.o", net.op("reshape", ctx, shape=(s, d)), d)


def decoder(net: Net, rng: np.random.Generator) -> Graph:
    seq, hidden, heads, ffn = _transformer_dims(rng)
    x = net.input("x", (seq, hidden))
    causal = np.triu(np.full((seq, seq), -1e9, np.float32), 1)
    mask = net.weight("causal_mask", (seq, seq), value=causal)
    memory = net.input("memory", (int(_pick(rng, (16, 32, 64))), hidden)) if rng.random() < 0.5 else None
    pre_ln = rng.random() < 0.5
    t = x
    for i in range(int(rng.integers(2, 17))):
        name = f"layer{i}"
        blocks = [("self", mask)] + ([("cross", None)] if memory is not None else []) + [("ffn", None)]
        for j, (kind, m) in enumerate(blocks):
            inp = net.layernorm(f"{name}.ln{j}", t, 1e-5) if pre_ln else t
            if kind == "ffn":
                h = net.matmul(f"{name}.ffn.fc2", net.op("gelu", net.matmul(f"{name}.ffn.fc1", inp, ffn)), hidden)
            else:
                h = _attention(net, f"{name}.{kind}", inp, inp if kind == "self" else memory, heads, m)
            t = net.add(t, h)
            if not pre_ln:
                t = net.layernorm(f"{name}.ln{j}", t, 1e-5)
    if pre_ln:
        t = net.layernorm("final_ln", t, 1e-5)
    return net.done(t)


def mlp(net: Net, rng: np.random.Generator) -> Graph:
    batch = int(_pick(rng, (1, 8, 32)))
    width = int(_pick(rng, (64, 128, 256, 384)))
    t = net.input("x", (batch, width))
    act = str(_pick(rng, ("relu", "gelu", "tanh", "sigmoid")))
    for i in range(int(rng.integers(6, 65))):
        name = f"block{i}"
        kind = _pick(rng, ("residual", "residual", "plain", "parallel"))
        if kind == "residual":  # x + W2 act(W1 LN(x))
            h = net.matmul(f"{name}.fc1", net.layernorm(f"{name}.ln", t), min(width * int(_pick(rng, (1, 2, 4))), 768))
            h = net.op(act, h)
            t = net.add(t, net.matmul(f"{name}.fc2", h, width))
        elif kind == "plain":  # linear (+ bias) with a fused or separate activation
            if rng.random() < 0.5:
                t = net.linear(name, t, width, act="relu" if act == "relu" else "none")
                if act != "relu":
                    t = net.op(act, t)
            else:
                t = net.op(act, net.matmul(name, t, width))
        else:  # two projections of one input, summed (a merge-able pair)
            a = net.matmul(f"{name}.a", t, width)
            b = net.matmul(f"{name}.b", t, width)
            t = net.op(act, net.add(a, b))
    return net.done(net.linear("head", t, int(_pick(rng, (10, 100, 1000)))))


def _lstm_cell(net: Net, name: str, x: Tensor, h: Tensor, c: Tensor) -> tuple[int, int]:
    """i, f, o = sigmoid(x Wx + h Wh), g = tanh(x Wx + h Wh); c' = f c + i g; h' = o tanh(c')."""
    d = net.shape(h)[-1]
    gate = lambda g: net.add(net.matmul(f"{name}.x{g}", x, d), net.matmul(f"{name}.h{g}", h, d))  # noqa: E731
    i, f, o = (net.op("sigmoid", gate(g)) for g in "ifo")
    g = net.op("tanh", gate("g"))
    c = net.add(net.mul(f, c), net.mul(i, g))
    return net.mul(o, net.op("tanh", c)), c


def _gru_cell(net: Net, name: str, x: Tensor, h: Tensor) -> int:
    """r, z = sigmoid(x Wx + h Wh); n = tanh(x Wn + r (h Un)); h' = n + z (h - n)."""
    d = net.shape(h)[-1]
    gate = lambda g: net.add(net.matmul(f"{name}.x{g}", x, d), net.matmul(f"{name}.h{g}", h, d))  # noqa: E731
    r, z = net.op("sigmoid", gate("r")), net.op("sigmoid", gate("z"))
    n = net.op("tanh", net.add(net.matmul(f"{name}.xn", x, d), net.mul(r, net.matmul(f"{name}.hn", h, d))))
    return net.add(n, net.mul(z, net.op("sub", h, n)))


def rnn(net: Net, rng: np.random.Generator) -> Graph:
    cell = str(_pick(rng, ("nas", "lstm", "gru")))
    hidden = int(_pick(rng, (64, 128, 256, 512)))
    batch = int(_pick(rng, (1, 1, 8, 32)))
    length = int(rng.integers(3, 17))
    layers = int(rng.integers(1, 4))
    seq: list[Tensor] = [net.input(f"x{i}", (batch, hidden)) for i in range(length)]
    for layer in range(layers):
        h = net.weight(f"l{layer}.h0", (batch, hidden))
        c = net.weight(f"l{layer}.c0", (batch, hidden))
        out = []
        for i, x in enumerate(seq):
            name = f"l{layer}.step{i}"
            if cell == "nas":
                h = nas_node(net, name, h, x)
            elif cell == "lstm":
                h, c = _lstm_cell(net, name, x, h, c)
            else:
                h = _gru_cell(net, name, x, h)
            out.append(h)
        seq = out
    return net.done(seq[-1])


FAMILIES: dict[str, Callable[[Net, np.random.Generator], Graph]] = {
    "resnet": resnet,
    "resnext": resnext,
    "inception": inception,
    "nasnet": nasnet,
    "mobilenet": mobilenet,
    "squeezenet": squeezenet,
    "transformer": transformer,
    "decoder": decoder,
    "mlp": mlp,
    "rnn": rnn,
}


# ----------------------------------------------------------------------------- names


def graph_name(family: str, seed: int) -> str:
    """The canonical name ``gen:FAMILY:seed=N`` of a generated graph."""
    if family not in FAMILIES:
        raise GraphError(f"unknown generated family {family!r} (known: {', '.join(FAMILIES)})")
    if int(seed) < 0:
        raise GraphError(f"generated graph seed must be >= 0, got {seed}")
    return f"{PREFIX}{family}:seed={int(seed)}"


def parse_name(name: str) -> tuple[str, int]:
    """``gen:FAMILY:seed=N`` -> (family, N); GraphError naming the problem otherwise."""
    m = _NAME.match(name)
    if m is None:
        raise GraphError(f"{name!r}: a generated graph name is gen:FAMILY:seed=N with N >= 0 "
                         f"(families: {', '.join(FAMILIES)})")
    family, seed = m.group(1), int(m.group(2))
    if family not in FAMILIES:
        raise GraphError(f"{name!r}: unknown generated family {family!r} (known: {', '.join(FAMILIES)})")
    return family, seed


def generate(family: str, seed: int) -> Graph:
    """Build generated graph ``gen:FAMILY:seed=N`` (validated, MIN_OPS..MAX_OPS ops)."""
    name = graph_name(family, seed)
    rng = np.random.default_rng([int(seed), zlib.crc32(family.encode())])
    for _ in range(_MAX_DRAWS):
        g = FAMILIES[family](Net(name), rng)
        if MIN_OPS <= g.num_ops() <= MAX_OPS:
            return g
    raise GraphError(f"{name!r}: no draw within {MIN_OPS}..{MAX_OPS} ops after {_MAX_DRAWS} tries")  # pragma: no cover


def load_generated(name: str) -> Graph:
    """Build the generated graph named ``name`` (``gen:FAMILY:seed=N``)."""
    return generate(*parse_name(name))


__all__ = ["FAMILIES", "MAX_OPS", "MIN_OPS", "PREFIX", "generate", "graph_name", "load_generated", "parse_name"]
