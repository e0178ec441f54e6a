"""Operator catalogue of the graph IR: attributes, defaults and shape inference.

Every operator is described by an :class:`OpSpec`. Shapes are static tuples of ints in
the NCHW layout for images (batch, channels, height, width). Attribute values are
hashable (ints, floats, strings, tuples) so a node's signature can key a cache.

Shape inference raises :class:`ShapeError` with a short reason; the graph wraps it into
a :class:`~systems_envs.graph.ir.GraphError` that names the node.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

Shape = tuple[int, ...]
# Activations a conv2d / matmul / linear / pool can carry (fused), as ONNX and PyTorch
# define them: relu6 = min(max(x, 0), 6) (ONNX Clip(0, 6)); hardsigmoid = max(0, min(1, x/6 + 1/2))
# (ONNX HardSigmoid with alpha 1/6, beta 1/2, PyTorch's); hardswish = x * hardsigmoid(x);
# gelu = x * Phi(x) (exact, Erf form); gelu_tanh = its tanh approximation (GPT-2's gelu_new).
ACTIVATIONS = ("none", "relu", "sigmoid", "tanh", "relu6", "hardsigmoid", "hardswish", "gelu", "gelu_tanh")
# Element-wise, one input, no attributes: gelu is exact (Erf form), gelu_tanh the tanh approximation.
UNARY_OPS = ("relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "relu6", "hardsigmoid", "hardswish", "erf", "sqrt",
             "reciprocal", "neg")


class ShapeError(ValueError):
    """The inputs or attributes of one operator are inconsistent."""


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """Static description of one operator type.

    Attributes:
      name: the op string used in nodes (e.g. ``"conv2d"``).
      arity: (min, max) number of inputs; max None = unbounded.
      defaults: attribute defaults; attributes not listed here (and not in
        ``required``) are rejected.
      required: attributes that must be given.
      infer: ``infer(input_shapes, attrs) -> list of output shapes``.
      layout_only: the op moves no data on a real device (reshape, split, ...) and
        costs zero, as in TASO.
      elementwise: output element i depends only on input element i (after broadcast).
    """

    name: str
    arity: tuple[int, int | None]
    infer: Callable[[Sequence[Shape], Mapping[str, Any]], list[Shape]]
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    required: tuple[str, ...] = ()
    layout_only: bool = False
    elementwise: bool = False


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ShapeError(msg)


def _norm_axis(axis: int, rank: int) -> int:
    _check(-rank <= axis < rank, f"axis {axis} out of range for rank {rank}")
    return axis % rank


def conv_out_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int = 1) -> int:
    """Output length of a convolution/pool window along one axis."""
    eff = (k - 1) * dilation + 1
    return (size + pad_lo + pad_hi - eff) // stride + 1


def same_pads(size: int, k: int, stride: int) -> tuple[int, int]:
    """TASO/TensorFlow SAME padding (lo, hi) for one axis; output = ceil(size/stride)."""
    if size % stride == 0:
        total = max(k - stride, 0)
    else:
        total = max(k - size % stride, 0)
    return total // 2, total - total // 2


# ----------------------------------------------------------------------------- inference


def _infer_source(shapes, attrs):
    return [tuple(attrs["shape"])]


def _infer_conv2d(shapes, attrs):
    x, w = shapes[0], shapes[1]
    _check(len(x) == 4, f"conv2d input must be 4-D NCHW, got {x}")
    _check(len(w) == 4, f"conv2d weight must be 4-D [O, C/groups, kH, kW], got {w}")
    g = attrs["groups"]
    _check(g >= 1 and x[1] % g == 0, f"groups={g} does not divide input channels {x[1]}")
    _check(w[1] * g == x[1], f"weight {w} with groups={g} does not match input channels {x[1]}")
    _check(w[0] % g == 0, f"groups={g} does not divide output channels {w[0]}")
    if len(shapes) == 3:
        _check(shapes[2] == (w[0],), f"conv2d bias must have shape ({w[0]},), got {shapes[2]}")
    sh, sw = attrs["strides"]
    pt, pl, pb, pr = attrs["pads"]
    dh, dw = attrs["dilations"]
    _check(min(sh, sw, dh, dw) >= 1 and min(pt, pl, pb, pr) >= 0, "bad strides/pads/dilations")
    _check(attrs["activation"] in ACTIVATIONS, f"unknown activation {attrs['activation']!r}")
    ho = conv_out_size(x[2], w[2], sh, pt, pb, dh)
    wo = conv_out_size(x[3], w[3], sw, pl, pr, dw)
    _check(ho >= 1 and wo >= 1, f"kernel {w[2:]} larger than padded input {x[2:]}")
    return [(x[0], w[0], ho, wo)]


def _infer_pool(shapes, attrs):
    x = shapes[0]
    _check(len(x) == 4, f"pool input must be 4-D NCHW, got {x}")
    kh, kw = attrs["kernel"]
    sh, sw = attrs["strides"]
    pt, pl, pb, pr = attrs["pads"]
    _check(pt < kh and pb < kh and pl < kw and pr < kw, "pool padding must be smaller than the kernel")
    _check(attrs["activation"] in ACTIVATIONS, f"unknown activation {attrs['activation']!r}")
    ho = conv_out_size(x[2], kh, sh, pt, pb)
    wo = conv_out_size(x[3], kw, sw, pl, pr)
    _check(ho >= 1 and wo >= 1, f"kernel {(kh, kw)} larger than padded input {x[2:]}")
    return [(x[0], x[1], ho, wo)]


def _infer_global_pool(shapes, attrs):
    x = shapes[0]
    _check(len(x) == 4, f"global pool input must be 4-D NCHW, got {x}")
    return [(x[0], x[1], 1, 1)]


def _batch_broadcast(a: Shape, b: Shape) -> Shape:
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        _check(da == db or da == 1 or db == 1, f"cannot broadcast {a} with {b}")
        out.append(max(da, db))
    return tuple(reversed(out))


def _infer_matmul(shapes, attrs):
    a, b = shapes
    _check(len(a) >= 2 and len(b) >= 2, f"matmul operands must be at least 2-D, got {a} and {b}")
    _check(a[-1] == b[-2], f"matmul inner dimensions differ: {a} x {b}")
    _check(attrs["activation"] in ACTIVATIONS, f"unknown activation {attrs['activation']!r}")
    return [_batch_broadcast(a[:-2], b[:-2]) + (a[-2], b[-1])]


def _infer_linear(shapes, attrs):
    x, w = shapes[0], shapes[1]
    _check(len(x) >= 1 and len(w) == 2, f"linear needs x [..., K] and w [K, N], got {x} and {w}")
    _check(x[-1] == w[0], f"linear: x {x} does not match weight {w}")
    if len(shapes) == 3:
        _check(shapes[2] == (w[1],), f"linear bias must have shape ({w[1]},), got {shapes[2]}")
    _check(attrs["activation"] in ACTIVATIONS, f"unknown activation {attrs['activation']!r}")
    return [tuple(x[:-1]) + (w[1],)]


def _infer_broadcast(shapes, attrs):
    out = shapes[0]
    for s in shapes[1:]:
        out = _batch_broadcast(out, s)
    return [out]


def _infer_unary(shapes, attrs):
    return [shapes[0]]


def _infer_batchnorm(shapes, attrs):
    x = shapes[0]
    _check(len(x) >= 2, f"batchnorm input must be at least 2-D, got {x}")
    for s in shapes[1:]:
        _check(s == (x[1],), f"batchnorm parameters must have shape ({x[1]},), got {s}")
    return [x]


def _infer_layernorm(shapes, attrs):
    x = shapes[0]
    _check(len(x) >= 1, "layernorm input must be at least 1-D")
    for s in shapes[1:]:
        _check(s == (x[-1],), f"layernorm parameters must have shape ({x[-1]},), got {s}")
    return [x]


def _infer_rmsnorm(shapes, attrs):
    x = shapes[0]
    _check(len(x) >= 1, "rmsnorm input must be at least 1-D")
    _check(shapes[1] == (x[-1],), f"rmsnorm scale must have shape ({x[-1]},), got {shapes[1]}")
    return [x]


def _infer_reduce_mean(shapes, attrs):
    x = shapes[0]
    axes = tuple(attrs["axes"])
    _check(len(axes) >= 1 and len(set(axes)) == len(axes) and all(0 <= a < len(x) for a in axes),
           f"reduce_mean axes {axes} must be distinct and in [0, {len(x)}) (normalized, non-negative)")
    if attrs["keepdims"]:
        return [tuple(1 if i in axes else d for i, d in enumerate(x))]
    return [tuple(d for i, d in enumerate(x) if i not in axes)]


def _infer_gather(shapes, attrs):
    data, idx = shapes
    _check(len(data) >= 1, "gather data must be at least 1-D")
    axis = _norm_axis(attrs["axis"], len(data))
    return [tuple(data[:axis]) + tuple(idx) + tuple(data[axis + 1:])]


def _infer_pow(shapes, attrs):
    _check(math.isfinite(attrs["exponent"]), f"pow exponent must be finite, got {attrs['exponent']}")
    return [shapes[0]]


def _infer_concat(shapes, attrs):
    rank = len(shapes[0])
    axis = _norm_axis(attrs["axis"], rank)
    total = 0
    for s in shapes:
        _check(len(s) == rank, f"concat inputs differ in rank: {shapes}")
        _check(all(s[d] == shapes[0][d] for d in range(rank) if d != axis),
               f"concat inputs differ outside axis {axis}: {shapes}")
        total += s[axis]
    out = list(shapes[0])
    out[axis] = total
    return [tuple(out)]


def _infer_split(shapes, attrs):
    x = shapes[0]
    axis = _norm_axis(attrs["axis"], len(x))
    sizes = attrs["sizes"]
    _check(len(sizes) >= 1 and all(s >= 1 for s in sizes), f"split sizes must be positive, got {sizes}")
    _check(sum(sizes) == x[axis], f"split sizes {sizes} do not sum to dim {x[axis]} of {x}")
    outs = []
    for s in sizes:
        o = list(x)
        o[axis] = s
        outs.append(tuple(o))
    return outs


def _infer_reshape(shapes, attrs):
    x = shapes[0]
    shape = tuple(attrs["shape"])
    _check(all(d >= 1 for d in shape), f"reshape target must be fully specified, got {shape}")
    _check(math.prod(shape) == math.prod(x), f"cannot reshape {x} ({math.prod(x)} elements) to {shape}")
    return [shape]


def _infer_transpose(shapes, attrs):
    x = shapes[0]
    perm = tuple(attrs["perm"])
    _check(sorted(perm) == list(range(len(x))), f"perm {perm} is not a permutation of rank {len(x)}")
    return [tuple(x[p] for p in perm)]


def _infer_softmax(shapes, attrs):
    _norm_axis(attrs["axis"], len(shapes[0]))
    return [shapes[0]]


def _infer_enlarge(shapes, attrs):
    w, ref = shapes
    _check(len(w) == 4 and len(ref) == 4, f"enlarge needs two 4-D kernels, got {w} and {ref}")
    _check(w[2] <= ref[2] and w[3] <= ref[3], f"enlarge: kernel {w} larger than reference {ref}")
    _check((ref[2] - w[2]) % 2 == 0 and (ref[3] - w[3]) % 2 == 0,
           f"enlarge: kernel {w[2:]} cannot be centred in {ref[2:]}")
    return [(w[0], w[1], ref[2], ref[3])]


def _infer_merge_gconv(shapes, attrs):
    w = shapes[0]
    c = attrs["count"]
    _check(len(w) == 4, f"merge_gconv needs a 4-D kernel, got {w}")
    _check(c >= 1, f"merge_gconv count must be >= 1, got {c}")
    g = attrs["groups"] or c
    _check(g % c == 0 and w[0] % g == 0, f"merge_gconv: count {c} / groups {g} do not divide {w[0]} channels")
    return [(w[0], w[1] * c, w[2], w[3])]


def _infer_opaque(shapes, attrs):
    outs = attrs["output_shapes"]
    _check(len(outs) >= 1, "opaque op needs at least one output shape")
    return [tuple(s) for s in outs]


# ----------------------------------------------------------------------------- registry

_ACT = {"activation": "none"}
_CONV = {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "groups": 1, "activation": "none"}
_POOL = {"strides": (1, 1), "pads": (0, 0, 0, 0), "activation": "none", "count_include_pad": False}

OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in [
        # dtype: the element type the source model declares (numpy name); the IR computes in
        # float, so integer inputs (token ids, masks) carry integral float values.
        OpSpec("input", (0, 0), _infer_source, {"init": "normal", "dtype": "float32"}, ("name", "shape"),
               layout_only=True),
        OpSpec("weight", (0, 0), _infer_source, {"init": "normal"}, ("name", "shape"), layout_only=True),
        OpSpec("conv2d", (2, 3), _infer_conv2d, _CONV),
        OpSpec("matmul", (2, 2), _infer_matmul, _ACT),
        OpSpec("linear", (2, 3), _infer_linear, _ACT),
        OpSpec("add", (2, 2), _infer_broadcast, elementwise=True),
        OpSpec("sub", (2, 2), _infer_broadcast, elementwise=True),
        OpSpec("mul", (2, 2), _infer_broadcast, elementwise=True),
        OpSpec("div", (2, 2), _infer_broadcast, elementwise=True),
        *[OpSpec(u, (1, 1), _infer_unary, elementwise=True) for u in ("relu", "sigmoid", "tanh", "gelu")],
        OpSpec("identity", (1, 1), _infer_unary, layout_only=True),
        OpSpec("batchnorm", (5, 5), _infer_batchnorm, {"epsilon": 1e-5}),
        OpSpec("layernorm", (3, 3), _infer_layernorm, {"epsilon": 1e-5}),
        OpSpec("maxpool", (1, 1), _infer_pool, _POOL, ("kernel",)),
        OpSpec("avgpool", (1, 1), _infer_pool, _POOL, ("kernel",)),
        OpSpec("global_avgpool", (1, 1), _infer_global_pool),
        OpSpec("concat", (1, None), _infer_concat, {}, ("axis",)),
        OpSpec("split", (1, 1), _infer_split, {}, ("axis", "sizes"), layout_only=True),
        OpSpec("reshape", (1, 1), _infer_reshape, {}, ("shape",), layout_only=True),
        OpSpec("transpose", (1, 1), _infer_transpose, {}, ("perm",)),
        OpSpec("softmax", (1, 1), _infer_softmax, {"axis": -1}),
        OpSpec("enlarge", (2, 2), _infer_enlarge),
        OpSpec("merge_gconv", (1, 1), _infer_merge_gconv, {"groups": 0}, ("count",)),
        OpSpec("opaque", (0, None), _infer_opaque, {"attributes": (), "onnx_node": b""},
               ("op_type", "output_shapes")),
        # Added later, after the original catalogue, so the index of every older op (the
        # one-hot op type of observations) is unchanged.
        *[OpSpec(u, (1, 1), _infer_unary, elementwise=True) for u in UNARY_OPS[4:]],
        OpSpec("pow", (1, 1), _infer_pow, {}, ("exponent",), elementwise=True),
        OpSpec("rmsnorm", (2, 2), _infer_rmsnorm, {"epsilon": 1e-6}),
        OpSpec("reduce_mean", (1, 1), _infer_reduce_mean, {"keepdims": True}, ("axes",)),
        # gather(data, indices): ONNX Gather; indices carry integral values (negative ones
        # count from the end); a 0-d index removes the axis (class-token select).
        OpSpec("gather", (2, 2), _infer_gather, {"axis": 0}),
    ]
}

SOURCE_OPS = ("input", "weight")


def _freeze(value: Any) -> Any:
    """Turn lists (also nested) into tuples so attribute values are hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalar
        return value.item()
    return value


def normalize_attrs(op: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults, freeze values and reject unknown or missing attributes.

    Raises ShapeError naming the attribute.
    """
    spec = OPS.get(op)
    if spec is None:
        raise ShapeError(f"unknown op type {op!r} (known: {', '.join(sorted(OPS))})")
    out = dict(spec.defaults)
    for k, v in attrs.items():
        if k not in spec.defaults and k not in spec.required:
            raise ShapeError(f"op {op!r} has no attribute {k!r}")
        out[k] = _freeze(v)
    missing = [k for k in spec.required if k not in out]
    if missing:
        raise ShapeError(f"op {op!r} is missing attribute(s) {', '.join(missing)}")
    return out


def infer_shapes(op: str, input_shapes: Sequence[Shape], attrs: Mapping[str, Any]) -> list[Shape]:
    """Output shapes of ``op`` for the given (normalized) attributes; raises ShapeError."""
    spec = OPS[op]
    lo, hi = spec.arity
    n = len(input_shapes)
    if n < lo or (hi is not None and n > hi):
        want = f"{lo}" if lo == hi else f"{lo}..{'' if hi is None else hi}"
        raise ShapeError(f"op {op!r} takes {want} inputs, got {n}")
    return [tuple(int(d) for d in s) for s in spec.infer(input_shapes, attrs)]
