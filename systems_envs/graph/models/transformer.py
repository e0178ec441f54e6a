"""Transformer encoders: ``bert`` (TASO's BERT benchmark sizes, a correct encoder) and ``vit`` (ViT-B/16).

Tokens are rank-2 ``[seq, hidden]`` tensors (batch 1 folded away, as in TASO's BERT).
Projections are bias-free ``matmul`` ops with ``[in, out]`` weights, as in TASO's builder
(so TASO's matmul rewrite rules, e.g. merging the q/k/v matmuls that share an input,
apply); layernorms carry a gain and a shift. The attention scale ``1/sqrt(d_head)`` is a
separate ``mul`` by a 1-element constant weight ``<layer>.attn.scale`` (value known, kept
in ``Graph.values``) so the scores stay visibly ``softmax(q k^T / sqrt(d)) v``.
"""
from __future__ import annotations

import math

from systems_envs.graph.ir import Graph
from systems_envs.graph.models.layers import Net, Tensor


def attention(net: Net, name: str, x: Tensor, heads: int) -> int:
    """Multi-head self-attention of ``x`` [S, D]; returns the output projection [S, D]. 15 ops.

    q, k, v = x Wq, x Wk, x Wv; heads split by reshape [S, H, D/H] and transpose
    (q, v -> [H, S, D/H]; k -> [H, D/H, S] = k^T); scores = q k^T * scale; softmax over
    keys; context = p v -> transpose/reshape back to [S, D]; out = context Wo.
    """
    s, d = net.shape(x)
    dh = d // heads
    assert dh * heads == d, f"hidden {d} not divisible by {heads} heads"
    q, k, v = (net.op("reshape", net.matmul(f"{name}.{p}", x, d), shape=(s, heads, dh)) for p in "qkv")
    q = net.op("transpose", q, perm=(1, 0, 2))
    kt = net.op("transpose", k, perm=(1, 2, 0))
    v = net.op("transpose", v, perm=(1, 0, 2))
    scores = net.mul(net.op("matmul", q, kt), net.const(f"{name}.scale", 1.0 / math.sqrt(dh)))
    probs = net.op("softmax", scores, axis=-1)
    ctx = net.op("transpose", net.op("matmul", probs, v), perm=(1, 0, 2))
    ctx = net.op("reshape", ctx, shape=(s, d))
    return net.matmul(f"{name}.o", ctx, d)


def feed_forward(net: Net, name: str, x: Tensor, hidden: int) -> int:
    """x W1 -> gelu -> W2: 3 ops."""
    h = net.op("gelu", net.matmul(f"{name}.fc1", x, hidden))
    return net.matmul(f"{name}.fc2", h, net.shape(x)[-1])


def encoder_layer(net: Net, name: str, x: Tensor, heads: int, ffn: int, pre_ln: bool, eps: float) -> int:
    """One encoder layer, 23 ops. Post-LN (BERT): x = LN(x + Attn(x)); x = LN(x + FFN(x)).
    Pre-LN (ViT): x = x + Attn(LN(x)); x = x + FFN(LN(x))."""
    if pre_ln:
        x = net.add(x, attention(net, f"{name}.attn", net.layernorm(f"{name}.ln1", x, eps), heads))
        return net.add(x, feed_forward(net, f"{name}.ffn", net.layernorm(f"{name}.ln2", x, eps), ffn))
    x = net.layernorm(f"{name}.ln1", net.add(x, attention(net, f"{name}.attn", x, heads)), eps)
    return net.layernorm(f"{name}.ln2", net.add(x, feed_forward(net, f"{name}.ffn", x, ffn)), eps)


def bert(layers: int = 8, seq: int = 64, hidden: int = 1024, heads: int = 16) -> Graph:
    """BERT encoder stack at TASO's benchmark sizes: input ``x`` [64, 1024] (sequence 64,
    hidden 1024, batch 1 folded), 16 heads of 64, FFN 4096 with GELU, 8 post-LN layers,
    layernorm epsilon 1e-12. Output [64, 1024]. 184 ops (23 per layer).

    Sizes from TASO's ``examples/bert.py`` (seq 64, hidden 1024, 16 heads, 8 layers).
    Unlike that builder (whose final linear reads the layer input, so its attention is
    dead code), each layer here is a complete encoder layer: the output projection reads
    the attention context, followed by residual + layernorm and the FFN block.
    """
    net = Net("bert")
    x = net.input("x", (seq, hidden))
    for i in range(layers):
        x = encoder_layer(net, f"layer{i}", x, heads, 4 * hidden, pre_ln=False, eps=1e-12)
    return net.done(x)


def vit(layers: int = 12, image: int = 224, patch: int = 16, hidden: int = 768, heads: int = 12,
        mlp: int = 3072, classes: int = 1000) -> Graph:
    """ViT-B/16 classifier: input ``image`` [1, 3, 224, 224] -> logits [1, 1000]. 284 ops.

    Patch embedding = 16x16 stride-16 conv with bias -> reshape [768, 196] -> transpose to
    tokens [196, 768] -> prepend the class token (concat) -> add position embeddings
    [197, 768]; 12 pre-LN encoder layers (12 heads, MLP 3072, GELU, LN epsilon 1e-6);
    the class token (split off) -> layernorm -> linear head. Sizes: ViT-B/16
    (Dosovitskiy et al. 2021).
    """
    net = Net("vit")
    x = net.input("image", (1, 3, image, image))
    t = net.conv("embed.patch", x, hidden, patch, stride=patch, pad=0, bias=True)
    n = (image // patch) ** 2
    t = net.op("transpose", net.op("reshape", t, shape=(hidden, n)), perm=(1, 0))
    t = net.concat(0, [net.weight("embed.cls", (1, hidden)), t])
    t = net.add(t, net.weight("embed.pos", (n + 1, hidden)))
    for i in range(layers):
        t = encoder_layer(net, f"layer{i}", t, heads, mlp, pre_ln=True, eps=1e-6)
    cls = (net.op("split", t, axis=0, sizes=(1, n)), 0)
    return net.done(net.linear("head", net.layernorm("head.ln", cls, 1e-6), classes))
