"""Tests of the evaluation protocol (``systems_envs.graph.corpus``): folds never leak."""
from __future__ import annotations

import functools

import pytest

from systems_envs.graph import corpus
from systems_envs.graph.corpus import BENCHMARKS, FOLDS, ProtocolError, Split, check_split, split, structure_hash
from systems_envs.graph.generator import FAMILIES, generate
from systems_envs.graph.load import load_graph

# a real collision of the generator: two seeds that draw the same rnn graph, one of them in
# the held-out seed range (found by hashing rnn seeds 0..399 against 10000..10003)
TRAIN_TWIN, HELDOUT_TWIN = "gen:rnn:seed=170", "gen:rnn:seed=10002"


@functools.cache
def _hash(name: str) -> str:  # computed here, independently of the module's own cache
    return structure_hash(load_graph(name))


def test_fold_names():
    assert len(BENCHMARKS) == 8 and FOLDS[:8] == tuple(f"loo:{b}" for b in BENCHMARKS)
    assert FOLDS[-1] == "generated"


@pytest.mark.parametrize("fold", FOLDS)
def test_default_folds_never_leak(fold):
    s = split(fold)
    heldout = set(corpus.heldout_generated())
    assert not set(s.train) & (set(s.eval) | heldout)
    train_hashes = {_hash(n) for n in s.train}
    eval_hashes = {_hash(n) for n in set(s.eval) | heldout}
    assert not train_hashes & eval_hashes
    if fold == "generated":
        assert set(s.eval) == heldout and set(BENCHMARKS) <= set(s.train)
    else:
        left_out = fold[4:]
        assert s.eval == (left_out,) and set(s.train) >= set(BENCHMARKS) - {left_out}
    assert len(s.train) == 7 + 16 * len(FAMILIES) + (fold == "generated") - len(s.dropped)


def test_structure_twin_of_a_heldout_graph_is_dropped():
    assert structure_hash(load_graph(TRAIN_TWIN)) == structure_hash(load_graph(HELDOUT_TWIN))
    for fold in ("generated", "loo:bert"):
        s = split(fold, per_family=171, heldout_per_family=3, families=["rnn"])
        assert s.dropped == (TRAIN_TWIN,)
        assert TRAIN_TWIN not in s.train and "gen:rnn:seed=169" in s.train


def test_check_split_catches_leaks():
    check_split(Split("ok", ("bert", "gen:rnn:seed=1"), ("vit",)))
    with pytest.raises(ProtocolError, match="trains on held-out"):
        check_split(Split("x", ("bert", "vit"), ("vit",)))
    with pytest.raises(ProtocolError, match="structure of held-out graph 'gen:rnn:seed=10002'"):
        check_split(Split("x", ("bert", TRAIN_TWIN), (HELDOUT_TWIN,)))
    with pytest.raises(ProtocolError, match="trains on held-out"):
        check_split(Split("x", ("gen:mlp:seed=10000",), ("vit",)), never_train=["gen:mlp:seed=10000"])


def test_structure_hash_ignores_names_not_structure():
    g = generate("mlp", 3)
    renamed = g.copy()
    for nid, n in list(renamed.nodes.items()):
        if n.op == "weight":
            renamed.nodes[nid] = type(n)(n.id, n.op, n.inputs, {**n.attrs, "name": "w" + n.attrs["name"]}, n.shapes)
    assert structure_hash(renamed) == structure_hash(g)
    assert structure_hash(generate("mlp", 4)) != structure_hash(g)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ProtocolError, match="unknown fold 'loo:bret'; did you mean loo:bert"):
        split("loo:bret")
    with pytest.raises(ProtocolError, match="per_family"):
        split("generated", per_family=10_001)
    with pytest.raises(ProtocolError, match="unknown generated families"):
        split("generated", families=["resnet", "lstm"])
