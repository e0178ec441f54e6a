"""Force-directed placement of soft macros (standard-cell clusters), vectorised.

circuit_training places the soft macros after the hard macros are fixed with
``optimize_stdcells`` and the schedule of ``placement_util.fd_placement_schedule``; we
follow the semantics documented by TILOS MacroPlacement's open reimplementation:

* start: every soft macro at the canvas centre (unless ``use_current_loc``);
* stages s = 1..3 with ``num_steps`` = (100, 100, 100), ``attract_factor`` = (100, 1e-3,
  1e-5), ``repel_factor`` = (0, 1e6, 1e7), ``io_factor`` = 1, and a step length
  ``max_move`` = max(W, H) / num_steps[s] (x ``move_distance_factors``);
* each step, for every net and every sink: the driver's macro is pulled towards the
  sink and the sink's macro towards the driver by ``weight x attract (x io_factor when
  a port is involved) x (pin distance vector)``; every pair of overlapping macros (hard or
  soft, boxes overlapping with positive area) pushes each other apart by ``repel x
  max_move`` along the unit vector between their centres (equal centres: along
  (-1, -1)/sqrt(2) for the macro of lower index, the opposite for the other);
* only soft macros move: their x displacements are rescaled so that the largest is
  ``max_move`` (likewise y), and a displacement whose axis would take the macro's box to
  or past a canvas edge is dropped for that axis.

Pins sit at the cluster centre for soft macros and at centre + oriented offset for hard
macros. Candidate overlapping pairs come from a k-d tree (Chebyshev radius = the largest
possible half-size sum), so a step costs O(pairs), not O(macros^2).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from systems_envs.chip.netlist import HARD, ORIENT_MATRIX, PORT, SOFT, Netlist
from systems_envs.chip.plc import PlcHeader, Placement

DEFAULT_SCHEDULE = dict(num_steps=(100, 100, 100), attract_factor=(100.0, 1.0e-3, 1.0e-5),
                        repel_factor=(0.0, 1.0e6, 1.0e7), move_distance_factors=(1.0, 1.0, 1.0), io_factor=1.0)


class ForceDirected:
    """Reusable force-directed placer for one netlist and canvas (precomputes net edges)."""

    def __init__(self, netlist: Netlist, header: PlcHeader):
        nl = netlist
        self.nl, self.width, self.height = nl, float(header.width), float(header.height)
        lens = np.diff(nl.net_ptr)
        drv = np.repeat(nl.net_pins[nl.net_ptr[:-1]], lens - 1)
        sink_mask = np.ones(len(nl.net_pins), bool)
        sink_mask[nl.net_ptr[:-1]] = False
        snk = nl.net_pins[sink_mask]
        w = np.repeat(nl.net_weight, lens - 1)
        self.edge_a, self.edge_b = drv, snk
        self.edge_obj_a, self.edge_obj_b = nl.pin_obj[drv], nl.pin_obj[snk]
        self.edge_io = (nl.obj_kind[self.edge_obj_a] == PORT) | (nl.obj_kind[self.edge_obj_b] == PORT)
        self.edge_w = w
        self.soft = nl.soft
        self.macros = np.flatnonzero(nl.obj_kind != PORT)
        self.is_soft = nl.obj_kind == SOFT

    def place(self, placement: Placement, use_current_loc: bool = False, **schedule) -> Placement:
        """Return a copy of ``placement`` with the soft macros placed (hard macros and ports kept)."""
        cfg = {**DEFAULT_SCHEDULE, **schedule}
        nl = self.nl
        pl = placement.copy()
        if not use_current_loc:
            pl.x[self.soft], pl.y[self.soft] = self.width / 2, self.height / 2
        # pin offsets (fixed during FD: hard macros and ports do not move)
        m = ORIENT_MATRIX[pl.orient[nl.pin_obj]]
        ox = np.where(nl.obj_kind[nl.pin_obj] == HARD, m[:, 0, 0] * nl.pin_dx + m[:, 0, 1] * nl.pin_dy, 0.0)
        oy = np.where(nl.obj_kind[nl.pin_obj] == HARD, m[:, 1, 0] * nl.pin_dx + m[:, 1, 1] * nl.pin_dy, 0.0)
        ea, eb = self.edge_a, self.edge_b
        oa, ob = self.edge_obj_a, self.edge_obj_b
        off_x, off_y = ox[eb] - ox[ea], oy[eb] - oy[ea]
        soft_a, soft_b = self.is_soft[oa], self.is_soft[ob]
        n_obj = nl.num_objects
        half_w, half_h = nl.obj_width / 2, nl.obj_height / 2
        mac = self.macros
        reach = 2 * max(half_w[mac].max(), half_h[mac].max()) if len(mac) else 0.0
        canvas = max(self.width, self.height)
        for steps, att, rep, fac in zip(cfg["num_steps"], cfg["attract_factor"], cfg["repel_factor"],
                                        cfg["move_distance_factors"]):
            max_move = fac * canvas / steps
            force = self.edge_w * att * np.where(self.edge_io, cfg["io_factor"], 1.0)
            for _ in range(int(steps)):
                dx = (pl.x[ob] - pl.x[oa] + off_x) * force
                dy = (pl.y[ob] - pl.y[oa] + off_y) * force
                disp_x = (np.bincount(oa[soft_a], dx[soft_a], n_obj) - np.bincount(ob[soft_b], dx[soft_b], n_obj))
                disp_y = (np.bincount(oa[soft_a], dy[soft_a], n_obj) - np.bincount(ob[soft_b], dy[soft_b], n_obj))
                if rep != 0.0 and len(mac) > 1:
                    rx, ry = self._repulsion(pl, mac, half_w, half_h, reach, n_obj)
                    disp_x += rep * max_move * rx
                    disp_y += rep * max_move * ry
                sx, sy = disp_x[self.soft], disp_y[self.soft]
                mx, my = np.abs(sx).max(initial=0.0), np.abs(sy).max(initial=0.0)
                if mx > 0:
                    sx = sx / mx * max_move
                if my > 0:
                    sy = sy / my * max_move
                s = self.soft
                nx, ny = pl.x[s] + sx, pl.y[s] + sy
                okx = (nx - half_w[s] > 0.0) & (nx + half_w[s] < self.width)
                oky = (ny - half_h[s] > 0.0) & (ny + half_h[s] < self.height)
                pl.x[s] = np.where(okx, nx, pl.x[s])
                pl.y[s] = np.where(oky, ny, pl.y[s])
        return pl

    def _repulsion(self, pl, mac, half_w, half_h, reach, n_obj):
        """Sum over overlapping pairs of the unit vectors pushing each macro away [n_obj] x 2."""
        pts = np.stack([pl.x[mac], pl.y[mac]], 1)
        pairs = cKDTree(pts).query_pairs(reach, p=np.inf, output_type="ndarray")
        rx, ry = np.zeros(n_obj), np.zeros(n_obj)
        if len(pairs) == 0:
            return rx, ry
        u, v = mac[pairs[:, 0]], mac[pairs[:, 1]]
        lo, hi = np.minimum(u, v), np.maximum(u, v)
        dx, dy = pl.x[lo] - pl.x[hi], pl.y[lo] - pl.y[hi]
        over = (np.abs(dx) < half_w[lo] + half_w[hi]) & (np.abs(dy) < half_h[lo] + half_h[hi])
        lo, hi, dx, dy = lo[over], hi[over], dx[over], dy[over]
        dist = np.hypot(dx, dy)
        same = dist == 0
        ux = np.where(same, -1 / np.sqrt(2), dx / np.where(same, 1.0, dist))
        uy = np.where(same, -1 / np.sqrt(2), dy / np.where(same, 1.0, dist))
        rx += np.bincount(lo, ux, n_obj) - np.bincount(hi, ux, n_obj)
        ry += np.bincount(lo, uy, n_obj) - np.bincount(hi, uy, n_obj)
        return rx, ry


def place_soft_macros(netlist: Netlist, header: PlcHeader, placement: Placement, **kw) -> Placement:
    """One-shot :meth:`ForceDirected.place`."""
    return ForceDirected(netlist, header).place(placement, **kw)
