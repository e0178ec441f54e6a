"""circuit_training's proxy cost (wirelength, density, congestion), vectorised, with
incremental updates for moving, swapping and flipping one macro.

Conventions (those of circuit_training's ``plc_wrapper``, as documented by TILOS
MacroPlacement's open reimplementation ``plc_client_os.py`` and pinned down by the costs
and maps recorded in the header of ariane133's ``initial.plc``; on generated netlists with
every pin inside the canvas the three costs equal ``plc_client_os``'s to 1e-15). Canvas W x H microns, grid of ``cols`` x ``rows``
cells of gw = W / cols by gh = H / rows; cell (r, c) covers [c gw, (c+1) gw) x
[r gh, (r+1) gh); maps are [rows, cols], row 0 at the bottom.

Pins. A port's pin is the port; a soft-macro pin sits at the cluster centre; a
hard-macro pin at centre + ORIENT_MATRIX[orientation] @ (x_offset, y_offset).

Wirelength. Per net (driver + sinks), HPWL = (max x - min x) + (max y - min y) of its
pins; wirelength = sum of weight x HPWL; wirelength cost = wirelength /
((W + H) x sum of net weights). Positions are used as they are, inside the canvas or not.

Density. Each macro (hard and soft) adds its area of overlap with each cell (only the
part inside the canvas counts); density = overlap / cell area; density cost = 0.5 x the
mean of the densest cells: k = floor(0.1 x rows x cols) and the cost is 0.5 x (sum of
the k largest cell densities) / k; with fewer than 10 cells, 0.5 x the mean over non-empty
cells (TILOS' code; its prose says the densest cell).

Congestion. Routing is estimated between grid cells:

* a pin's cell is (floor(y / gh), floor(x / gw)) (a pin on the top or right edge of the
  canvas in the last row or column); a net with any pin outside the canvas is not routed
  at all. This is what reproduces the congestion cost *and* both digit
  maps in the header of ariane133's initial.plc, where 18 hard macros lie partly or
  wholly outside the canvas (clamping such pins to the border cells gives 0.7157 and
  15 wrong map digits; dropping only the outside pins gives 0.7138 and 7);
* a net is reduced to its set of distinct cells; its routing weight is its weight if
  > 1, else 1; 2 cells: an L route from the driver's cell (rs, cs) to the other (rt, ct):
  horizontal usage on row rs for columns [min(cs, ct), max(cs, ct)), vertical usage on
  column ct for rows [min(rs, rt), max(rs, rt)); 3 cells: sorted by (column, row) as
  (x1,y1), (x2,y2), (x3,y3): if x1 < x2 < x3 and y2 strictly between y1 and y3, two L's
  (H row y1 [x1,x2), H row y2 [x2,x3), V col x2 between y1,y2, V col x3 between y2,y3);
  elif x2 == x3, x1 < x2 and y1 < min(y2, y3): H row y1 [x1,x2), V col x2 [y1, max(y2,
  y3)); elif y2 == y3: H row y1 [x1,x2), H row y2 [x2,x3), V col x2 between y1,y2; else
  a T: sorted by (row, column), H row y2 [min x, max x), V col x1 between y1,y2, V col x3
  between y2,y3; more than 3 cells: a two-cell route from the driver's cell to each
  other cell (star);
* usage is divided by the cell's capacity: horizontal by gh x hroutes_per_micron,
  vertical by gw x vroutes_per_micron; then smoothed with range k = smooth_range:
  each cell's vertical value is spread evenly over the cells of its row within k columns,
  each horizontal value over the cells of its column within k rows (clipped at the edge);
* hard macros block routing: for each cell in the macro's (clamped) cell range with
  overlap lengths lx, ly > 0, vertical += lx x vrouting_alloc / (gw x vroutes) and
  horizontal += ly x hrouting_alloc / (gh x hroutes); if the macro spans several rows and
  covers its bottom or top row only partly (|ly - gh| > 1e-5 in some cell of those rows),
  its vertical blockage in the top row is dropped; likewise, spanning several columns and
  partly covering its left or right column drops its horizontal blockage in the right
  column. Macros wholly below or left of the canvas block nothing.
* congestion cost = mean of the top floor(0.05 x 2 rows cols) values of the
  concatenated horizontal and vertical maps (the maximum if that count is 0).

Proxy cost = w_wl x wirelength cost + w_density x density cost + w_congestion x
congestion cost; :data:`TILOS_WEIGHTS` = (1, 0.5, 0.5) is what this project reports,
:data:`CIRCUIT_TRAINING_WEIGHTS` = (1, 1, 0.5) is circuit_training's environment default.

Incremental updates (:meth:`PlacementCost.move`, ``swap``, ``flip``) recompute only the
bounding boxes and routes of the nets touching the moved macro(s) and subtract / add
the macro's density and blockage; the result equals a full recomputation up to
floating-point rounding of the running sums (tested to 1e-9 relative).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from systems_envs.chip.netlist import HARD, ORIENT_MATRIX, PORT, Netlist
from systems_envs.chip.plc import PlcHeader, Placement

TILOS_WEIGHTS = (1.0, 0.5, 0.5)
CIRCUIT_TRAINING_WEIGHTS = (1.0, 1.0, 0.5)


@dataclass(frozen=True)
class CostBreakdown:
    """The three normalised costs, their weighted sum, and the raw wirelength (microns)."""

    wirelength_cost: float
    density_cost: float
    congestion_cost: float
    proxy_cost: float
    wirelength: float

    def as_dict(self) -> dict:
        return {k: float(getattr(self, k)) for k in
                ("wirelength_cost", "density_cost", "congestion_cost", "proxy_cost", "wirelength")}


def top_mean(values: np.ndarray, fraction: float) -> float:
    """Mean of the floor(fraction x n) largest values (the maximum if that is 0)."""
    v = values.ravel()
    k = int(np.floor(len(v) * fraction))
    if k == 0:
        return float(v.max())
    return float(np.partition(v, len(v) - k)[len(v) - k:].sum() / k)


class Grid:
    """The gridded canvas of a header: cell sizes and cell lookups."""

    def __init__(self, header: PlcHeader):
        self.cols, self.rows = int(header.columns), int(header.rows)
        self.width, self.height = float(header.width), float(header.height)
        self.gw, self.gh = self.width / self.cols, self.height / self.rows
        self.num_cells = self.cols * self.rows
        self._edges = {"x": np.arange(self.cols + 1) * self.gw, "y": np.arange(self.rows + 1) * self.gh}
        self._idx = {"x": np.arange(self.cols)[None, :], "y": np.arange(self.rows)[None, :]}

    def cell_rc(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) = (floor(y / gh), floor(x / gw)) of points, possibly outside the grid;
        a point on the top (right) edge of the canvas is in the top row (right column)."""
        r = np.floor(y / self.gh).astype(np.int64)
        c = np.floor(x / self.gw).astype(np.int64)
        r = np.where((r == self.rows) & (y <= self.height), self.rows - 1, r)
        c = np.where((c == self.cols) & (x <= self.width), self.cols - 1, c)
        return r, c

    def overlaps(self, lo: np.ndarray, hi: np.ndarray, axis: str) -> tuple[np.ndarray, np.ndarray]:
        """Overlap lengths [M, n] of intervals [lo, hi) with the columns (axis 'x') or rows
        ('y'), restricted to circuit_training's clamped cell range, and that range [M, 2]."""
        g, n = (self.gw, self.cols) if axis == "x" else (self.gh, self.rows)
        edges = self._edges[axis]
        ov = np.minimum(hi[:, None], edges[None, 1:]) - np.maximum(lo[:, None], edges[None, :-1])
        first = np.floor(lo / g).astype(np.int64)
        last = np.floor(hi / g).astype(np.int64)
        skip = last < 0
        first, last = np.maximum(first, 0), np.minimum(last, n - 1)
        idx = self._idx[axis]
        inside = (idx >= first[:, None]) & (idx <= last[:, None]) & ~skip[:, None]
        return np.where(inside, ov, 0.0), np.stack([first, last, skip], 1)


class RouteModel:
    """circuit_training's grid routing estimate for sets of nets (see the module docstring)."""

    def __init__(self, grid: Grid):
        self.g = grid

    def usage(self, ptr: np.ndarray, cell_r: np.ndarray, cell_c: np.ndarray, weight: np.ndarray):
        """Horizontal and vertical routing usage [rows, cols] (route counts x weight, not
        yet divided by capacity) of nets in CSR form: entries ptr[i]:ptr[i+1] are net i's
        pin cells, the driver first; weight [n] routing weights."""
        g = self.g
        rows, cols = g.rows, g.cols
        n = len(ptr) - 1
        dh = np.zeros(rows * (cols + 1))
        dv = np.zeros((rows + 1) * cols)
        if n == 0:
            return dh.reshape(rows, cols + 1)[:, :cols], dv.reshape(rows + 1, cols)[:rows]
        lens = np.diff(ptr)
        net_of = np.repeat(np.arange(n), lens)
        out = (cell_r < 0) | (cell_r >= rows) | (cell_c < 0) | (cell_c >= cols)
        if out.any():   # a net with a pin outside the grid is not routed
            weight = np.where(np.bincount(net_of[out], minlength=n) > 0, 0.0, weight)
            cell_r, cell_c = np.clip(cell_r, 0, rows - 1), np.clip(cell_c, 0, cols - 1)
        cell = cell_r * cols + cell_c
        ukey = np.sort(net_of * g.num_cells + cell)
        ukey = ukey[np.concatenate(([True], ukey[1:] != ukey[:-1]))]    # np.unique, without its overhead
        unet, ucell = ukey // g.num_cells, ukey % g.num_cells
        k = np.bincount(unet, minlength=n)
        src = cell[ptr[:-1]]
        hs, vs = [], []   # segments: (row, a, b, w) horizontal on row, cols [a, b); (col, a, b, w)

        # two-cell and star (>3) nets: driver cell to every other distinct cell
        star = (k[unet] == 2) | (k[unet] > 3)
        sel = star & (ucell != src[unet])
        s, t, w = src[unet[sel]], ucell[sel], weight[unet[sel]]
        rs, cs, rt, ct = s // cols, s % cols, t // cols, t % cols
        hs.append((rs, np.minimum(cs, ct), np.maximum(cs, ct), w))
        vs.append((ct, np.minimum(rs, rt), np.maximum(rs, rt), w))

        # three-cell nets
        three = np.flatnonzero(k == 3)
        if len(three):
            starts = np.searchsorted(unet, three)
            c3 = ucell[starts[:, None] + np.arange(3)[None, :]]
            w3 = weight[three]
            R, C = c3 // cols, c3 % cols
            key = np.sort(C * rows + R, axis=1)     # sorted by (column, row)
            x, y = key // rows, key % rows
            x1, x2, x3, y1, y2, y3 = x[:, 0], x[:, 1], x[:, 2], y[:, 0], y[:, 1], y[:, 2]
            case_l = (x1 < x2) & (x2 < x3) & (np.minimum(y1, y3) < y2) & (np.maximum(y1, y3) > y2)
            case_b = ~case_l & (x2 == x3) & (x1 < x2) & (y1 < np.minimum(y2, y3))
            case_c = ~case_l & ~case_b & (y2 == y3)
            case_t = ~(case_l | case_b | case_c)
            m = case_l
            hs.append((y1[m], x1[m], x2[m], w3[m]))
            hs.append((y2[m], x2[m], x3[m], w3[m]))
            vs.append((x2[m], np.minimum(y1, y2)[m], np.maximum(y1, y2)[m], w3[m]))
            vs.append((x3[m], np.minimum(y2, y3)[m], np.maximum(y2, y3)[m], w3[m]))
            m = case_b
            hs.append((y1[m], x1[m], x2[m], w3[m]))
            vs.append((x2[m], y1[m], np.maximum(y2, y3)[m], w3[m]))
            m = case_c
            hs.append((y1[m], x1[m], x2[m], w3[m]))
            hs.append((y2[m], x2[m], x3[m], w3[m]))
            vs.append((x2[m], np.minimum(y1, y2)[m], np.maximum(y1, y2)[m], w3[m]))
            m = case_t
            if m.any():   # T: sorted by (row, column) (the unique cells already are)
                Rt, Ct, wt = R[m], C[m], w3[m]
                ty1, ty2, ty3 = Rt[:, 0], Rt[:, 1], Rt[:, 2]
                tx1, tx3 = Ct[:, 0], Ct[:, 2]
                hs.append((ty2, Ct.min(1), Ct.max(1), wt))
                vs.append((tx1, np.minimum(ty1, ty2), np.maximum(ty1, ty2), wt))
                vs.append((tx3, np.minimum(ty2, ty3), np.maximum(ty2, ty3), wt))

        r, a, b, w = (np.concatenate(z) for z in zip(*hs))
        dh += np.bincount(r * (cols + 1) + a, w, rows * (cols + 1)) - np.bincount(r * (cols + 1) + b, w,
                                                                                   rows * (cols + 1))
        c, a, b, w = (np.concatenate(z) for z in zip(*vs))
        dv += np.bincount(a * cols + c, w, (rows + 1) * cols) - np.bincount(b * cols + c, w, (rows + 1) * cols)
        h = np.cumsum(dh.reshape(rows, cols + 1), axis=1)[:, :cols]
        v = np.cumsum(dv.reshape(rows + 1, cols), axis=0)[:rows]
        return h, v


class PlacementCost:
    """The proxy cost of a placement of ``netlist`` under ``header``'s settings, kept up
    to date under moves (see the module docstring).

    Args:
      netlist: the netlist. header: canvas, grid, routing settings (a .plc header).
      placement: initial positions (default: the netlist's own).
      weights: (wirelength, density, congestion) weights of the proxy cost.
    """

    def __init__(self, netlist: Netlist, header: PlcHeader, placement: Placement | None = None,
                 weights=TILOS_WEIGHTS):
        if not (header.hroutes_per_micron > 0 and header.vroutes_per_micron > 0):
            raise ValueError("the .plc header has no routing capacity ('Routes per micron, hor : H  ver : V')")
        self.nl = netlist
        self.header = header
        self.grid = Grid(header)
        self.routes = RouteModel(self.grid)
        self.weights = tuple(float(w) for w in weights)
        nl = netlist
        self.net_of_entry = np.repeat(np.arange(nl.num_nets), np.diff(nl.net_ptr))
        self.route_weight = np.where(nl.net_weight > 1, nl.net_weight, 1.0)
        self.macros = np.flatnonzero(nl.obj_kind != PORT)
        self._macro_row = np.full(nl.num_objects, -1)
        self._macro_row[self.macros] = np.arange(len(self.macros))
        self.is_hard = nl.obj_kind == HARD
        # pins of each object, nets of each object (CSR)
        order = np.argsort(nl.pin_obj, kind="stable")
        self._obj_pin_ptr = np.concatenate([[0], np.cumsum(np.bincount(nl.pin_obj, minlength=nl.num_objects))])
        self._obj_pins = order
        self._sub_cache: dict = {}
        self.h_cap = self.grid.gh * header.hroutes_per_micron
        self.v_cap = self.grid.gw * header.vroutes_per_micron
        self.set_placement(placement if placement is not None else Placement.from_netlist(nl))

    # ---------------------------------------------------------------- full evaluation
    def set_placement(self, placement: Placement) -> None:
        """Adopt ``placement`` (copied) and recompute every cache from scratch."""
        self.pl = placement.copy()
        nl = self.nl
        self.pin_x, self.pin_y = self._pin_xy(np.arange(len(nl.pin_obj)))
        self.pin_r, self.pin_c = self.grid.cell_rc(self.pin_x, self.pin_y)
        self.net_hpwl = self._hpwl(nl.net_ptr, nl.net_pins)
        self._wl = float((nl.net_weight * self.net_hpwl).sum())
        self.route_h, self.route_v = self.routes.usage(nl.net_ptr, self.pin_r[nl.net_pins], self.pin_c[nl.net_pins],
                                                       self.route_weight)
        self._obj_area, self._obj_bh, self._obj_bv = self._macro_maps(self.macros)
        self.density_area = self._obj_area.sum(0)
        self.block_h, self.block_v = self._obj_bh.sum(0), self._obj_bv.sum(0)
        self._undo = None

    def _pin_xy(self, pins: np.ndarray):
        nl, pl = self.nl, self.pl
        obj = nl.pin_obj[pins]
        m = ORIENT_MATRIX[pl.orient[obj]]
        dx, dy = nl.pin_dx[pins], nl.pin_dy[pins]
        return (pl.x[obj] + m[:, 0, 0] * dx + m[:, 0, 1] * dy,
                pl.y[obj] + m[:, 1, 0] * dx + m[:, 1, 1] * dy)

    def _hpwl(self, ptr: np.ndarray, pins: np.ndarray) -> np.ndarray:
        ex, ey = self.pin_x[pins], self.pin_y[pins]
        s = ptr[:-1]
        return (np.maximum.reduceat(ex, s) - np.minimum.reduceat(ex, s)
                + np.maximum.reduceat(ey, s) - np.minimum.reduceat(ey, s))

    def _boxes(self, objs: np.ndarray):
        pl, nl = self.pl, self.nl
        w, h = nl.obj_width[objs], nl.obj_height[objs]
        return pl.x[objs] - w / 2, pl.x[objs] + w / 2, pl.y[objs] - h / 2, pl.y[objs] + h / 2

    def _macro_maps(self, objs: np.ndarray):
        """Per-object maps [len(objs), rows, cols]: overlap area with each cell (density), and
        for hard macros the normalised horizontal and vertical routing blockage."""
        g = self.grid
        x0, x1, y0, y1 = self._boxes(objs)
        ox, cr = g.overlaps(x0, x1, "x")
        oy, rr = g.overlaps(y0, y1, "y")
        area = np.maximum(oy, 0)[:, :, None] * np.maximum(ox, 0)[:, None, :]
        hard = self.is_hard[objs]
        col_in = (np.arange(g.cols)[None] >= cr[:, :1]) & (np.arange(g.cols)[None] <= cr[:, 1:2])
        row_in = (np.arange(g.rows)[None] >= rr[:, :1]) & (np.arange(g.rows)[None] <= rr[:, 1:2])
        keep = ~(cr[:, 2] | rr[:, 2]).astype(bool) & hard
        col_in &= keep[:, None]
        row_in &= keep[:, None]
        px, py = ox > 0, oy > 0
        # partial cover of the first/last row (column), as seen cell by cell
        m = np.arange(len(objs))
        bl_r, ur_r, bl_c, ur_c = rr[:, 0], rr[:, 1], cr[:, 0], cr[:, 1]
        any_cell = col_in.any(1) & row_in.any(1)
        br, ur = np.clip(bl_r, 0, g.rows - 1), np.clip(ur_r, 0, g.rows - 1)
        bc, uc = np.clip(bl_c, 0, g.cols - 1), np.clip(ur_c, 0, g.cols - 1)
        ydev = lambda r: np.abs(np.where(py[m, r], oy[m, r], 0.0) - g.gh) > 1e-5  # noqa: E731
        xdev = lambda c: np.abs(np.where(px[m, c], ox[m, c], 0.0) - g.gw) > 1e-5  # noqa: E731
        x_gap = (col_in & ~px).any(1)     # a cell of the range with no x overlap: its y overlap reads 0
        y_gap = (row_in & ~py).any(1)
        part_v = (ur_r != bl_r) & any_cell & (x_gap | ydev(br) | ydev(ur))
        part_h = (ur_c != bl_c) & any_cell & (y_gap | xdev(bc) | xdev(uc))
        lx = np.where(px & col_in, ox, 0.0) * (self.header.vrouting_alloc / self.v_cap)
        ly = np.where(py & row_in, oy, 0.0) * (self.header.hrouting_alloc / self.h_cap)
        v_rows = (py & row_in) & ~(part_v[:, None] & (np.arange(g.rows)[None] == ur_r[:, None]))
        h_cols = (px & col_in) & ~(part_h[:, None] & (np.arange(g.cols)[None] == ur_c[:, None]))
        v = v_rows[:, :, None] * lx[:, None, :]
        h = ly[:, :, None] * h_cols[:, None, :]
        return area, h, v

    # ---------------------------------------------------------------- costs from caches
    def congestion_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """Horizontal and vertical congestion [rows, cols] (routing smoothed + blockage)."""
        h = self.route_h / self.h_cap
        v = self.route_v / self.v_cap
        k = int(self.header.smooth_range)
        if k > 0:
            h, v = _smooth(h, k, axis=0), _smooth(v, k, axis=1)
        return h + self.block_h, v + self.block_v

    def density_map(self) -> np.ndarray:
        """Cell density [rows, cols] (overlap area / cell area)."""
        return self.density_area / (self.grid.gw * self.grid.gh)

    def wirelength(self) -> float:
        """Weighted HPWL, microns (a running sum under moves)."""
        return self._wl

    def costs(self) -> CostBreakdown:
        wl = self.wirelength()
        g = self.grid
        wl_cost = wl / ((g.width + g.height) * max(self.nl.net_count, 1e-300)) if self.nl.num_nets else 0.0
        d = self.density_map().ravel()
        if len(d) < 10:
            occ = d[d != 0]
            dens = 0.5 * float(occ.mean()) if len(occ) else 0.0
        else:
            dens = 0.5 * top_mean(d, 0.1)
        h, v = self.congestion_maps()
        cong = top_mean(np.concatenate([v.ravel(), h.ravel()]), 0.05)
        w = self.weights
        return CostBreakdown(wl_cost, dens, cong, w[0] * wl_cost + w[1] * dens + w[2] * cong, wl)

    # ---------------------------------------------------------------- incremental moves
    def _sub(self, objs: tuple):
        """(pins of objs, nets touching them, their CSR ptr and entries) — cached."""
        hit = self._sub_cache.get(objs)
        if hit is None:
            nl = self.nl
            pins = np.concatenate([self._obj_pins[self._obj_pin_ptr[o]:self._obj_pin_ptr[o + 1]] for o in objs])
            on = np.isin(nl.pin_obj[nl.net_pins], np.array(objs))
            nets = np.unique(self.net_of_entry[on])
            lens = nl.net_ptr[nets + 1] - nl.net_ptr[nets]
            ptr = np.concatenate([[0], np.cumsum(lens)])
            entries = nl.net_pins[np.repeat(nl.net_ptr[nets] - ptr[:-1], lens) + np.arange(ptr[-1])]
            hit = (pins, nets, ptr, entries)
            if len(self._sub_cache) < 16384:   # every hard-macro pair of ariane133 (8,778) fits
                self._sub_cache[objs] = hit
        return hit

    def _apply(self, objs: tuple, x, y, orient) -> None:
        pins, nets, ptr, entries = self._sub(objs)
        oa = np.array(objs)
        rows = self._macro_row[oa]
        rows = rows[rows >= 0]
        hard = bool(self.is_hard[oa].any())
        # a flip leaves the boxes where they are: density and blockage maps unchanged
        if (self.pl.x[oa] == x).all() and (self.pl.y[oa] == y).all():
            rows = rows[:0]
        # what this move overwrites, so that undo() restores it exactly
        self._undo = (oa, self.pl.x[oa], self.pl.y[oa], self.pl.orient[oa], pins, self.pin_x[pins],
                      self.pin_y[pins], self.pin_r[pins], self.pin_c[pins], nets, self.net_hpwl[nets],
                      self._wl, self.route_h, self.route_v, rows, self._obj_area[rows], self.density_area,
                      (self._obj_bh[rows], self._obj_bv[rows], self.block_h, self.block_v) if hard else None)
        old_r, old_c = self.pin_r[entries], self.pin_c[entries]
        self.pl.x[oa], self.pl.y[oa], self.pl.orient[oa] = x, y, orient
        self.pin_x[pins], self.pin_y[pins] = self._pin_xy(pins)
        self.pin_r[pins], self.pin_c[pins] = self.grid.cell_rc(self.pin_x[pins], self.pin_y[pins])
        hpwl = self._hpwl(ptr, entries)
        self._wl += float(self.nl.net_weight[nets] @ (hpwl - self.net_hpwl[nets]))
        self.net_hpwl[nets] = hpwl
        new_r, new_c = self.pin_r[entries], self.pin_c[entries]
        changed = (old_r != new_r) | (old_c != new_c)
        if changed.any():
            # re-route only the nets with a pin in a new cell: old routes with weight -w and new
            # ones with +w, in one pass (new arrays: undo keeps the old)
            moved = np.logical_or.reduceat(changed, ptr[:-1])
            w = self.route_weight[nets]
            if not moved.all():
                keep = np.repeat(moved, np.diff(ptr))
                old_r, old_c, new_r, new_c = old_r[keep], old_c[keep], new_r[keep], new_c[keep]
                w = w[moved]
                ptr = np.concatenate([[0], np.cumsum(np.diff(ptr)[moved])])
            both = np.concatenate([ptr, ptr[1:] + ptr[-1]])
            dh, dv = self.routes.usage(both, np.concatenate([old_r, new_r]), np.concatenate([old_c, new_c]),
                                       np.concatenate([-w, w]))
            self.route_h = self.route_h + dh
            self.route_v = self.route_v + dv
        if len(rows) and hard:
            area, bh, bv = self._macro_maps(self.macros[rows])
            self.block_h = self.block_h + (bh - self._obj_bh[rows]).sum(0)
            self.block_v = self.block_v + (bv - self._obj_bv[rows]).sum(0)
            self._obj_bh[rows], self._obj_bv[rows] = bh, bv
        elif len(rows) == 1:   # one soft macro: no routing blockage, only its density
            area = self._area_one(int(oa[0]))
        elif len(rows):
            area = self._areas(self.macros[rows])
        if len(rows):
            self.density_area = self.density_area + (area - self._obj_area[rows]).sum(0)
            self._obj_area[rows] = area

    def undo(self) -> None:
        """Restore every cache to its state before the last move / swap / flip (exactly, not
        by moving back); only one step back."""
        if self._undo is None:
            raise RuntimeError("PlacementCost.undo: no move to undo (one step back at most)")
        (oa, x, y, o, pins, px, py, pr, pcol, nets, hpwl, self._wl, self.route_h, self.route_v, rows, area,
         self.density_area, blk) = self._undo
        self.pl.x[oa], self.pl.y[oa], self.pl.orient[oa] = x, y, o
        self.pin_x[pins], self.pin_y[pins], self.pin_r[pins], self.pin_c[pins] = px, py, pr, pcol
        self.net_hpwl[nets] = hpwl
        self._obj_area[rows] = area
        if blk is not None:
            self._obj_bh[rows], self._obj_bv[rows], self.block_h, self.block_v = blk
        self._undo = None

    def _area_one(self, obj: int) -> np.ndarray:
        """:meth:`_areas` of one object [1, rows, cols], the same numbers, computed only over
        its clamped cell range (scalar bounds instead of [1, n] masks)."""
        g, nl, pl = self.grid, self.nl, self.pl
        x, y, w, h = float(pl.x[obj]), float(pl.y[obj]), float(nl.obj_width[obj]), float(nl.obj_height[obj])
        out = np.zeros((1, g.rows, g.cols))
        spans = []
        for lo, hi, step, n, edges in ((x - w / 2, x + w / 2, g.gw, g.cols, g._edges["x"]),
                                       (y - h / 2, y + h / 2, g.gh, g.rows, g._edges["y"])):
            first, last = int(np.floor(lo / step)), int(np.floor(hi / step))
            if last < 0:
                return out
            first, last = max(first, 0), min(last, n - 1)
            if first > last:
                return out
            ov = np.minimum(hi, edges[first + 1:last + 2]) - np.maximum(lo, edges[first:last + 1])
            spans.append((first, last, np.maximum(ov, 0.0)))
        (c0, c1, ox), (r0, r1, oy) = spans
        out[0, r0:r1 + 1, c0:c1 + 1] = oy[:, None] * ox[None, :]
        return out

    def _areas(self, objs: np.ndarray) -> np.ndarray:
        """Overlap area [len(objs), rows, cols] of each object with each cell (density only)."""
        x0, x1, y0, y1 = self._boxes(objs)
        ox, _ = self.grid.overlaps(x0, x1, "x")
        oy, _ = self.grid.overlaps(y0, y1, "y")
        return np.maximum(oy, 0)[:, :, None] * np.maximum(ox, 0)[:, None, :]

    def move(self, obj: int, x: float, y: float) -> None:
        """Move object ``obj``'s centre to (x, y) microns."""
        self._apply((int(obj),), x, y, self.pl.orient[obj])

    def flip(self, obj: int, orient: int) -> None:
        """Set object ``obj``'s orientation (index into ORIENTATIONS)."""
        self._apply((int(obj),), self.pl.x[obj], self.pl.y[obj], orient)

    def swap(self, a: int, b: int) -> None:
        """Exchange the centres of objects ``a`` and ``b``."""
        a, b = int(a), int(b)
        key = (a, b) if a < b else (b, a)
        xs = np.array([self.pl.x[key[1]], self.pl.x[key[0]]])
        ys = np.array([self.pl.y[key[1]], self.pl.y[key[0]]])
        self._apply(key, xs, ys, self.pl.orient[list(key)])


def _smooth(m: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Spread each value evenly over the cells within ``k`` along ``axis`` (clipped)."""
    n = m.shape[axis]
    idx = np.arange(n)
    lo, hi = np.maximum(idx - k, 0), np.minimum(idx + k, n - 1)
    share = 1.0 / (hi - lo + 1)
    # out[j] = sum_i m[i] * share[i] for |i - j| <= k
    a = (np.abs(idx[:, None] - idx[None, :]) <= k) * share[:, None]    # [i, j]
    return (a.T @ m) if axis == 0 else (m @ a)


def evaluate(netlist: Netlist, header: PlcHeader, placement: Placement | None = None,
             weights=TILOS_WEIGHTS) -> CostBreakdown:
    """The proxy cost of one placement (a full evaluation)."""
    return PlacementCost(netlist, header, placement, weights).costs()
