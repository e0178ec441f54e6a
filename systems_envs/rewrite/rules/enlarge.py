"""Family ``enlarge``: grow a conv kernel so it can merge with a larger sibling.

``enlarge_conv_kernel``: ``conv(x, w)`` with a kh x kw kernel, next to a sibling conv on the
same input with a KH x KW kernel (KH >= kh, KW >= kw, differences even), the same strides
and dilation 1, becomes ``conv(x, enlarge(w, w_sibling))`` with pads grown by
``(KH-kh)/2`` and ``(KW-kw)/2`` on each side: the zero border of the kernel lines up with
the extra padding, so output shape and values are unchanged. The rule only fires when the
grown pads equal the sibling's pads, i.e. when it makes ``merge_conv_shared_input`` possible.
"""
from __future__ import annotations

from systems_envs.graph.ir import Graph
from systems_envs.rewrite.rule import Match
from systems_envs.rewrite.rules.helpers import BaseRule, consumers, conv_attrs, reaches, replace


def _grown_pads(g: Graph, c, s) -> tuple | None:
    """Pads of ``c`` once its kernel is enlarged to the kernel of ``s`` (None if not applicable)."""
    (kh, kw), (KH, KW) = g.shape(c.inputs[1])[2:], g.shape(s.inputs[1])[2:]
    dh, dw = KH - kh, KW - kw
    if dh < 0 or dw < 0 or dh % 2 or dw % 2 or (dh, dw) == (0, 0):
        return None
    dh, dw = dh // 2, dw // 2
    pt, pl, pb, pr = c.attrs["pads"]
    return (pt + dh, pl + dw, pb + dh, pr + dw)


class EnlargeConvKernel(BaseRule):
    name = "enlarge_conv_kernel"
    family = "enlarge"
    anchor_ops = frozenset({"conv2d"})

    def match_at(self, g: Graph, nid: int) -> list[Match]:
        c = g.nodes[nid]
        if c.op != "conv2d" or c.attrs["dilations"] != (1, 1):
            return []
        out, seen = [], set()
        for s in consumers(g, c.inputs[0], "conv2d", 0):
            if s.id == nid or s.attrs["dilations"] != (1, 1) or s.attrs["strides"] != c.attrs["strides"]:
                continue
            pads = _grown_pads(g, c, s)
            key = g.shape(s.inputs[1])[2:]
            if pads is None or pads != s.attrs["pads"] or key in seen:
                continue
            if not reaches(g, nid, [s.inputs[1][0]]):  # the new conv reads the sibling's weight
                seen.add(key)
                out.append(self.m((nid, s.id)))
        return out

    def apply(self, g: Graph, match: Match) -> set[int]:
        c, s = (g.nodes[i] for i in match.nodes)
        w = g.add("enlarge", [c.inputs[1], s.inputs[1]])
        r = g.add("conv2d", [c.inputs[0], w, *c.inputs[2:]], **conv_attrs(c, pads=_grown_pads(g, c, s)))
        return {w, r} | replace(g, (c.id, 0), (r, 0))


RULES = [EnlargeConvKernel()]
