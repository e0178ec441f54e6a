"""Small layer helpers shared by the built-in graph builders.

A :class:`Net` wraps a :class:`~systems_envs.graph.ir.Graph` and adds weights with
unique, readable names (``<scope>.<param>``), so the executor's name-seeded weight fill
is stable across rebuilds. Tensors are node ids (output 0) or ``(node, index)`` refs.
Images are NCHW; weights of convolutions are ``[O, C/groups, kH, kW]``; weights of
matmuls are ``[K, N]`` (``x @ w``).

Weight fills (see :func:`systems_envs.graph.executor.source_value`): conv/matmul kernels
"normal" (N(0, 1/fan_in)); batchnorm scale and variance, layernorm gain "positive"
(U[0.5, 1.5]); biases, batchnorm mean and layernorm shift "normal".
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from systems_envs.graph.ir import Graph, TensorRef

Tensor = int | TensorRef


class Net:
    """A graph under construction plus naming and layer helpers."""

    def __init__(self, name: str):
        self.g = Graph(name)

    # ------------------------------------------------------------------ sources
    def input(self, name: str, shape: Sequence[int]) -> int:
        return self.g.input(name, shape)

    def weight(self, name: str, shape: Sequence[int], init: str = "normal", value=None) -> int:
        return self.g.weight(name, shape, init=init, value=value)

    def const(self, name: str, value: float) -> int:
        """A 1-element weight with a known value (e.g. an attention scale)."""
        return self.g.weight(name, (1,), value=np.array([value], np.float32))

    def shape(self, t: Tensor) -> tuple[int, ...]:
        return self.g.shape(t)

    # ------------------------------------------------------------------ conv nets
    def conv(self, name: str, x: Tensor, out_ch: int, k: int | tuple[int, int], stride: int = 1,
             pad: int | tuple[int, int] | str | None = None, groups: int = 1, act: str = "none",
             bias: bool = False) -> int:
        """2-D convolution. ``pad``: an int or (pH, pW) applied on both sides, default
        ``k // 2`` (PyTorch style), or ``"same"`` for TensorFlow/TASO SAME padding
        (output = ceil(H / stride), extra pad row/column at the bottom/right)."""
        kh, kw = (k, k) if isinstance(k, int) else k
        cin, h, w = (self.shape(x)[i] for i in (1, 2, 3))
        if pad == "same":
            from systems_envs.graph.ops import same_pads

            (pt, pb), (pl, pr) = same_pads(h, kh, stride), same_pads(w, kw, stride)
            pads = (pt, pl, pb, pr)
        else:
            if pad is None:
                pad = (kh // 2, kw // 2)
            ph, pw = (pad, pad) if isinstance(pad, int) else pad
            pads = (ph, pw, ph, pw)
        ins = [x, self.weight(f"{name}.w", (out_ch, cin // groups, kh, kw))]
        if bias:
            ins.append(self.weight(f"{name}.b", (out_ch,)))
        return self.g.add("conv2d", ins, strides=(stride, stride), pads=pads, groups=groups, activation=act)

    def batchnorm(self, name: str, x: Tensor, epsilon: float = 1e-5) -> int:
        c = self.shape(x)[1]
        w = [self.weight(f"{name}.{p}", (c,), init=i) for p, i in
             (("scale", "positive"), ("bias", "normal"), ("mean", "normal"), ("var", "positive"))]
        return self.g.add("batchnorm", [x, *w], epsilon=epsilon)

    def conv_bn(self, name: str, x: Tensor, out_ch: int, k, stride: int = 1, pad=None, groups: int = 1,
                relu: bool = True, epsilon: float = 1e-5) -> int:
        """conv (no bias) -> batchnorm -> optional relu: 2 or 3 ops."""
        y = self.batchnorm(f"{name}.bn", self.conv(name, x, out_ch, k, stride, pad, groups), epsilon)
        return self.relu(y) if relu else y

    def pool(self, op: str, x: Tensor, k: int, stride: int, pad: int = 0) -> int:
        return self.g.add(op, [x], kernel=(k, k), strides=(stride, stride), pads=(pad,) * 4)

    def same_pool(self, op: str, x: Tensor, k: int, stride: int) -> int:
        """Pool with TensorFlow/TASO SAME padding (output = ceil(H / stride))."""
        from systems_envs.graph.ops import same_pads

        h, w = self.shape(x)[2:]
        (pt, pb), (pl, pr) = same_pads(h, k, stride), same_pads(w, k, stride)
        return self.g.add(op, [x], kernel=(k, k), strides=(stride, stride), pads=(pt, pl, pb, pr))

    def classifier(self, name: str, x: Tensor, classes: int = 1000) -> int:
        """global_avgpool -> reshape [N, C] -> linear with bias: 3 ops."""
        n, c = self.shape(x)[:2]
        t = self.g.add("reshape", [self.g.add("global_avgpool", [x])], shape=(n, c))
        return self.linear(name, t, classes)

    # ------------------------------------------------------------------ dense / sequence
    def matmul(self, name: str, x: Tensor, out: int, act: str = "none") -> int:
        """``x @ w`` with a fresh weight ``[K, out]`` (no bias)."""
        w = self.weight(f"{name}.w", (self.shape(x)[-1], out))
        return self.g.add("matmul", [x, w], activation=act)

    def linear(self, name: str, x: Tensor, out: int, act: str = "none") -> int:
        """``x @ w + b`` as one ``linear`` op."""
        w = self.weight(f"{name}.w", (self.shape(x)[-1], out))
        b = self.weight(f"{name}.b", (out,))
        return self.g.add("linear", [x, w, b], activation=act)

    def layernorm(self, name: str, x: Tensor, epsilon: float = 1e-5) -> int:
        d = self.shape(x)[-1]
        gamma = self.weight(f"{name}.gamma", (d,), init="positive")
        beta = self.weight(f"{name}.beta", (d,))
        return self.g.add("layernorm", [x, gamma, beta], epsilon=epsilon)

    def op(self, op: str, *inputs: Tensor, **attrs) -> int:
        return self.g.add(op, list(inputs), **attrs)

    def relu(self, x: Tensor) -> int:
        return self.g.add("relu", [x])

    def add(self, a: Tensor, b: Tensor) -> int:
        return self.g.add("add", [a, b])

    def mul(self, a: Tensor, b: Tensor) -> int:
        return self.g.add("mul", [a, b])

    def concat(self, axis: int, xs: Sequence[Tensor]) -> int:
        return self.g.add("concat", list(xs), axis=axis)

    def done(self, *outputs: Tensor) -> Graph:
        """Set the outputs, validate and return the graph."""
        self.g.set_outputs(outputs)
        self.g.validate()
        return self.g
