"""Legal hard-macro positions: inside the canvas, no positive-area overlap between hard macros.

Grid cells are numbered ``row * cols + col``; a macro placed "on a cell" has its centre
at the cell's centre (circuit_training's convention). Soft macros may overlap anything
(the density cost accounts for them).
"""
from __future__ import annotations

import numpy as np

from systems_envs.chip.netlist import HARD, Netlist
from systems_envs.chip.plc import PlcHeader, Placement


def cell_centres(header: PlcHeader) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) [cols * rows] centres of the grid cells, microns, index row * cols + col."""
    gw, gh = header.width / header.columns, header.height / header.rows
    r, c = np.divmod(np.arange(header.columns * header.rows), header.columns)
    return (c + 0.5) * gw, (r + 0.5) * gh


def fits_canvas(x, y, w, h, header: PlcHeader) -> np.ndarray:
    """Whether boxes of size w x h centred at (x, y) lie inside the canvas."""
    return (x - w / 2 >= 0) & (x + w / 2 <= header.width) & (y - h / 2 >= 0) & (y + h / 2 <= header.height)


def overlaps_any(x, y, w, h, px, py, pw, ph) -> np.ndarray:
    """[len(x)] whether each box (x, y, w, h) overlaps (positive area) any box of (px, py, pw, ph)."""
    x, y = np.atleast_1d(x), np.atleast_1d(y)
    if len(px) == 0:
        return np.zeros(len(x), bool)
    ox = np.abs(x[:, None] - px[None, :]) < (w + pw[None, :]) / 2
    oy = np.abs(y[:, None] - py[None, :]) < (h + ph[None, :]) / 2
    return (ox & oy).any(1)


def legal_cells(nl: Netlist, header: PlcHeader, pl: Placement, obj: int, placed: np.ndarray) -> np.ndarray:
    """[cols * rows] bool: cells where hard macro ``obj`` fits inside the canvas without
    overlapping the hard macros flagged in ``placed`` (a bool [O] mask)."""
    cx, cy = cell_centres(header)
    w, h = nl.obj_width[obj], nl.obj_height[obj]
    ok = fits_canvas(cx, cy, w, h, header)
    others = np.flatnonzero(placed & (nl.obj_kind == HARD) & (np.arange(nl.num_objects) != obj))
    if len(others) and ok.any():
        idx = np.flatnonzero(ok)
        ok[idx] = ~overlaps_any(cx[idx], cy[idx], w, h, pl.x[others], pl.y[others],
                                nl.obj_width[others], nl.obj_height[others])
    return ok


def is_legal(nl: Netlist, header: PlcHeader, pl: Placement) -> bool:
    """Every hard macro inside the canvas and no two hard macros overlapping."""
    return not illegal_macros(nl, header, pl).size


def illegal_macros(nl: Netlist, header: PlcHeader, pl: Placement) -> np.ndarray:
    """Object indices of hard macros outside the canvas or overlapping another hard macro."""
    hard = nl.hard
    x, y, w, h = pl.x[hard], pl.y[hard], nl.obj_width[hard], nl.obj_height[hard]
    bad = ~fits_canvas(x, y, w, h, header)
    ox = np.abs(x[:, None] - x[None, :]) < (w[:, None] + w[None, :]) / 2
    oy = np.abs(y[:, None] - y[None, :]) < (h[:, None] + h[None, :]) / 2
    ov = ox & oy
    np.fill_diagonal(ov, False)
    return hard[bad | ov.any(1)]


def macro_order(nl: Netlist) -> np.ndarray:
    """circuit_training's placement order: hard macros by area, largest first, ties in
    netlist order (a stable sort)."""
    hard = nl.hard
    return hard[np.argsort(-(nl.obj_width[hard] * nl.obj_height[hard]), kind="stable")]


def legalize(nl: Netlist, header: PlcHeader, pl: Placement, resolution: int = 4) -> Placement:
    """A legal placement near ``pl``: hard macros in :func:`macro_order`, each kept where it
    is if legal, else moved to the nearest legal position of a grid ``resolution`` times
    finer than the placement grid (positions clamped into the canvas first).

    Raises ValueError if some macro has no legal position left.
    """
    out = pl.copy()
    placed = np.zeros(nl.num_objects, bool)
    fine = PlcHeader(columns=header.columns * resolution, rows=header.rows * resolution,
                     width=header.width, height=header.height)
    fx, fy = cell_centres(fine)
    for m in macro_order(nl):
        w, h = nl.obj_width[m], nl.obj_height[m]
        x = float(np.clip(out.x[m], w / 2, header.width - w / 2))
        y = float(np.clip(out.y[m], h / 2, header.height - h / 2))
        others = np.flatnonzero(placed)
        args = (out.x[others], out.y[others], nl.obj_width[others], nl.obj_height[others])
        if not overlaps_any(x, y, w, h, *args)[0] and fits_canvas(x, y, w, h, header):
            out.x[m], out.y[m] = x, y
        else:
            ok = fits_canvas(fx, fy, w, h, header)
            idx = np.flatnonzero(ok)
            idx = idx[~overlaps_any(fx[idx], fy[idx], w, h, *args)]
            if len(idx) == 0:
                raise ValueError(f"legalize: no legal position left for macro {nl.obj_name[m]!r}")
            best = idx[np.argmin(np.hypot(fx[idx] - x, fy[idx] - y))]
            out.x[m], out.y[m] = fx[best], fy[best]
        placed[m] = True
    return out
