"""NumPy reference executor: the ground truth for what a graph computes.

``execute(graph, feeds)`` runs every node in topological order with plain NumPy and
returns the graph outputs. Inputs and weights without a given value are filled
deterministically from ``seed`` and the source's name (so the same graph and seed always
get the same numbers, and a rewritten graph that keeps its sources gets the same feeds).
Opaque nodes imported from ONNX are run through onnxruntime, one node at a time.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Mapping

import numpy as np

from systems_envs.graph.ir import Graph, GraphError, Node

Kernel = Callable[[Node, list[np.ndarray]], list[np.ndarray]]


def source_value(node: Node, seed: int, dtype=np.float32) -> np.ndarray:
    """Deterministic value for an input or weight without a known value.

    ``init``: normal (inputs: N(0,1); weights: N(0, 1/fan_in)), positive (U[0.5, 1.5],
    e.g. batchnorm variance), ones, zeros.
    """
    shape = node.shape
    init = node.attrs.get("init", "normal")
    digest = hashlib.blake2b(f"{seed}:{node.attrs['name']}".encode(), digest_size=8).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "little"))
    if np.dtype(node.attrs.get("dtype", "float32")).kind in "biu":
        # integer / boolean inputs (token ids, masks): 0 or 1, valid as an index and as a mask
        return rng.integers(0, 2, size=shape).astype(dtype)
    if init == "ones":
        v = np.ones(shape)
    elif init == "zeros":
        v = np.zeros(shape)
    elif init == "positive":
        v = rng.uniform(0.5, 1.5, size=shape)
    elif init == "normal":
        v = rng.standard_normal(shape)
        if node.op == "weight":
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(np.prod(shape))
            v = v / np.sqrt(max(fan_in, 1))
    else:
        raise GraphError(f"node {node.name!r}: unknown init {init!r}")
    return v.astype(dtype)


def random_feeds(graph: Graph, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """Values for every input and weight of the graph (known weight values are kept)."""
    feeds = {}
    for n in graph.nodes.values():
        if n.op in ("input", "weight"):
            name = n.attrs["name"]
            if name in graph.values:
                feeds[name] = graph.values[name].astype(dtype)
            else:
                feeds[name] = source_value(n, seed, dtype)
    return feeds


# ----------------------------------------------------------------------------- kernels


def activate(x: np.ndarray, act: str) -> np.ndarray:
    """Apply one of :data:`~systems_envs.graph.ops.ACTIVATIONS` element-wise."""
    if act == "none":
        return x
    if act == "relu":
        return np.maximum(x, 0)
    if act == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if act == "tanh":
        return np.tanh(x)
    if act == "relu6":
        return np.clip(x, 0, 6)
    if act == "hardsigmoid":
        return np.clip(x / 6 + 0.5, 0, 1)
    if act == "hardswish":
        return x * np.clip(x / 6 + 0.5, 0, 1)
    if act == "gelu":
        from scipy.special import erf

        return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
    if act == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))
    raise GraphError(f"unknown activation {act!r}")


def _pad4(x: np.ndarray, pads, value=0.0) -> np.ndarray:
    pt, pl, pb, pr = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=value)


def _windows(x: np.ndarray, kh: int, kw: int, strides, dilations=(1, 1)) -> np.ndarray:
    """[N, C, Ho, Wo, kh, kw] view of sliding windows of a padded NCHW array."""
    dh, dw = dilations
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    v = np.lib.stride_tricks.sliding_window_view(x, (eh, ew), axis=(2, 3))
    return v[:, :, :: strides[0], :: strides[1], ::dh, ::dw]


def _conv2d(n: Node, a):
    x, w = a[0], a[1]
    g = n.attrs["groups"]
    xp = _pad4(x, n.attrs["pads"])
    win = _windows(xp, w.shape[2], w.shape[3], n.attrs["strides"], n.attrs["dilations"])
    N, C, Ho, Wo = win.shape[:4]
    O = w.shape[0]
    win = win.reshape(N, g, C // g, Ho, Wo, w.shape[2], w.shape[3])
    wg = w.reshape(g, O // g, C // g, w.shape[2], w.shape[3])
    y = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True).reshape(N, O, Ho, Wo)
    if len(a) == 3:
        y = y + a[2].reshape(1, O, 1, 1)
    return [activate(y, n.attrs["activation"])]


def _pool(n: Node, a):
    x = a[0]
    kh, kw = n.attrs["kernel"]
    if n.op == "maxpool":
        win = _windows(_pad4(x, n.attrs["pads"], -np.inf), kh, kw, n.attrs["strides"])
        y = win.max(axis=(4, 5))
    else:
        win = _windows(_pad4(x, n.attrs["pads"]), kh, kw, n.attrs["strides"])
        total = win.sum(axis=(4, 5))
        if n.attrs["count_include_pad"]:
            y = total / (kh * kw)
        else:
            ones = _pad4(np.ones((1, 1) + x.shape[2:], x.dtype), n.attrs["pads"])
            count = _windows(ones, kh, kw, n.attrs["strides"]).sum(axis=(4, 5))
            y = total / count
    return [activate(y.astype(x.dtype), n.attrs["activation"])]


def _split(n: Node, a):
    idx = np.cumsum(n.attrs["sizes"])[:-1]
    return list(np.split(a[0], idx, axis=n.attrs["axis"]))


def _softmax(n: Node, a):
    x = a[0]
    e = np.exp(x - x.max(axis=n.attrs["axis"], keepdims=True))
    return [e / e.sum(axis=n.attrs["axis"], keepdims=True)]


def _batchnorm(n: Node, a):
    x, scale, bias, mean, var = a
    shp = (1, -1) + (1,) * (x.ndim - 2)
    inv = scale / np.sqrt(var + n.attrs["epsilon"])
    return [(x - mean.reshape(shp)) * inv.reshape(shp) + bias.reshape(shp)]


def _layernorm(n: Node, a):
    x, gamma, beta = a
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return [(x - mu) / np.sqrt(var + n.attrs["epsilon"]) * gamma + beta]


def _gelu(n: Node, a):
    return [activate(a[0], n.op).astype(a[0].dtype)]


def _erf(n: Node, a):
    from scipy.special import erf

    return [erf(a[0]).astype(a[0].dtype)]


def _rmsnorm(n: Node, a):
    x, gamma = a
    ms = (x * x).mean(axis=-1, keepdims=True)
    return [x / np.sqrt(ms + n.attrs["epsilon"]) * gamma]


def _gather(n: Node, a):
    data, idx = a
    return [np.take(data, np.asarray(idx).astype(np.int64), axis=n.attrs["axis"])]


def _enlarge(n: Node, a):
    w, ref = a
    dh = (ref.shape[2] - w.shape[2]) // 2
    dw = (ref.shape[3] - w.shape[3]) // 2
    return [np.pad(w, ((0, 0), (0, 0), (dh, dh), (dw, dw)))]


def _merge_gconv(n: Node, a):
    """Block-diagonal weight: ``count`` consecutive groups become one group.

    Attribute ``groups`` is the old conv's group count G (0 = ``count``, TASO's
    semantics: all groups merge into one). Output channel o keeps its kernel at
    input-channel block ``(o // (O / G)) % count``, so the conv with G groups and the old
    weight equals the conv with G / count groups and the merged weight.
    """
    w = a[0]
    c = n.attrs["count"]
    O, cg = w.shape[0], w.shape[1]
    out = np.zeros((O, cg * c) + w.shape[2:], w.dtype)
    per = O // (n.attrs["groups"] or c)
    for o in range(O):
        j = (o // per) % c
        out[o, j * cg:(j + 1) * cg] = w[o]
    return [out]


def _opaque(n: Node, a):
    blob = n.attrs.get("onnx_node", b"")
    if not blob:
        raise GraphError(f"node {n.name!r}: opaque op {n.attrs['op_type']!r} carries no ONNX node; "
                         "the reference executor cannot run it")
    from systems_envs.graph.onnx_io import run_onnx_node

    return run_onnx_node(n, a)


KERNELS: dict[str, Kernel] = {
    "conv2d": _conv2d,
    "matmul": lambda n, a: [activate(np.matmul(a[0], a[1]), n.attrs["activation"])],
    "linear": lambda n, a: [activate(a[0] @ a[1] + (a[2] if len(a) == 3 else 0), n.attrs["activation"])],
    "add": lambda n, a: [a[0] + a[1]],
    "sub": lambda n, a: [a[0] - a[1]],
    "mul": lambda n, a: [a[0] * a[1]],
    "div": lambda n, a: [a[0] / a[1]],
    "relu": lambda n, a: [activate(a[0], "relu")],
    "sigmoid": lambda n, a: [activate(a[0], "sigmoid")],
    "tanh": lambda n, a: [activate(a[0], "tanh")],
    "gelu": _gelu,
    "gelu_tanh": _gelu,
    "relu6": lambda n, a: [activate(a[0], "relu6")],
    "hardsigmoid": lambda n, a: [activate(a[0], "hardsigmoid")],
    "hardswish": lambda n, a: [activate(a[0], "hardswish")],
    "erf": _erf,
    "sqrt": lambda n, a: [np.sqrt(a[0])],
    "reciprocal": lambda n, a: [1.0 / a[0]],
    "neg": lambda n, a: [-a[0]],
    "pow": lambda n, a: [np.power(a[0], a[0].dtype.type(n.attrs["exponent"]))],
    "identity": lambda n, a: [a[0]],
    "batchnorm": _batchnorm,
    "layernorm": _layernorm,
    "rmsnorm": _rmsnorm,
    "reduce_mean": lambda n, a: [a[0].mean(axis=tuple(n.attrs["axes"]), keepdims=bool(n.attrs["keepdims"]))],
    "gather": _gather,
    "maxpool": _pool,
    "avgpool": _pool,
    "global_avgpool": lambda n, a: [a[0].mean(axis=(2, 3), keepdims=True)],
    "concat": lambda n, a: [np.concatenate(a, axis=n.attrs["axis"])],
    "split": _split,
    "reshape": lambda n, a: [a[0].reshape(n.attrs["shape"])],
    "transpose": lambda n, a: [np.transpose(a[0], n.attrs["perm"])],
    "softmax": _softmax,
    "enlarge": _enlarge,
    "merge_gconv": _merge_gconv,
    "opaque": _opaque,
}


def execute(
    graph: Graph,
    feeds: Mapping[str, np.ndarray] | None = None,
    *,
    seed: int = 0,
    dtype=np.float32,
    keep_all: bool = False,
) -> list[np.ndarray] | dict[tuple[int, int], np.ndarray]:
    """Run the graph and return its outputs (in ``graph.outputs`` order).

    Args:
      feeds: values by input/weight name; missing ones come from :func:`random_feeds`.
      seed: seed for missing sources.
      dtype: float32 (default) or float64 (used to verify rewrites tightly).
      keep_all: return every tensor as ``{(node id, output index): array}`` instead.
    """
    vals: dict[tuple[int, int], np.ndarray] = {}
    for nid in graph.topo_order():
        n = graph.nodes[nid]
        if n.op in ("input", "weight"):
            name = n.attrs["name"]
            if feeds is not None and name in feeds:
                v = np.asarray(feeds[name], dtype=dtype)
            elif name in graph.values:
                v = graph.values[name].astype(dtype)
            else:
                v = source_value(n, seed, dtype)
            if v.shape != n.shape:
                raise GraphError(f"feed {name!r} has shape {v.shape}, expected {n.shape}")
            vals[(nid, 0)] = v
            continue
        args = [vals[r] for r in n.inputs]
        with np.errstate(over="ignore", under="ignore"):
            outs = KERNELS[n.op](n, args)
        for i, o in enumerate(outs):
            o = np.asarray(o, dtype=dtype)
            if o.shape != n.shapes[i]:
                raise GraphError(f"node {n.name!r} ({n.op}): executor produced shape {o.shape}, "
                                 f"inferred {n.shapes[i]}")
            vals[(nid, i)] = o
    if keep_all:
        return vals
    return [vals[o] for o in graph.outputs]


def constant_values(graph: Graph, refs, *, seed: int = 0, dtype=np.float32) -> dict[tuple[int, int], np.ndarray]:
    """Values of constant tensors (``refs``: TensorRefs whose nodes depend on weights only),
    computing only their ancestors; weights without a known value get :func:`source_value`."""
    vals: dict[tuple[int, int], np.ndarray] = {}
    want = {r[0] for r in refs}
    needed: set[int] = set()
    stack = list(want)
    while stack:
        nid = stack.pop()
        if nid in needed:
            continue
        needed.add(nid)
        n = graph.nodes[nid]
        if n.op == "input":
            raise GraphError(f"node {n.name!r} is not constant: it depends on input {n.name!r}")
        stack.extend(s for s, _ in n.inputs)
    for nid in graph.topo_order():
        if nid not in needed:
            continue
        n = graph.nodes[nid]
        if n.op == "weight":
            name = n.attrs["name"]
            v = graph.values[name] if name in graph.values else source_value(n, seed, dtype)
            vals[(nid, 0)] = np.asarray(v, dtype=dtype)
            continue
        with np.errstate(over="ignore", under="ignore"):
            outs = KERNELS[n.op](n, [vals[r] for r in n.inputs])
        for i, o in enumerate(outs):
            vals[(nid, i)] = np.asarray(o, dtype=dtype)
    return {tuple(r): vals[tuple(r)] for r in refs}
