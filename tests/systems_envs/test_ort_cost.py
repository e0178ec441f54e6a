"""onnxruntime cost models: fused twins cost the same, incremental costs stay exact, e2e timings are cached."""
from __future__ import annotations

import json

import numpy as np
import pytest

from systems_envs.graph.cost import COST_MODEL_NAMES, make_cost_model
from systems_envs.graph.ir import Graph
from systems_envs.graph.ort_cost import E2ECostModel, OrtCpuCostModel

pytest.importorskip("onnxruntime")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SYSWORLD_CACHE_DIR", str(tmp_path))
    return tmp_path


def conv_block(fused: bool, bn: bool = False) -> Graph:
    """x -> conv 3x3 (16 -> 16 channels, 14x14) -> [batchnorm] -> relu -> conv 1x1; the
    activation either a separate relu node or the conv's ``activation`` attribute."""
    g = Graph("fused" if fused else "plain")
    x = g.input("x", (1, 16, 14, 14))
    w = g.weight("w", (16, 16, 3, 3))
    if fused:
        y = g.add("conv2d", [x, w], pads=(1, 1, 1, 1), activation="relu")
    else:
        c = g.add("conv2d", [x, w], pads=(1, 1, 1, 1))
        if bn:
            c = g.add("batchnorm", [c, g.weight("s", (16,)), g.weight("b", (16,)), g.weight("m", (16,)),
                                    g.weight("v", (16,), init="positive")])
        y = g.add("relu", [c])
    z = g.add("conv2d", [y, g.weight("w2", (8, 16, 1, 1))])
    g.set_outputs([z])
    return g


def test_conv_relu_and_its_fused_twin_cost_the_same(cache_dir):
    cm = OrtCpuCostModel(repeats=5)
    plain, fused = conv_block(False), conv_block(True)
    costs = cm.node_costs(plain)
    relu = next(n.id for n in plain.nodes.values() if n.op == "relu")
    assert costs[relu] == 0.0  # the relu runs inside the convolution's kernel
    assert cm.graph_cost(plain) == cm.graph_cost(fused) > 0
    # the analytic v100 model credits the fusion: one kernel launch less
    v100 = make_cost_model("v100")
    assert v100.graph_cost(fused) < v100.graph_cost(plain)


def test_conv_batchnorm_folded_by_onnxruntime_costs_the_same_as_the_folded_graph(cache_dir):
    from systems_envs.rewrite.search import greedy
    from systems_envs.rewrite.ruleset import default_rules

    cm = OrtCpuCostModel(repeats=5)
    g = conv_block(False, bn=True)
    folded = greedy(g, default_rules(taso=False), make_cost_model("v100")).graph
    const = folded.constant_nodes()
    assert all(n.id in const for n in folded.nodes.values() if n.op == "batchnorm")  # folded into weights
    assert cm.graph_cost(folded) == pytest.approx(cm.graph_cost(g))


def test_incremental_costs_match_a_full_recount_after_rewrites(cache_dir):
    from systems_envs.graph.models import build_graph
    from systems_envs.rewrite.candidates import CandidateIndex
    from systems_envs.rewrite.ruleset import default_rules

    cm = OrtCpuCostModel(repeats=3, warmup=1)
    idx = CandidateIndex(build_graph("squeezenet"), default_rules(), cm)
    rng = np.random.default_rng(0)
    for _ in range(6):
        i = int(rng.integers(len(idx)))
        assert idx.preview(i).cost == pytest.approx(cm.graph_cost(idx.preview(i).graph), rel=1e-12)
        idx.apply(i)
        assert idx.cost == pytest.approx(cm.graph_cost(idx.graph), rel=1e-12)


def test_e2e_timings_are_cached_by_graph_hash(cache_dir, monkeypatch):
    from systems_envs.graph import measure

    g = conv_block(True)
    cm = E2ECostModel(rounds=3, warmup=1)
    ms = cm.graph_cost(g)
    assert ms > 0 and cm.timer.timed == 1
    data = json.loads((cache_dir / "e2e_costs.json").read_text())
    (table,) = data.values()
    assert table[g.hash()]["median_ms"] == ms
    monkeypatch.setattr(measure, "time_model", lambda *a, **k: pytest.fail("re-timed a cached graph"))
    again = make_cost_model("e2e")
    assert again.graph_cost(conv_block(True)) == ms and again.timer.timed == 0
    with pytest.raises(ValueError, match="whole graphs"):
        again.node_costs(g)


def test_cost_model_names():
    assert {"v100", "ort-cpu", "e2e"} <= set(COST_MODEL_NAMES)
    with pytest.raises(ValueError, match="unknown cost model 'tpu'"):
        make_cost_model("tpu")


def test_whole_graph_cost_model_drives_the_candidate_index(cache_dir):
    from systems_envs.rewrite.candidates import CandidateIndex
    from systems_envs.rewrite.ruleset import default_rules

    cm = E2ECostModel(rounds=2, warmup=1)
    idx = CandidateIndex(conv_block(False), default_rules(taso=False), cm)
    assert len(idx) > 0
    assert idx.cost == cm.graph_cost(idx.graph) > 0 and cm.timer.timed == 1
    pv = idx.preview(0)
    assert pv.cost == cm.graph_cost(pv.graph) and cm.timer.timed == 2  # one real measurement per new graph
    idx.apply(0)
    assert idx.cost == pv.cost and cm.timer.timed == 2  # the applied graph was already measured
    assert idx.node_cost(next(iter(idx.graph.nodes))) == 0.0  # no per-node costs under a whole-graph model


def test_split_and_reshape_of_computed_tensors_cost_what_onnxruntime_runs(cache_dir):
    g = Graph("split_reshape")
    x = g.input("x", (64, 256))
    y = g.add("matmul", [x, g.weight("w", (256, 512))])
    sp = g.add("split", [y], axis=1, sizes=(256, 256))
    a = g.add("relu", [(sp, 0)])
    b = g.add("reshape", [(sp, 1)], shape=(64, 16, 16))
    wr = g.add("reshape", [g.weight("c", (4, 4))], shape=(16,))
    g.set_outputs([a, b, g.add("add", [b, wr])])
    cm = OrtCpuCostModel(repeats=4, warmup=1)
    costs = cm.node_costs(g)
    assert costs[sp] >= cm.kernel_ms > 0  # a split is a copy in onnxruntime
    assert costs[b] == cm.kernel_ms  # a reshape runs as one (aliasing) kernel
    assert costs[wr] == 0.0  # a reshape of a constant is folded


def test_greedy_takes_no_step_within_the_timing_noise(cache_dir):
    from systems_envs.rewrite.search import greedy
    from systems_envs.rewrite.ruleset import default_rules

    cm = OrtCpuCostModel(repeats=4, warmup=1)
    cm.graph_cost(conv_block(False))
    assert 0 < cm.resolution < 1  # measured: the groups' standard errors over their costs
    v100 = make_cost_model("v100")
    assert v100.resolution == 0.0
    g, rules = conv_block(False, bn=True), default_rules(taso=False)
    full = greedy(g, rules, v100)
    assert full.rewrites and full.reduction < 0.9
    v100.resolution = 0.9  # no single step gains 90%: greedy stops at once
    assert greedy(g, rules, v100).rewrites == []
    v100.resolution = 0.01  # relative to the graph's cost, also when it is far below 1 ms
    assert full.cost_before < 1 and greedy(g, rules, v100).rewrites == full.rewrites
    v100.resolution = 0.9
    assert greedy(g, rules, v100, min_gain=0.0).rewrites == full.rewrites  # min_gain overrides the resolution
    assert greedy(g, rules, make_cost_model("v100"), min_gain=0.9).rewrites == []
    with pytest.raises(ValueError, match="min_gain must be >= 0"):
        greedy(g, rules, v100, min_gain=-0.1)


def test_compare_models_takes_the_fastest_of_more_runs_for_tiny_models():
    from systems_envs.graph.measure import compare_models, export_for_timing, inner_runs

    assert inner_runs(0.05) == 20 and inner_runs(0.5) == 3 and inner_runs(1e-5) == 50
    with pytest.raises(ValueError, match="run_ms must be > 0"):
        inner_runs(0.0)
    g = Graph("tiny")
    g.set_outputs([g.add("relu", [g.input("x", (1, 8))])])
    model = export_for_timing(g)
    c = compare_models(model, model, rounds=3)
    assert c.inner >= 20  # a run of a few microseconds: the fastest of many runs per round
    assert compare_models(model, model, rounds=3, inner=4).inner == 4


@pytest.mark.parametrize("speedup, force, written", [(1.2, False, "optimized"), (1.0, False, "original"),
                                                     (0.8, False, "original"), (0.8, True, "optimized")])
def test_keep_if_faster_writes_the_optimised_model_only_if_faster_or_forced(monkeypatch, speedup, force, written):
    import systems_envs.graph.measure as measure

    fixed = measure.Comparison(1.0, 1.0 / speedup, speedup, 0.01, 0.01, 3)
    seen = {}
    monkeypatch.setattr(measure, "compare_models", lambda a, b, **kw: seen.update(models=(a, b), **kw) or fixed)
    assert measure.keep_if_faster("orig", "opt", force, rounds=7) == (written, fixed)
    assert seen == {"models": ("orig", "opt"), "rounds": 7}  # the timing options reach compare_models


def test_a_noisy_group_timing_is_taken_again_once_with_more_rounds(cache_dir, monkeypatch):
    from systems_envs.graph import ort_cost

    cm = OrtCpuCostModel(repeats=3, warmup=1)
    g = conv_block(True)
    cm.graph_cost(g)
    table = cm._disk.table
    digests = [k[2:] for k in table if k.startswith("b:")]
    assert digests and all(table[f"n:{d}"] == 3 for d in digests)
    d = digests[0]
    for other in digests[1:]:
        table[f"e:{other}"] = 0.0                 # three rounds can be noisy by chance: only d is, here
    table[f"b:{d}"], table[f"e:{d}"] = 5.0, 1.0  # as if a burst of load had hit its rounds
    rounds = []
    real = OrtCpuCostModel._interleaved
    monkeypatch.setattr(OrtCpuCostModel, "_interleaved",
                        lambda self, s, f, r, bound=True: rounds.append(r) or real(self, s, f, r, bound))
    fresh = OrtCpuCostModel(repeats=3, warmup=1)  # reads the cache from disk
    fresh._disk.table.update(table)
    fresh.graph_cost(g)
    assert rounds == [ort_cost.RETIME_FACTOR * 3] and fresh.timed == 1
    assert fresh._disk.table[f"n:{d}"] == 12 and fresh._disk.table[f"b:{d}"] != 5.0
    again = OrtCpuCostModel(repeats=3, warmup=1)
    again._disk.table.update(fresh._disk.table)
    again._disk.table[f"e:{d}"] = 1.0  # still noisy after the second timing: not taken a third time
    again.graph_cost(g)
    assert again.timed == 0 and rounds == [12]
