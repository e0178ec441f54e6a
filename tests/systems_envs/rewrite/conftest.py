"""Shared fixtures of the rewrite tests."""
import pytest


@pytest.fixture
def real_library():
    """``(rules, build_graph)``: the project's builtin rules (for speed) and the built-in graph
    constructor; the test is skipped when either is not available yet."""
    try:
        from systems_envs.graph.models import build_graph
        from systems_envs.rewrite.rules import builtin_rules
    except ImportError:
        pytest.skip("rule library or built-in graphs not available yet")
    return list(builtin_rules()), build_graph
