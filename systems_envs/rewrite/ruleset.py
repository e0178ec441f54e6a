"""The default rule set: hand-written rules plus the verified TASO rules, with stable ids.

A rule's integer id is its index in :func:`default_rules`; environments report it in
observations (``candidate_rule``) and world models embed it, so the order is fixed:
the hand-written library first (in ``builtin_rules()`` order), then the imported TASO
rules (in file order).

TASO pattern rules get an ``anchor_ops`` hint (see :func:`_with_anchor_ops`) so the
incremental matcher skips nodes of other op types.
"""
from __future__ import annotations

from systems_envs.rewrite.rule import Rule


def check_rules(rules: list[Rule]) -> list[Rule]:
    """Raise ValueError if two rules share a name (names key matches and reports)."""
    seen: dict[str, int] = {}
    for i, r in enumerate(rules):
        if not isinstance(r, Rule):
            raise ValueError(f"rule {i} ({r!r}) is not a systems_envs.rewrite.rule.Rule")
        if r.name in seen:
            raise ValueError(f"rule name {r.name!r} is used by rules {seen[r.name]} and {i}")
        seen[r.name] = i
    return rules


def default_rules(taso: bool = True, disconnected: bool = False) -> list[Rule]:
    """``builtin_rules()`` followed (if ``taso``) by ``load_taso_rules(verified_only=True)``.

    TASO rules whose source pattern has two unconnected roots (``rule.disconnected``) are
    left out unless ``disconnected``: their matches pair nodes anywhere in the graph, so
    they must be re-matched globally after every rewrite (quadratic; seconds per step on
    inception_v3). Rule id = index in the returned list.
    """
    from systems_envs.rewrite.rules import builtin_rules

    rules = list(builtin_rules())
    if taso:
        from systems_envs.rewrite.taso_rules import load_taso_rules

        rules += [r for r in load_taso_rules(verified_only=True)
                  if disconnected or not getattr(r, "disconnected", False)]
    return check_rules([_with_anchor_ops(r) for r in rules])


def _with_anchor_ops(rule: Rule) -> Rule:
    """Give a TASO pattern rule an ``anchor_ops`` hint (the IR op of its root) if it lacks one.

    ``CandidateIndex`` then tries the rule only at nodes of that op: matching is anchored at
    the node playing the pattern's first mapped source op, whose op type must match.
    """
    if getattr(rule, "anchor_ops", None) is not None:
        return rule
    from systems_envs.rewrite import pattern

    spec = getattr(rule, "spec", None)
    ir_ops = getattr(pattern, "_IR_OP", None)
    if isinstance(rule, pattern.PatternRule) and spec is not None and ir_ops is not None:
        root = spec.src[spec.mapped[0][0]]
        if root.type in ir_ops:
            rule.anchor_ops = frozenset({ir_ops[root.type]})
    return rule
