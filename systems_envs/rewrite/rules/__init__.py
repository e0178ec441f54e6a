"""The hand-written rewrite-rule library, one module per family.

``builtin_rules()`` returns a fresh list of every rule (unique names). Each rule's
``match_at`` returns only applicable matches and ``apply`` preserves what the graph
computes (``tests/systems_envs/rewrite/test_rules.py`` checks every rule with the NumPy
executor in float64).

Commutativity of add/mul is handled at matching time (rules try both operand orders),
not as a rule of its own, so the rule set has no trivial ``a+b <-> b+a`` loop.

Reachability (cycle) conditions of the sibling-merge rules are checked over the whole
graph, not only within ``radius`` of the anchor.
"""
from __future__ import annotations

from systems_envs.rewrite.rule import Rule


def builtin_rules() -> list[Rule]:
    """All hand-written rules, grouped by family, in a fixed order."""
    from systems_envs.rewrite.rules import (concat_split, elementwise, enlarge, fusion, group_conv, matmul,
                                            merge_conv, merge_matmul, reshape, transpose)

    rules: list[Rule] = []
    for mod in (elementwise, matmul, merge_matmul, merge_conv, fusion, concat_split, enlarge, group_conv, transpose,
                reshape):
        rules.extend(mod.RULES)
    names = [r.name for r in rules]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"builtin_rules: duplicate rule names {sorted(dup)}")
    return rules


__all__ = ["builtin_rules"]
