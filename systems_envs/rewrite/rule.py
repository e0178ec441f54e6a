"""The rewrite-rule interface shared by hand-written rules and imported TASO rules.

A rule finds *matches* anchored at a node (the root of its source pattern, i.e. the
operator whose output the rewrite replaces; for multi-output rules, the first root) and
applies a match by mutating a graph in place. Rewrites must preserve what the graph
computes on every input (tests check this with the reference executor).

Candidates are kept up to date incrementally: after a rewrite, only anchors within
``radius`` edges of the touched nodes are re-matched (see ``systems_envs.rewrite.candidates``).
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Hashable

from systems_envs.graph.ir import Graph


@dataclasses.dataclass(frozen=True)
class Match:
    """One applicable rewrite.

    Attributes:
      rule: the rule's name (unique in a rule set).
      nodes: node ids the match binds, anchor first; the "location" reported to users.
      data: rule-specific hashable bindings needed by ``apply`` (e.g. which slot).
    """

    rule: str
    nodes: tuple[int, ...]
    data: Hashable = ()


class Rule(abc.ABC):
    """A semantics-preserving graph substitution.

    Attributes:
      name: unique name, e.g. ``"fuse_conv_relu"`` or ``"taso_017"``.
      family: one of the families of the rule library (``"elementwise"``, ``"matmul"``,
        ``"merge_matmul"``, ``"merge_conv"``, ``"fusion"``, ``"concat_split"``,
        ``"enlarge"``, ``"group_conv"``, ``"transpose"``, ``"reshape"``, ``"taso"``).
      radius: how many edges from the anchor the pattern reaches (up or down); used to
        re-match only near a change.
    """

    name: str
    family: str
    radius: int = 2

    @abc.abstractmethod
    def match_at(self, graph: Graph, nid: int) -> list[Match]:
        """All matches of this rule anchored at node ``nid`` (empty if none)."""

    @abc.abstractmethod
    def apply(self, graph: Graph, match: Match) -> set[int]:
        """Apply ``match`` to ``graph`` in place; return the ids of nodes added or changed.

        The replaced nodes are left dead (unused); the caller prunes them. Must not be
        called with a stale match (one whose nodes changed since matching).
        """

    def __repr__(self) -> str:
        return f"<Rule {self.name} ({self.family})>"
