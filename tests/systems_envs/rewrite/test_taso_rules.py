"""TASO's generated rules: loading (pb and Tensat text), verification, matching and applying."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from systems_envs.graph.executor import execute
from systems_envs.graph.ir import Graph, GraphError
from systems_envs.rewrite.pattern import (
    ACTI, CONCAT, EW_ADD, MATMUL, RELU, PatOp, PatternRule, PatternSpec, add_template, canonical,
)
from systems_envs.rewrite.taso_rules import (
    PB_PATH, load_pb_specs, load_taso_rules, load_text_specs, verification_report,
)
from systems_envs.rewrite.verify import INSTANTIATIONS, verify_rule

ALL = load_taso_rules(verified_only=False)
VERIFIED = load_taso_rules(verified_only=True)
EXPECTED_VERIFIED = 133


def test_counts_and_names():
    assert len(ALL) == 133
    assert [r.name for r in ALL] == [f"taso_{i:03d}" for i in range(133)]
    assert all(r.family == "taso" for r in ALL)
    assert sum(len(r.spec.mapped) == 2 for r in ALL) == 13
    ops = {}
    for r in ALL:
        for op in r.spec.src + r.spec.dst:
            ops[op.type] = ops.get(op.type, 0) + 1
    # FORMATS.md Part 3: CONV2D 106, RELU 39, CONCAT 182, SPLIT 10, EW_ADD 140, EW_MUL 134, MATMUL 144.
    assert ops == {3: 106, 8: 39, 12: 182, 13: 10, 16: 140, 17: 134, 18: 144}


def test_pb_and_text_give_the_same_rules():
    pb, text = load_pb_specs(), load_text_specs()
    assert len(text) == 133
    singles = [s for s in pb if len(s.mapped) == 1]
    multis = [s for s in pb if len(s.mapped) == 2]
    assert singles == text[:120]
    assert multis == text[120:]
    rules_text = load_taso_rules(verified_only=True, source="text")
    assert len(rules_text) == EXPECTED_VERIFIED


def test_verified_count_and_reasons():
    report = verification_report()
    assert len(report) == 133
    assert len(VERIFIED) == EXPECTED_VERIFIED == sum(v.ok for v in report.values())
    for name, res in report.items():
        assert res.reason, name
        if res.ok:
            assert res.checked >= 1 and res.max_err <= 1e-9
    # The 8 rules that use ?input_4/5 as 4-D weights verify only with re-assigned roles.
    assert sorted(n for n, v in report.items() if "with ?input_" in v.reason) == [
        "taso_092", "taso_093", "taso_103", "taso_104", "taso_110", "taso_111", "taso_112", "taso_113"]


def test_verification_detects_a_wrong_rule():
    spec = ALL[0].spec  # (matmul (matmul x1 w4) w5) => (matmul x1 (matmul w4 w5))
    assert verify_rule(spec).ok
    # Swap the operands of the dst's inner matmul: w5 @ w4 is a different function.
    d0 = spec.dst[0]
    bad = dataclasses.replace(spec, dst=(PatOp(d0.type, d0.inputs[::-1], d0.params),) + spec.dst[1:])
    res = verify_rule(bad)
    assert not res.ok and res.reason.startswith("numerical mismatch") and res.max_err > 1e-3
    # A dst activation flipped to relu changes the function too.
    relu_dst = tuple(PatOp(o.type, o.inputs, ((ACTI, 2),)) if o.type == MATMUL else o for o in spec.dst)
    assert not verify_rule(dataclasses.replace(spec, dst=relu_dst)).ok
    # A rule that never type-checks is reported as such: ewadd of [B, D] and [D, D] (B != D everywhere but one).
    ew = PatternSpec((PatOp(EW_ADD, ((-1, 0), (-4, 0)), ()),), (PatOp(EW_ADD, ((-4, 0), (-1, 0)), ()),), ((0, 0, 0, 0),))
    res = verify_rule(ew, instantiations=INSTANTIATIONS[:3])
    assert not res.ok and res.reason.startswith("no valid shape instantiation")


def test_bad_pb_file_gives_a_clear_error(tmp_path):
    data = PB_PATH.read_bytes()
    bad = tmp_path / "bad.pb"
    bad.write_bytes(data[:1000])
    with pytest.raises(ValueError, match="bad.pb"):
        load_pb_specs(bad)
    txt = tmp_path / "bad.txt"
    txt.write_text("(matmul 0 ?input_1 ?input_4)=>(pool ?input_1)")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="bad.txt line 1"):
        load_text_specs(txt, empty)


# ----------------------------------------------------------------------------- applying on graphs


def _embed(rule: PatternRule, extra_consumer: bool = True):
    """A graph holding the rule's source pattern over fresh inputs (base sizes); returns (graph, src op ids)."""
    from systems_envs.rewrite.verify import _alternative_roles, build_side

    spec = rule.spec
    roles = None
    try:
        build_side(spec, "src", INSTANTIATIONS[0])
    except Exception:
        roles = next(r for r in _alternative_roles(spec) if _builds(spec, r))
    g = Graph(rule.name)
    binding = {}
    for v in sorted(spec.variables(), reverse=True):
        shape = INSTANTIATIONS[0].var_shape(-v, roles)
        binding[v] = (g.input(f"x{-v}", shape) if -v in (1, 2, 3, 7, 8, 9) else g.weight(f"w{-v}", shape), 0)
    ids = add_template(g, spec.src, binding)
    outs = [(ids[so], st) for so, st, _, _ in spec.mapped]
    if extra_consumer:
        outs = [(g.add("relu", [o]), 0) for o in outs]
    g.set_outputs(outs)
    return g, ids


def _builds(spec, roles):
    from systems_envs.rewrite.verify import build_side

    try:
        build_side(spec, "src", INSTANTIATIONS[0], roles=roles)
        return True
    except Exception:
        return False


@pytest.mark.parametrize("rule", VERIFIED, ids=lambda r: r.name)
def test_verified_rule_applies_and_preserves_outputs(rule):
    g, ids = _embed(rule)
    root = ids[rule.spec.mapped[0][0]]
    matches = rule.match_at(g, root)
    want = tuple(sorted(enumerate(ids)))
    mine = [m for m in matches if m.data[0] == want]
    assert len(mine) == 1, f"{rule.name}: pattern not matched at its own instance ({len(matches)} matches)"
    before = execute(g, dtype=np.float64, seed=3)
    n_before = g.num_ops()
    changed = rule.apply(g, mine[0])
    assert changed
    g.prune()
    g.validate()
    after = execute(g, dtype=np.float64, seed=3)
    for a, b in zip(before, after):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-9)
    assert g.num_ops() == n_before - len(rule.spec.src) + len(rule.spec.dst)
    # The replaced nodes are gone: nothing matches at the old root any more.
    assert root not in g.nodes


def test_no_match_when_an_intermediate_has_an_outside_use():
    rule = ALL[0]  # (matmul (matmul x1 w4) w5): the inner matmul is an intermediate
    g, ids = _embed(rule)
    assert rule.match_at(g, ids[1])
    g.set_outputs(list(g.outputs) + [(g.add("relu", [ids[0]]), 0)])
    assert rule.match_at(g, ids[1]) == []
    # Being a graph output also keeps it alive.
    g2, ids2 = _embed(rule)
    g2.set_outputs(list(g2.outputs) + [(ids2[0], 0)])
    assert rule.match_at(g2, ids2[1]) == []


def test_no_match_on_wrong_attributes_or_shapes():
    # relu(conv) => conv[relu]: a conv with VALID pads or a relu activation must not match.
    rule = next(r for r in ALL if r.spec.to_text().startswith("(relu (conv2d 1 1 0 0 ?input_7 ?input_10))"))
    g = Graph("g")
    x, w = g.input("x", (2, 4, 5, 5)), g.weight("w", (4, 4, 3, 3))
    same = g.add("relu", [g.add("conv2d", [x, w], pads=(1, 1, 1, 1))])
    valid = g.add("relu", [g.add("conv2d", [x, w])])
    fused = g.add("relu", [g.add("conv2d", [x, w], pads=(1, 1, 1, 1), activation="relu")])
    g.set_outputs([same, valid, fused])
    assert len(rule.match_at(g, same)) == 1
    assert rule.match_at(g, valid) == [] and rule.match_at(g, fused) == []
    # EW ops require identical shapes (no broadcast): add of [2,4] and [4] does not match.
    ew = next(r for r in ALL if r.spec.src[-1].type == EW_ADD and len(r.spec.src) == 2)
    g = Graph("ew")
    a, b = g.input("a", (2, 4)), g.input("b", (4,))
    n = g.add("add", [g.add("add", [a, b]), b])
    g.set_outputs([n])
    assert ew.match_at(g, n) == []


def test_multi_output_rule_matches_and_applies():
    # taso_009: (matmul (matmul w4 w5) w4) and (matmul w5 (matmul w4 w5)), sharing the inner matmul.
    multi = [r for r in VERIFIED if len(r.spec.mapped) == 2]
    assert len(multi) == 13
    rule = ALL[9]
    assert len(rule.spec.mapped) == 2 and rule.name in {r.name for r in VERIFIED}
    g = Graph("m")
    w4, w5 = g.weight("w4", (4, 4)), g.weight("w5", (4, 4))
    inner = g.add("matmul", [w4, w5])
    r1, r2 = g.add("matmul", [inner, w4]), g.add("matmul", [w5, inner])
    g.set_outputs([g.add("add", [r1, r2])])
    before = execute(g, dtype=np.float64)
    (m,) = rule.match_at(g, r1)
    assert m.nodes[0] == r1 and set(m.nodes) == {inner, r1, r2}
    # Without the second root the rule does not match.
    g_half = Graph("half")
    a, b = g_half.weight("w4", (4, 4)), g_half.weight("w5", (4, 4))
    h1 = g_half.add("matmul", [g_half.add("matmul", [a, b]), a])
    g_half.set_outputs([h1])
    assert rule.match_at(g_half, h1) == []
    rule.apply(g, m)
    g.prune()
    g.validate()
    np.testing.assert_allclose(execute(g, dtype=np.float64)[0], before[0], rtol=1e-9, atol=1e-12)


def test_split_rule_sizes_come_from_the_replaced_outputs():
    # A merge rule: two matmuls sharing x1 become one matmul over concat(w4, w5), then split.
    rule = next(r for r in ALL if len(r.spec.mapped) == 2 and any(o.type == 13 for o in r.spec.dst)
                and r.spec.src[0].type == MATMUL)
    g, ids = _embed(rule)
    before = execute(g, dtype=np.float64)
    (m,) = [m for m in rule.match_at(g, ids[rule.spec.mapped[0][0]]) if m.data[0] == tuple(enumerate(ids))]
    rule.apply(g, m)
    g.prune()
    g.validate()
    split = [n for n in g.nodes.values() if n.op == "split"]
    assert len(split) == 1 and len(split[0].attrs["sizes"]) == 2
    for a, b in zip(before, execute(g, dtype=np.float64)):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)


def test_match_rejects_cycles():
    # Disconnected multi-rule: relu(conv(i7, w19)) and conv[relu](i8, w10). If i8 is the first
    # root's output, the rewrite would feed the second template from a replaced tensor.
    rule = next(r for r in ALL if len(r.spec.mapped) == 2
                and r.spec.to_text().startswith("(relu (conv2d 1 1 0 0 ?input_7 ?input_19))"))
    g = Graph("c")
    x = g.input("x", (2, 4, 5, 5))
    wd, w = g.weight("wd", (4, 1, 3, 3)), g.weight("w", (4, 4, 3, 3))
    r1 = g.add("relu", [g.add("conv2d", [x, wd], pads=(1, 1, 1, 1), groups=4)])
    c2 = g.add("conv2d", [r1, w], pads=(1, 1, 1, 1), activation="relu")
    g.set_outputs([c2])
    # The only candidate second root, c2, consumes r1 (a replaced tensor): rejected.
    assert rule.match_at(g, r1) == []
    # An independent conv[relu] elsewhere is a valid second root; c2 still is not.
    y = g.input("y", (2, 4, 5, 5))
    c3 = g.add("conv2d", [y, w], pads=(1, 1, 1, 1), activation="relu")
    g.set_outputs([c2, c3])
    (m,) = rule.match_at(g, r1)
    assert c3 in m.nodes and c2 not in m.nodes
    before = execute(g, dtype=np.float64)
    rule.apply(g, m)
    g.prune()
    g.validate()
    for a, b in zip(before, execute(g, dtype=np.float64)):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)


def test_stale_match_is_an_error():
    rule = ALL[0]
    g, ids = _embed(rule)
    (m,) = rule.match_at(g, ids[1])
    rule.apply(g, m)
    g.prune()
    with pytest.raises(GraphError, match="stale"):
        rule.apply(g, m)


def test_canonical_is_idempotent():
    for r in ALL[:20]:
        assert canonical(r.spec) == r.spec
    assert {o.type for r in ALL for o in r.spec.src} <= {3, RELU, CONCAT, 16, 17, MATMUL}


def test_rules_on_a_real_graph_preserve_outputs():
    """On the built-in SqueezeNet, apply one match of every rule that matches (in turn), then compare outputs."""
    from systems_envs.graph.load import load_graph

    g = load_graph("squeezenet")
    before = execute(g, dtype=np.float64, seed=1)
    applied = []
    for rule in VERIFIED:
        matches = [m for nid in sorted(g.nodes) for m in rule.match_at(g, nid)]
        if matches:
            rule.apply(g, matches[0])
            g.prune()
            g.validate()
            applied.append(rule.name)
    assert len(applied) >= 3, applied
    after = execute(g, dtype=np.float64, seed=1)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-9, atol=1e-9)


def test_disconnected_multi_rules_are_flagged():
    flagged = {r.name for r in ALL if r.disconnected}
    assert flagged == {"taso_063", "taso_065", "taso_070", "taso_081", "taso_095", "taso_120"}
    assert not any(r.disconnected for r in ALL if len(r.spec.mapped) == 1)
