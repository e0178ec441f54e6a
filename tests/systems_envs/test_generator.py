"""Tests of the generated training graphs (``systems_envs.graph.generator``)."""
from __future__ import annotations

import numpy as np
import pytest

from systems_envs.graph.executor import execute
from systems_envs.graph.generator import FAMILIES, MAX_OPS, MIN_OPS, generate, graph_name, parse_name
from systems_envs.graph.ir import GraphError
from systems_envs.graph.load import load_graph

EXEC_SEEDS = (0, 1)
COUNT_SEEDS = range(8)


def _check_runs(g) -> None:
    g.validate()
    outs = execute(g)
    assert len(outs) == len(g.outputs)
    for (nid, i), out in zip(g.outputs, outs):
        assert out.shape == g.nodes[nid].shapes[i]
        assert np.isfinite(out).all(), f"{g.name}: non-finite output"


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("seed", EXEC_SEEDS)
def test_family_validates_and_executes(family, seed):
    g = generate(family, seed)
    assert g.name == f"gen:{family}:seed={seed}"
    assert MIN_OPS <= g.num_ops() <= MAX_OPS
    _check_runs(g)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_op_count_range_and_variety(family):
    graphs = [generate(family, s) for s in COUNT_SEEDS]
    counts = [g.num_ops() for g in graphs]
    assert all(MIN_OPS <= c <= MAX_OPS for c in counts), counts
    # the seeds draw different architectures, not one graph under several names
    assert len({g.hash() for g in graphs}) >= len(graphs) - 1


def test_corpus_spans_the_op_range():
    counts = [generate(f, s).num_ops() for f in FAMILIES for s in COUNT_SEEDS]
    assert min(counts) < 100 and max(counts) > 500, (min(counts), max(counts))


def test_deterministic_by_name():
    for family in FAMILIES:
        a, b = generate(family, 5), load_graph(f"gen:{family}:seed=5")
        assert a.hash() == b.hash() and a.num_ops() == b.num_ops()
    a, b = generate("mlp", 5), load_graph("gen:mlp:seed=5")
    assert all(np.array_equal(x, y) for x, y in zip(execute(a), execute(b)))


def test_families_are_independent_draws():
    # the family is part of the seed: seed 0 of two CNN families is not the same draw
    assert generate("resnet", 0).hash() != generate("resnext", 0).hash()


def test_name_round_trip():
    for family in FAMILIES:
        assert parse_name(graph_name(family, 12)) == (family, 12)


@pytest.mark.parametrize("bad", ["gen:resnet", "gen:resnet:seed=-1", "gen:resnet:seed=x", "gen:nope:seed=1",
                                 "gen:resnet:seed=1:extra"])
def test_bad_names_are_one_line_errors(bad):
    with pytest.raises(GraphError) as e:
        load_graph(bad)
    assert bad in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_executes_at_more_seeds(family):
    for seed in range(2, 8):
        _check_runs(generate(family, seed))


def test_names_work_as_graph_arguments(capsys):
    """Generated names go wherever a GRAPH does: graph_info, optimize, the rewrite env's graph list."""
    from experiments.graph_info import main as graph_info
    from experiments.optimize import main as optimize
    from systems_envs.rewrite.env import GraphRewriteEnv

    info = graph_info(["gen:squeezenet:seed=1"])
    assert info["graph"] == "gen:squeezenet:seed=1" and info["ops"] == generate("squeezenet", 1).num_ops()
    out = optimize(["gen:squeezenet:seed=1", "--search", "greedy"])
    assert out["reduction"] > 0
    names = ["gen:mlp:seed=0", "gen:squeezenet:seed=1"]
    env = GraphRewriteEnv(names, max_nodes=1024, max_edges=2048)
    seen = {env.reset(seed=s)[1]["graph"] for s in range(6)}
    assert seen == set(names)
    capsys.readouterr()
