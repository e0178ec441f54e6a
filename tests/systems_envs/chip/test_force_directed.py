"""Force-directed soft-macro placement: only soft macros move, they stay inside, forces act."""
import numpy as np

from systems_envs.chip.cost import evaluate
from systems_envs.chip.force_directed import ForceDirected
from systems_envs.chip.plc import Placement

from .conftest import TINY_HEADER


def test_tiny_attraction_pulls_soft_macro_towards_its_nets(tiny):
    pl = Placement.from_netlist(tiny)
    pl.x[2], pl.y[2] = 25.0, 25.0          # B far from the port (0, 25) and A's pin (19, 15)
    fd = ForceDirected(tiny, TINY_HEADER)
    out = fd.place(pl, use_current_loc=True, num_steps=(1,), attract_factor=(1.0,), repel_factor=(0.0,),
                   move_distance_factors=(0.1,))
    # pull: 2 x (A/p - B) + 2 x (P - B) [net 1, weight 2] + 1 x (P - B) [net 2]: x < 0 and y < 0
    # each axis rescaled so its largest component is 0.1 x max(W, H) / 1 = 3
    assert (out.x[2], out.y[2]) == (22.0, 22.0)
    far = fd.place(pl, use_current_loc=True, num_steps=(1,), attract_factor=(1.0,), repel_factor=(0.0,))
    assert (far.x[2], far.y[2]) == (25.0, 25.0)     # a 30 um step leaves the canvas: dropped
    np.testing.assert_array_equal(out.x[[0, 1]], pl.x[[0, 1]])


def test_ariane_fd_moves_only_soft_macros_inside_canvas(ariane):
    nl, header, pl = ariane
    fd = ForceDirected(nl, header)
    out = fd.place(pl, num_steps=(20, 20, 20))
    hard, soft, ports = nl.hard, nl.soft, nl.ports
    np.testing.assert_array_equal(out.x[hard], pl.x[hard])
    np.testing.assert_array_equal(out.y[ports], pl.y[ports])
    assert not np.allclose(out.x[soft], header.width / 2)
    w, h = nl.obj_width[soft] / 2, nl.obj_height[soft] / 2
    assert ((out.x[soft] - w >= 0) & (out.x[soft] + w <= header.width)).all()
    assert ((out.y[soft] - h >= 0) & (out.y[soft] + h <= header.height)).all()
    again = fd.place(pl, num_steps=(20, 20, 20))
    np.testing.assert_array_equal(again.x, out.x)
    assert np.isfinite(evaluate(nl, header, out).proxy_cost)
