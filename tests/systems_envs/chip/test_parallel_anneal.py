"""Parallel annealing (hard / soft macro workers): legal merged placements, exact reported
cost, determinism under a proposal budget, the assignment of macros to workers."""
import numpy as np
import pytest

from systems_envs.chip.baselines import greedy
from systems_envs.chip.cost import evaluate
from systems_envs.chip.generator import generate_netlist
from systems_envs.chip.legality import is_legal
from systems_envs.chip.parallel_anneal import anneal_parallel, assign


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
    a = anneal_parallel(nl, header, pl, time_limit=0.6, epoch_seconds=0.2, fd_every=0.3, workers=4, seed=0)
    assert is_legal(nl, header, a.placement) and a.costs == evaluate(nl, header, a.placement)
    assert a.costs.proxy_cost <= a.trace[0][1]


def test_assign_gives_hard_to_one_worker_and_soft_strips(start):
    nl, header, pl = start
    two = assign(nl, pl, 2, 0, np.array([]))
    assert (two[0][0] == nl.hard).all() and len(two[0][1]) == 0 and two[0][2] is None
    assert len(two[1][0]) == 0 and (two[1][1] == nl.soft).all() and two[1][2] is None
    for axis in (0, 1):
        parts = assign(nl, pl, 4, axis, np.array([0.3, 0.7]))
        assert (parts[0][0] == nl.hard).all() and all(len(h) == 0 for h, _, _ in parts[1:])
        soft = np.concatenate([s for _, s, _ in parts])
        assert sorted(soft) == sorted(nl.soft)              # every soft macro in exactly one strip
        pos = pl.x if axis == 0 else pl.y
        for _, s_, (ax, lo, hi) in parts[1:]:
            assert ax == axis and (pos[s_] >= lo).all() and (pos[s_] <= hi).all()
        assert abs(len(parts[1][1]) - 0.3 * len(nl.soft)) <= 2


def test_bad_input(start):
    nl, header, pl = start
    with pytest.raises(ValueError, match="workers must be"):
        anneal_parallel(nl, header, pl, max_moves=10, workers=1)
    with pytest.raises(ValueError, match="needs 7 non-negative"):
        anneal_parallel(nl, header, pl, max_moves=10, move_probs=(1, 1))
    bad = pl.copy()
    bad.x[nl.hard[0]] = -1e6
    with pytest.raises(ValueError, match="not legal"):
        anneal_parallel(nl, header, bad, max_moves=10)
