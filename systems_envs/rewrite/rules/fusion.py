"""Family ``fusion``: fold a following operator into a conv2d / matmul / linear.

* ``fuse_{conv,matmul,linear}_{relu,sigmoid,tanh,relu6,hardsigmoid,hardswish,gelu,gelu_tanh}``:
  ``act(op(...)) -> op(..., activation=act)`` when ``op`` has no activation and its output
  has no other use; also through a single-use reshape: ``act(reshape(op)) -> reshape(op + act)``. (Exported back as the op followed by the activation: onnxruntime fuses
  Conv with relu/sigmoid/tanh/relu6/hardsigmoid and MatMul+bias with GELU itself, so on
  that runtime these are no gain; on a GPU they are kernel epilogues.)
* ``fold_matmul_bias``: ``matmul(x, w) + b`` (2-D ``w``, constant ``b`` of ``N`` values along the
  last axis) -> ``linear(x, w, b)``.
* ``fold_conv_scale``: ``conv(x, w[, b]) * s`` with a constant per-channel ``s`` of shape
  ``[1, O, 1, 1]`` or ``[O, 1, 1]`` -> ``conv(x, w * s[O,1,1,1][, b * s[O]])``.
* ``fuse_conv_batchnorm``: ``batchnorm(conv(x, w[, b]), gamma, beta, mean, var)`` with constant
  parameters -> ``conv(x, w', b')``, ``w' = w * gamma / sqrt(var + eps)`` and
  ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``. Both are built from graph ops on
  the (constant) weights, using batchnorm itself on reshaped weights, so the folded
  graph is exact, needs no new sources and exports to ONNX.
"""
from __future__ import annotations

import math

from systems_envs.graph.ir import Graph
from systems_envs.rewrite.rule import Match
from systems_envs.rewrite.rules.helpers import BaseRule, conv_attrs, producer, replace, single_use

_OP_NAMES = {"conv2d": "conv", "matmul": "matmul", "linear": "linear"}


class FuseActivation(BaseRule):
    family = "fusion"
    radius = 2

    def __init__(self, op: str, act: str):
        self.op, self.act = op, act
        self.anchor_ops = frozenset({act})
        self.name = f"fuse_{_OP_NAMES[op]}_{act}"

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != self.act:
            return []
        rs = producer(g, n.inputs[0], "reshape")  # an element-wise act commutes with a reshape
        if rs is not None and not single_use(g, rs.id):
            return []
        p = producer(g, (rs.inputs[0] if rs is not None else n.inputs[0]), self.op)
        if p is None or p.attrs["activation"] != "none" or not single_use(g, p.id):
            return []
        return [self.m((nid, p.id) if rs is None else (nid, p.id, rs.id))]

    def apply(self, g: Graph, match: Match) -> set[int]:
        nid, pid = match.nodes[:2]
        p = g.nodes[pid]
        r = g.add(self.op, p.inputs, **{**p.attrs, "activation": self.act})
        added = {r}
        if len(match.nodes) == 3:
            r = g.add("reshape", [r], shape=g.nodes[match.nodes[2]].attrs["shape"])
            added.add(r)
        return added | replace(g, (nid, 0), (r, 0))


class FoldMatmulBias(BaseRule):
    """``matmul(x, w) + b`` with a 2-D ``w`` and a constant ``b`` broadcast along the last axis only
    -> ``linear(x, w, b)`` (how exporters write ``nn.Linear`` on inputs of rank > 2)."""

    name = "fold_matmul_bias"
    family = "fusion"
    anchor_ops = frozenset({"add"})
    radius = 1

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != "add":
            return []
        out = []
        for slot in (0, 1):
            m = producer(g, n.inputs[slot], "matmul")
            b = n.inputs[1 - slot]
            if m is None or m.attrs["activation"] != "none" or not single_use(g, m.id) or b == n.inputs[slot]:
                continue
            w = g.shape(m.inputs[1])
            bs = g.shape(b)
            if len(w) == 2 and len(bs) <= len(m.shape) and math.prod(bs) == w[1] and bs[-1:] == (w[1],) \
                    and n.shape == m.shape and g.is_constant(b[0]):
                out.append(self.m((nid, m.id), slot))
        return out

    def apply(self, g: Graph, match: Match) -> set[int]:
        nid, mid = match.nodes
        m = g.nodes[mid]
        b = g.nodes[nid].inputs[1 - match.data]
        bv = g.add("reshape", [b], shape=(g.shape(m.inputs[1])[1],))
        r = g.add("linear", [m.inputs[0], m.inputs[1], bv])
        return {bv, r} | replace(g, (nid, 0), (r, 0))


def _conv_under(g: Graph, ref) -> object:
    """The conv2d producing ``ref`` if it has no activation and no other use, else None."""
    c = producer(g, ref, "conv2d")
    if c is None or c.attrs["activation"] != "none" or not single_use(g, c.id):
        return None
    return c


class FoldConvScale(BaseRule):
    name = "fold_conv_scale"
    family = "fusion"
    anchor_ops = frozenset({"mul"})
    radius = 1

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != "mul":
            return []
        out = []
        for slot in (0, 1):
            c = _conv_under(g, n.inputs[slot])
            s = n.inputs[1 - slot]
            if c is None or s == n.inputs[slot]:
                continue
            o = c.shape[1]
            if g.shape(s) in ((1, o, 1, 1), (o, 1, 1)) and g.is_constant(s[0]):
                out.append(self.m((nid, c.id), slot))
        return out

    def apply(self, g: Graph, match: Match) -> set[int]:
        nid, cid = match.nodes
        c = g.nodes[cid]
        s = g.nodes[nid].inputs[1 - match.data]
        o = c.shape[1]
        sw = g.add("reshape", [s], shape=(o, 1, 1, 1))
        w = g.add("mul", [c.inputs[1], sw])
        added = {sw, w}
        ins = [c.inputs[0], w]
        if len(c.inputs) == 3:
            sv = g.add("reshape", [s], shape=(o,))
            b = g.add("mul", [c.inputs[2], sv])
            added |= {sv, b}
            ins.append(b)
        r = g.add("conv2d", ins, **conv_attrs(c))
        return added | {r} | replace(g, (nid, 0), (r, 0))


class FuseConvBatchnorm(BaseRule):
    name = "fuse_conv_batchnorm"
    family = "fusion"
    anchor_ops = frozenset({"batchnorm"})
    radius = 1

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != "batchnorm" or len(n.shape) != 4:
            return []
        c = _conv_under(g, n.inputs[0])
        if c is None or not all(g.is_constant(r[0]) for r in n.inputs[1:]):
            return []
        return [self.m((nid, c.id))]

    def apply(self, g: Graph, match: Match) -> set[int]:
        nid, cid = match.nodes
        n, c = g.nodes[nid], g.nodes[cid]
        gamma, beta, mean, var = n.inputs[1:]
        eps = n.attrs["epsilon"]
        w = c.inputs[1]
        wshape = g.shape(w)
        o = wshape[0]
        zero = g.add("sub", [mean, mean])  # exact zeros of shape [O]
        # w * gamma / sqrt(var + eps): batchnorm over the output-channel axis of w viewed as [1, O, rest]
        wr = g.add("reshape", [w], shape=(1, o, math.prod(wshape[1:])))
        ws = g.add("batchnorm", [wr, gamma, zero, zero, var], epsilon=eps)
        w2 = g.add("reshape", [ws], shape=wshape)
        # (b - mean) * gamma / sqrt(var + eps) + beta, with b = 0 for a conv without bias
        br = g.add("reshape", [c.inputs[2] if len(c.inputs) == 3 else zero], shape=(1, o))
        bs = g.add("batchnorm", [br, gamma, beta, mean, var], epsilon=eps)
        b2 = g.add("reshape", [bs], shape=(o,))
        r = g.add("conv2d", [c.inputs[0], w2, b2], **conv_attrs(c))
        return {zero, wr, ws, w2, br, bs, b2, r} | replace(g, (nid, 0), (r, 0))


RULES = ([FuseActivation(op, act) for op in ("conv2d", "matmul", "linear")
          for act in ("relu", "sigmoid", "tanh", "relu6", "hardsigmoid", "hardswish", "gelu", "gelu_tanh")]
         + [FoldMatmulBias(), FoldConvScale(), FuseConvBatchnorm()])
