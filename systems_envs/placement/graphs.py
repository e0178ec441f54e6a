"""Graphs for the placement benchmark, including one too big for a single device.

``transformer_l32_d4096``: a 32-layer transformer encoder of width 4096 (32 heads, FFN
16384, batch 8 x sequence 512), about 6.4 G parameters = 25.8 GB of float32 weights,
built with the IR API. It does not fit one 16 GiB V100 of the ``gpu*`` presets, so a
placement must split it across devices.

``transformer_l17_d256``: a small 17-layer encoder (width 256, batch 1 x sequence 64)
with 374 placed operators, used to measure simulator throughput on a ~400-op graph.

:func:`load_placement_graph` resolves these names first, then anything
:func:`systems_envs.graph.load.load_graph` accepts (built-in names, ``.model``, ``.onnx``).
"""
from __future__ import annotations

from systems_envs.graph.ir import Graph, GraphError
from systems_envs.graph.load import load_graph


def transformer(layers: int, width: int, heads: int, batch: int, seq: int, name: str | None = None) -> Graph:
    """A post-LN transformer encoder: x [batch*seq, width] -> [batch*seq, width]."""
    if width % heads:
        raise ValueError(f"transformer: width {width} is not divisible by heads {heads}")
    g = Graph(name or f"transformer_l{layers}_d{width}")
    dh, tokens, ffn = width // heads, batch * seq, 4 * width
    x = g.input("x", (tokens, width))
    for li in range(layers):
        def w(tag, shape, init="normal"):
            return g.weight(f"l{li}.{tag}", shape, init)

        def heads_of(t, perm):
            return g.add("transpose", [g.add("reshape", [t], shape=(batch, seq, heads, dh))], perm=perm)

        q = heads_of(g.add("linear", [x, w("wq", (width, width))]), (0, 2, 1, 3))
        k = heads_of(g.add("linear", [x, w("wk", (width, width))]), (0, 2, 3, 1))
        v = heads_of(g.add("linear", [x, w("wv", (width, width))]), (0, 2, 1, 3))
        probs = g.add("softmax", [g.add("matmul", [q, k])], axis=-1)
        ctx = g.add("transpose", [g.add("matmul", [probs, v])], perm=(0, 2, 1, 3))
        ctx = g.add("reshape", [ctx], shape=(tokens, width))
        h = g.add("add", [g.add("linear", [ctx, w("wo", (width, width))]), x])
        h = g.add("layernorm", [h, w("ln1.g", (width,), "ones"), w("ln1.b", (width,), "zeros")])
        f = g.add("gelu", [g.add("linear", [h, w("w1", (width, ffn)), w("b1", (ffn,), "zeros")])])
        f = g.add("linear", [f, w("w2", (ffn, width)), w("b2", (width,), "zeros")])
        x = g.add("layernorm", [g.add("add", [f, h]), w("ln2.g", (width,), "ones"), w("ln2.b", (width,), "zeros")])
    g.set_outputs([x])
    return g


PLACEMENT_GRAPHS = {
    "transformer_l32_d4096": lambda: transformer(32, 4096, 32, 8, 512, "transformer_l32_d4096"),
    # 374 placed ops: the ~400-op graph of the simulator throughput benchmark
    "transformer_l17_d256": lambda: transformer(17, 256, 4, 1, 64, "transformer_l17_d256"),
}


def load_placement_graph(spec: str) -> Graph:
    """A graph by name: the placement-only graphs above, else :func:`load_graph` (GraphError on bad input)."""
    if spec in PLACEMENT_GRAPHS:
        return PLACEMENT_GRAPHS[spec]()
    try:
        return load_graph(spec)
    except GraphError as e:
        if "not a built-in graph" in str(e):
            raise GraphError(f"{e} (placement graphs: {', '.join(PLACEMENT_GRAPHS)})") from None
        raise
