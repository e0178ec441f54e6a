"""Parallel (spatially decomposed) annealing: legal merged placements, exact reported cost,
determinism under a proposal budget, the strip split."""
import numpy as np
import pytest

from systems_envs.chip.baselines import greedy
from systems_envs.chip.cost import evaluate
from systems_envs.chip.generator import generate_netlist
from systems_envs.chip.legality import is_legal
from systems_envs.chip.parallel_anneal import anneal_parallel, balanced_cuts, split


@pytest.fixture(scope="module")
def start():
    nl, header, pl = generate_netlist(num_hard=16, num_soft=48, num_ports=16, num_nets=300, seed=7)
    return nl, header, greedy(nl, header, pl).placement


def test_two_workers_legal_exact_and_better(start):
    nl, header, pl = start
    a = anneal_parallel(nl, header, pl, max_moves=600, epoch_moves=150, workers=2, seed=3, fd_every=0)
    assert is_legal(nl, header, a.placement)
    assert a.costs == evaluate(nl, header, a.placement)     # recomputed from scratch, not a running sum
    assert a.costs.proxy_cost < evaluate(nl, header, pl).proxy_cost
    assert a.trace[0][1] == pytest.approx(evaluate(nl, header, pl).proxy_cost)
    assert all(b[1] <= a_[1] for a_, b in zip(a.trace, a.trace[1:]))
    assert sum(m["proposed"] for m in a.moves.values()) == 2 * 600
    assert all(0 <= m["accepted"] <= m["proposed"] for m in a.moves.values())
    # deterministic given seed and workers under a proposal budget
    b = anneal_parallel(nl, header, pl, max_moves=600, epoch_moves=150, workers=2, seed=3, fd_every=0)
    np.testing.assert_array_equal(a.placement.x, b.placement.x)
    assert a.costs == b.costs
    c = anneal_parallel(nl, header, pl, max_moves=600, epoch_moves=150, workers=2, seed=4, fd_every=0)
    assert not np.array_equal(a.placement.x, c.placement.x)


def test_time_budget_and_force_directed_step(start):
    nl, header, pl = start
    a = anneal_parallel(nl, header, pl, time_limit=0.6, epoch_seconds=0.2, fd_every=0.3, workers=3, seed=0)
    assert is_legal(nl, header, a.placement) and a.costs == evaluate(nl, header, a.placement)
    assert a.costs.proxy_cost <= a.trace[0][1]


def test_split_gives_disjoint_strips(start):
    nl, header, pl = start
    for axis in (0, 1):
        cuts = balanced_cuts(nl, pl, axis, np.array([0.3, 0.7]))
        assert (np.diff(cuts) >= 0).all()
        parts = split(nl, header, pl, 3, axis, cuts)
        soft = np.concatenate([s for _, s, _ in parts])
        assert sorted(soft) == sorted(nl.soft)              # every soft macro in exactly one strip
        hard = np.concatenate([h for h, _, _ in parts])
        assert len(set(hard)) == len(hard) and set(hard) <= set(nl.hard)
        pos = pl.x if axis == 0 else pl.y
        ext = (nl.obj_width if axis == 0 else nl.obj_height) / 2
        for h, _, (ax, lo, hi) in parts:
            assert ax == axis and (pos[h] - ext[h] >= lo).all() and (pos[h] + ext[h] <= hi).all()


def test_bad_input(start):
    nl, header, pl = start
    with pytest.raises(ValueError, match="workers must be"):
        anneal_parallel(nl, header, pl, max_moves=10, workers=0)
    with pytest.raises(ValueError, match="needs 7 non-negative"):
        anneal_parallel(nl, header, pl, max_moves=10, move_probs=(1, 1))
    bad = pl.copy()
    bad.x[nl.hard[0]] = -1e6
    with pytest.raises(ValueError, match="not legal"):
        anneal_parallel(nl, header, bad, max_moves=10)
