"""Proxy cost: circuit_training's recorded header costs and maps, a hand-computed tiny case,
incremental == full."""
import numpy as np
import pytest

from systems_envs.chip.cost import PlacementCost, evaluate
from systems_envs.chip.netlist import HARD, ORIENTATIONS
from systems_envs.chip.plc import Placement

from .conftest import TINY_HEADER


def digits(m):
    """The header's map encoding: floor(10 x value), blank for 0, '!' from 1.0."""
    d = np.floor(m * 10).astype(int)
    return np.where(d <= 0, " ", np.where(d < 10, d.astype(str), "!"))


def test_initial_plc_header_costs_and_maps_reproduced(ariane):
    nl, header, pl = ariane
    pc = PlacementCost(nl, header, pl)
    c = pc.costs()
    rec = header.recorded
    assert f"{c.wirelength_cost:.4f}" == f"{rec['wirelength_cost']:.4f}" == "0.0497"
    assert f"{c.density_cost:.4f}" == f"{rec['density_cost']:.4f}" == "0.6067"
    assert f"{c.congestion_cost:.4f}" == f"{rec['congestion_cost']:.4f}" == "0.7128"
    # raw wirelength: within 1e-6 relative (3,219,214.0 vs the header's 3,219,216.1)
    assert abs(c.wirelength - rec["wirelength"]) < 1e-6 * rec["wirelength"]
    h, v = pc.congestion_maps()
    assert (digits(h) == header.maps["h_congestion"]).all()
    assert (digits(v) == header.maps["v_congestion"]).all()
    assert c.proxy_cost == pytest.approx(c.wirelength_cost + 0.5 * c.density_cost + 0.5 * c.congestion_cost)


def test_tiny_netlist_hand_computed(tiny):
    pc = PlacementCost(tiny, TINY_HEADER)
    c = pc.costs()
    # net 1 (w 2): A/p (19, 15), B (5, 5), P (0, 25): HPWL 19 + 20; net 2: P, B: 5 + 20
    assert c.wirelength == pytest.approx(2 * 39 + 25)
    assert c.wirelength_cost == pytest.approx(103 / (60 * 3))
    # densities: A fills cell (1, 1), B covers 16 of cell (0, 0)'s 100; < 10 cells: mean of non-empty
    assert c.density_cost == pytest.approx(0.5 * (1.0 + 0.16) / 2)
    h, v = pc.congestion_maps()
    # net 1 cells {(0,0) B, (1,1) A, (2,0) P}: a T (rows 0,1,2): H row 1 [0,1); V col 0 rows [0,1) and [1,2)
    # net 2 cells {(2,0) P -> (0,0) B}: V col 0 rows [0, 2); capacity 10 per cell; A blocks cell (1, 1)
    want_h = np.zeros((3, 3)); want_h[1, 0] = 2 / 10; want_h[1, 1] = 10 * 2 / 10
    want_v = np.zeros((3, 3)); want_v[0, 0] = 3 / 10; want_v[1, 0] = 3 / 10; want_v[1, 1] = 10 * 3 / 10
    np.testing.assert_allclose(h, want_h, atol=1e-12)
    np.testing.assert_allclose(v, want_v, atol=1e-12)
    assert c.congestion_cost == pytest.approx(3.0)        # 18 values, top 0 -> the maximum
    # flipping A to S moves its pin to (11, 15)
    pc.flip(1, ORIENTATIONS.index("S"))
    assert pc.wirelength() == pytest.approx(2 * 31 + 25)


def test_tiny_partial_macro_blockage(tiny):
    # A (10 x 10) at (20, 10): covers half of cells (0,1),(0,2),(1,1),(1,2) -> spans 2 rows and 2 cols,
    # partly: the top row's vertical and the right column's horizontal blockage are dropped
    pl = Placement.from_netlist(tiny)
    pl.x[1], pl.y[1] = 20.0, 10.0
    pc = PlacementCost(tiny, TINY_HEADER, pl)
    want_v = np.zeros((3, 3)); want_v[0, 1] = want_v[0, 2] = 5 * 3 / 10
    want_h = np.zeros((3, 3)); want_h[0, 1] = want_h[1, 1] = 5 * 2 / 10
    np.testing.assert_allclose(pc.block_v, want_v, atol=1e-12)
    np.testing.assert_allclose(pc.block_h, want_h, atol=1e-12)


def test_incremental_equals_full_on_random_moves(ariane):
    nl, header, pl = ariane
    pc = PlacementCost(nl, header, pl)
    rng = np.random.default_rng(0)
    hard = nl.hard
    soft = nl.soft
    for step in range(60):
        kind = step % 4
        if kind == 0:
            m = rng.choice(hard)
            pc.move(m, rng.uniform(0, header.width), rng.uniform(0, header.height))
        elif kind == 1:
            a, b = rng.choice(hard, 2, replace=False)
            pc.swap(a, b)
        elif kind == 2:
            pc.flip(rng.choice(hard), rng.integers(0, 4))
        else:
            m = rng.choice(soft)
            pc.move(m, rng.uniform(-50, header.width + 50), rng.uniform(0, header.height))
        if step % 15 == 14:
            full = evaluate(nl, header, pc.pl)
            inc = pc.costs()
            for k, v in full.as_dict().items():
                assert getattr(inc, k) == pytest.approx(v, rel=1e-9, abs=1e-12), k
            fresh = PlacementCost(nl, header, pc.pl)
            np.testing.assert_allclose(pc.route_h, fresh.route_h, atol=1e-9)
            np.testing.assert_allclose(pc.density_area, fresh.density_area, atol=1e-6)
    assert (nl.obj_kind[hard] == HARD).all()


def _caches(pc):
    return [a.copy() for a in (pc.pl.x, pc.pl.y, pc.pl.orient, pc.pin_x, pc.pin_y, pc.pin_r, pc.pin_c, pc.net_hpwl,
                               pc.route_h, pc.route_v, pc.density_area, pc.block_h, pc.block_v, pc._obj_area,
                               pc._obj_bh, pc._obj_bv)]


def test_undo_restores_every_cache_exactly(ariane):
    nl, header, pl = ariane
    pc = PlacementCost(nl, header, pl)
    rng = np.random.default_rng(3)
    for step in range(40):
        before = _caches(pc)
        kind = step % 4
        if kind == 0:
            pc.move(rng.choice(nl.hard), rng.uniform(0, header.width), rng.uniform(0, header.height))
        elif kind == 1:
            pc.swap(*rng.choice(nl.hard, 2, replace=False))
        elif kind == 2:
            pc.flip(rng.choice(nl.hard), rng.integers(0, 4))
        else:
            pc.move(rng.choice(nl.soft), rng.uniform(0, header.width), rng.uniform(0, header.height))
        if step % 2:
            pc.undo()
            for a, b in zip(before, _caches(pc)):
                np.testing.assert_array_equal(a, b)
            with pytest.raises(RuntimeError, match="no move to undo"):
                pc.undo()
    full = evaluate(nl, header, pc.pl)
    for k, v in full.as_dict().items():
        assert getattr(pc.costs(), k) == pytest.approx(v, rel=1e-9, abs=1e-12), k


def test_single_macro_area_equals_vectorised(ariane):
    nl, header, pl = ariane
    pc = PlacementCost(nl, header, pl)
    rng = np.random.default_rng(1)
    gw = header.width / header.columns
    for t in range(400):
        o = int(rng.choice(nl.soft if t % 2 else nl.hard))
        pc.pl.x[o], pc.pl.y[o] = rng.uniform(-100, header.width + 100), rng.uniform(-100, header.height + 100)
        if t % 5 == 0:   # an edge on a cell border
            pc.pl.x[o] = gw * rng.integers(0, header.columns + 1) - nl.obj_width[o] / 2
        np.testing.assert_array_equal(pc._area_one(o), pc._areas(np.array([o])))
