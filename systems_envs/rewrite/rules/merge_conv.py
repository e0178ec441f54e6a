"""Family ``merge_conv``: one wider convolution instead of two.

* ``merge_conv_shared_input``: ``{conv(x, w1), conv(x, w2)} -> split(conv(x, [w1; w2]), axis=1)``:
  same kernel size, strides, pads, dilations, groups = 1, same activation, biases both or neither.
* ``merge_conv_sum``: ``conv(x1, w1) + conv(x2, w2) -> conv([x1|x2], [w1|w2])`` with input
  channels concatenated (axis 1 of both); groups = 1, no activation; biases are summed.
"""
from __future__ import annotations

from systems_envs.graph.ir import Graph
from systems_envs.rewrite.rule import Match
from systems_envs.rewrite.rules.helpers import (BaseRule, concat, consumers, conv_attrs, infer, merge_is_acyclic,
                                                producer, replace, same_conv_geometry, single_use)
from systems_envs.rewrite.rules.merge_matmul import _split_outputs


class MergeConvShared(BaseRule):
    name = "merge_conv_shared_input"
    family = "merge_conv"
    anchor_ops = frozenset({"conv2d"})

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        c1 = g.nodes[nid]
        if c1.op != "conv2d" or c1.attrs["groups"] != 1:
            return []
        out = []
        for c2 in consumers(g, c1.inputs[0], "conv2d", 0):
            if (c2.id > nid and same_conv_geometry(g, c1, c2) and len(c1.inputs) == len(c2.inputs)
                    and c2.attrs["activation"] == c1.attrs["activation"] and merge_is_acyclic(g, c1, c2)):
                out.append(self.m((nid, c2.id)))
        return out

    def apply(self, g: Graph, match: Match) -> set[int]:
        c1, c2 = (g.nodes[i] for i in match.nodes)
        cats = [concat(g, [c1.inputs[i], c2.inputs[i]], 0) for i in range(1, len(c1.inputs))]  # weight[, bias]
        r = g.add("conv2d", [c1.inputs[0], *cats], **conv_attrs(c1))
        return set(cats) | {r} | _split_outputs(g, r, 1, [c1.id, c2.id])


class MergeConvSum(BaseRule):
    name = "merge_conv_sum"
    family = "merge_conv"
    anchor_ops = frozenset({"add"})

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        n = g.nodes[nid]
        if n.op != "add":
            return []
        c1, c2 = (producer(g, r, "conv2d") for r in n.inputs)
        if c1 is None or c2 is None or c1.id == c2.id or not (c1.shape == c2.shape == n.shape):
            return []
        if any(c.attrs["activation"] != "none" or c.attrs["groups"] != 1 or not single_use(g, c.id) for c in (c1, c2)):
            return []
        if not same_conv_geometry(g, c1, c2):
            return []
        xc = infer("concat", [g.shape(c1.inputs[0]), g.shape(c2.inputs[0])], axis=1)
        return [self.m((nid, c1.id, c2.id))] if xc is not None else []

    def apply(self, g: Graph, match: Match) -> set[int]:
        nid, c1, c2 = (g.nodes[i] for i in match.nodes)
        xc = concat(g, [c1.inputs[0], c2.inputs[0]], 1)
        wc = concat(g, [c1.inputs[1], c2.inputs[1]], 1)
        added = {xc, wc}
        biases = [c.inputs[2] for c in (c1, c2) if len(c.inputs) == 3]
        if len(biases) == 2:
            biases = [(g.add("add", biases), 0)]
            added.add(biases[0][0])
        r = g.add("conv2d", [xc, wc, *biases], **conv_attrs(c1))
        return added | {r} | replace(g, (nid.id, 0), (r, 0))


RULES = [MergeConvShared(), MergeConvSum()]
