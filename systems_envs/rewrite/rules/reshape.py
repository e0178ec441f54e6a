"""Family ``reshape``: reshapes that only serve a ``linear`` layer.

``linear_through_reshape``: ``reshape(linear(reshape(x, (M, K)), w[, b]), x.shape[:-1] + (N,))
-> linear(x, w[, b])`` for ``x`` of rank >= 3 with ``M = prod(x.shape[:-1])``: a linear layer
acts on the last axis only, so flattening the leading axes before it and restoring them after
it changes nothing. Exporters write ``nn.Linear`` on a 3-D input this way (GPT-2's
``Conv1D``: Reshape -> Gemm -> Reshape); the result is written as one MatMul [+ Add], which
onnxruntime runs without the two reshape kernels (measured on the zoo GPT-2 in the README).
The activation of the linear is kept; the inner linear must have no other use.
"""
from __future__ import annotations

import math

from systems_envs.graph.ir import Graph
from systems_envs.rewrite.rule import Match
from systems_envs.rewrite.rules.helpers import BaseRule, producer, replace, single_use


class LinearThroughReshape(BaseRule):
    name = "linear_through_reshape"
    family = "reshape"
    anchor_ops = frozenset({"reshape"})
    radius = 2

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        out = g.nodes[nid]
        if out.op != "reshape":
            return []
        lin = producer(g, out.inputs[0], "linear")
        if lin is None or not single_use(g, lin.id):
            return []
        flat = producer(g, lin.inputs[0], "reshape")
        if flat is None:
            return []
        x = g.shape(flat.inputs[0])
        if len(x) < 3 or flat.shape != (math.prod(x[:-1]), x[-1]):
            return []
        if out.shape != tuple(x[:-1]) + (lin.shape[-1],):
            return []
        return [self.m((nid, lin.id, flat.id))]

    def apply(self, g: Graph, match: Match) -> set[int]:
        out, lin, flat = (g.nodes[i] for i in match.nodes)
        r = g.add("linear", [flat.inputs[0], *lin.inputs[1:]], activation=lin.attrs["activation"])
        return {r} | replace(g, (out.id, 0), (r, 0))


RULES = [LinearThroughReshape()]
