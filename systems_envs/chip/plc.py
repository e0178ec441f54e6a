"""circuit_training's ``.plc`` placement files: a ``#`` header and one line per object.

Header lines read (the spelling circuit_training writes and its ``placement_util``
parses; any other ``#`` line is a comment)::

    # Columns : 24  Rows : 21
    # Width : 1433.406  Height : 1433.406
    # Routes per micron, hor : 57.031  ver : 56.818
    # Routes used by macros, hor : 39.583  ver : 30.303
    # Smoothing factor : 0
    # Overlap threshold : 0
    # Block : ...   # Project : ...
    # Wirelength : ...  # Wirelength cost : ...  # Congestion cost : ...  # Density cost : ...

and, when present, the digit maps ``Horizontal Routing Congestion`` / ``Vertical Routing
Congestion`` (one character per grid cell, top row first). Body lines are
``node_index x y orientation fixed`` (orientation ``-`` for ports). When a placement is
restored the canvas is the header's Width x Height *as printed* (3 decimals), the grid
its Columns x Rows, and routes per micron, macro routing allocation, smoothing range
(floored to an integer) and overlap threshold come from the header, as circuit_training's
``placement_util`` did when ariane133's ``initial.plc`` was written; a setting the header
lacks takes ``create_placement_cost``'s default (:data:`CT_DEFAULTS`: routes per micron
70.33 / 74.51, macro allocation 51.79 / 51.79, smoothing 5, overlap threshold 0.004).

:func:`write_plc` writes the same header lines (costs with 4 decimals, wirelength with
3, sizes with 3, as circuit_training's writer) and lines ``index x y orient fixed`` with
coordinates printed as the shortest plain decimal that reads back to the same float, so a
written file loads back identically.
"""
from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass, field, replace

import numpy as np

from systems_envs.chip.netlist import HARD, ORIENTATIONS, PORT, SOFT, Netlist, NetlistError


#: circuit_training's ``create_placement_cost`` defaults, used for settings a header lacks.
CT_DEFAULTS = {"routes": (70.33, 74.51), "alloc": (51.79, 51.79), "smooth": (5,), "overlap": (4e-3,)}


class PlcError(NetlistError):
    """A ``.plc`` file that cannot be read or does not match its netlist."""


@dataclass(frozen=True)
class PlcHeader:
    """The settings a ``.plc`` header carries (lengths in microns)."""

    columns: int
    rows: int
    width: float
    height: float
    hroutes_per_micron: float = 0.0
    vroutes_per_micron: float = 0.0
    hrouting_alloc: float = 0.0
    vrouting_alloc: float = 0.0
    smooth_range: int = 0
    overlap_threshold: float = 0.0
    project: str = "unset_project"
    block: str = "unset_block"
    #: costs recorded in the header (None when absent): wirelength, wirelength_cost, ...
    recorded: dict = field(default_factory=dict)
    #: digit maps recorded in the header: name -> [rows, cols] array of str (row 0 = bottom).
    maps: dict = field(default_factory=dict)

    def settings(self) -> "PlcHeader":
        """This header without the recorded costs and maps."""
        return replace(self, recorded={}, maps={})


@dataclass
class Placement:
    """Positions of every object of a netlist.

    x, y: [O] float64 object centres (microns); orient: [O] int8 index into
    :data:`~systems_envs.chip.netlist.ORIENTATIONS`; fixed: [O] bool.
    """

    x: np.ndarray
    y: np.ndarray
    orient: np.ndarray
    fixed: np.ndarray

    @classmethod
    def from_netlist(cls, nl: Netlist) -> "Placement":
        """The positions written in the netlist itself (ports fixed)."""
        return cls(nl.obj_x.copy(), nl.obj_y.copy(), nl.obj_orient.copy(), nl.obj_kind == PORT)

    def copy(self) -> "Placement":
        return Placement(self.x.copy(), self.y.copy(), self.orient.copy(), self.fixed.copy())


_NUM = r"([-+0-9.eE]+)"
_PATTERNS = {
    "grid": re.compile(r"Columns\s*:\s*(\d+)\s+Rows\s*:\s*(\d+)"),
    "size": re.compile(rf"Width\s*:\s*{_NUM}\s+Height\s*:\s*{_NUM}"),
    "routes": re.compile(rf"Routes per micron, hor\s*:\s*{_NUM}\s+ver\s*:\s*{_NUM}"),
    "alloc": re.compile(rf"Routes used by macros, hor\s*:\s*{_NUM}\s+ver\s*:\s*{_NUM}"),
    "smooth": re.compile(rf"Smoothing factor\s*:\s*{_NUM}"),
    "overlap": re.compile(rf"Overlap threshold\s*:\s*{_NUM}"),
    "project": re.compile(r"Project\s*:\s*(\S+)"),
    "block": re.compile(r"Block\s*:\s*(\S+)"),
}
_RECORDED = {
    "wirelength": re.compile(rf"^Wirelength\s*:\s*{_NUM}"),
    "wirelength_cost": re.compile(rf"^Wirelength cost\s*:\s*{_NUM}"),
    "congestion_cost": re.compile(rf"^Congestion cost\s*:\s*{_NUM}"),
    "density_cost": re.compile(rf"^Density cost\s*:\s*{_NUM}"),
}
_MAP_TITLES = {"Hard Macro Placements:": "hard_macros", "Overall Placement Density:": "density",
               "Horizontal Routing Congestion:": "h_congestion", "Vertical Routing Congestion:": "v_congestion"}


def read_plc(path: str, netlist: Netlist | None = None) -> tuple[PlcHeader, Placement | dict]:
    """Read a ``.plc`` file.

    Returns (header, placement). With ``netlist`` the body must place exactly the
    netlist's objects (ports, hard and soft macros) and a :class:`Placement` is returned
    (objects the file leaves out keep the netlist's position); without it, a dict
    {node index: (x, y, orientation index, fixed)}.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such .plc file")
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PlcError(f"{path}: cannot read ({e})") from None
    vals, recorded, maps, body = {}, {}, {}, {}
    current_map, map_rows = None, {}
    for ln, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            text = line[1:].strip()
            if text in _MAP_TITLES:
                current_map, map_rows = _MAP_TITLES[text], {}
                continue
            if current_map is not None:
                m = re.match(r"^\s*(\d+)\|(.*)\|$", line[1:])
                if m:
                    map_rows[int(m.group(1))] = m.group(2).split("|")
                elif text.startswith("-") and map_rows:
                    maps[current_map] = np.array([map_rows[r] for r in sorted(map_rows)])
                    current_map = None
                continue
            for key, pat in _PATTERNS.items():
                m = pat.search(text)
                if m:
                    vals[key] = m.groups()
            for key, pat in _RECORDED.items():
                m = pat.search(text)
                if m:
                    recorded[key] = float(m.group(1))
            continue
        parts = line.split()
        if len(parts) != 5:
            raise PlcError(f"{path}: line {ln}: expected 'index x y orientation fixed', got {line[:60]!r}")
        try:
            idx, x, y = int(parts[0]), float(parts[1]), float(parts[2])
            fixed = int(parts[4])
        except ValueError:
            raise PlcError(f"{path}: line {ln}: bad number in {line[:60]!r}") from None
        o = parts[3]
        if o != "-" and o not in ORIENTATIONS:
            raise PlcError(f"{path}: line {ln}: unknown orientation {o!r}")
        if not (np.isfinite(x) and np.isfinite(y)):
            raise PlcError(f"{path}: line {ln}: non-finite position")
        if idx in body:
            raise PlcError(f"{path}: line {ln}: node {idx} placed twice")
        body[idx] = (x, y, 0 if o == "-" else ORIENTATIONS.index(o), bool(fixed), ln)
    for need in ("grid", "size"):
        if need not in vals:
            what = "'Columns : C  Rows : R'" if need == "grid" else "'Width : W  Height : H'"
            raise PlcError(f"{path}: header lacks the {what} line")
    cols, rows = int(vals["grid"][0]), int(vals["grid"][1])
    width, height = float(vals["size"][0]), float(vals["size"][1])
    if cols <= 0 or rows <= 0 or not (width > 0 and height > 0):
        raise PlcError(f"{path}: header has a non-positive grid or canvas ({cols} x {rows}, {width} x {height})")
    f2 = lambda k, d: tuple(float(v) for v in vals.get(k, d))  # noqa: E731
    header = PlcHeader(
        columns=cols, rows=rows, width=width, height=height,
        hroutes_per_micron=f2("routes", CT_DEFAULTS["routes"])[0],
        vroutes_per_micron=f2("routes", CT_DEFAULTS["routes"])[1],
        hrouting_alloc=f2("alloc", CT_DEFAULTS["alloc"])[0], vrouting_alloc=f2("alloc", CT_DEFAULTS["alloc"])[1],
        smooth_range=int(np.floor(f2("smooth", CT_DEFAULTS["smooth"])[0])),
        overlap_threshold=f2("overlap", CT_DEFAULTS["overlap"])[0],
        project=vals.get("project", ("unset_project",))[0], block=vals.get("block", ("unset_block",))[0],
        recorded=recorded, maps=maps)
    if netlist is None:
        return header, {k: v[:4] for k, v in body.items()}
    return header, placement_from_body(body, netlist, path)


def placement_from_body(body: dict, nl: Netlist, path: str) -> Placement:
    """Apply {node index: (x, y, orient, fixed, line)} onto the netlist's own positions."""
    pl = Placement.from_netlist(nl)
    obj_of = nl.node_to_obj()
    for idx, (x, y, o, fixed, ln) in body.items():
        j = obj_of.get(idx)
        if j is None:
            what = (f"node {idx} ({nl.node_names[idx]!r}) is a pin, not a macro or port"
                    if 0 <= idx < len(nl.node_names) else f"node {idx} is not in the netlist")
            raise PlcError(f"{path}: line {ln}: {what} (does this .plc belong to {nl.name}?)")
        pl.x[j], pl.y[j], pl.fixed[j] = x, y, fixed
        if nl.obj_kind[j] != PORT:
            pl.orient[j] = o
    missing = [int(n) for n in nl.obj_node[np.isin(nl.obj_node, list(body), invert=True)]
               if nl.obj_kind[obj_of[int(n)]] != PORT]
    if missing:
        raise PlcError(f"{path}: does not place {len(missing)} macro(s) of {nl.name}, e.g. node {missing[0]} "
                       f"({nl.node_names[missing[0]]!r})")
    return pl


def _fmt(v: float) -> str:
    """Shortest decimal that reads back to the same float, never in exponent form (TILOS'
    and circuit_training's readers expect plain decimals)."""
    return np.format_float_positional(float(v), unique=True, trim="-")


def write_plc(path: str, nl: Netlist, pl: Placement, header: PlcHeader, costs: dict | None = None,
              source: str = "", comments: tuple = ()) -> None:
    """Write ``pl`` as a ``.plc`` file with circuit_training's header conventions.

    ``costs`` (optional) holds wirelength, wirelength_cost, congestion_cost, density_cost.
    """
    h = header
    kinds = nl.obj_kind
    lines = [
        "# Placement file for Circuit Training",
        f"# Source input file(s) : {source}",
        f"# This file : {path}",
        f"# Date : {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S')}",
        f"# Columns : {h.columns}  Rows : {h.rows}",
        f"# Width : {h.width:.3f}  Height : {h.height:.3f}",
        f"# Area (stdcell+macros) : {nl.total_area()!r}",
    ]
    if costs:
        lines += [f"# Wirelength : {costs['wirelength']:.3f}",
                  f"# Wirelength cost : {costs['wirelength_cost']:.4f}",
                  f"# Congestion cost : {costs['congestion_cost']:.4f}",
                  f"# Density cost : {costs['density_cost']:.4f}"]
    lines += [
        f"# Project : {h.project}",
        f"# Block : {h.block}",
        f"# Routes per micron, hor : {h.hroutes_per_micron:.3f}  ver : {h.vroutes_per_micron:.3f}",
        f"# Routes used by macros, hor : {h.hrouting_alloc:.3f}  ver : {h.vrouting_alloc:.3f}",
        f"# Smoothing factor : {int(h.smooth_range)}",
        f"# Overlap threshold : {h.overlap_threshold!r}",
        "# Use incremental cost : False",
        "# ",
        "# Counts of node types:",
        f"# HARD_MACROs     : {int((kinds == HARD).sum()):>9}",
        f"# HARD_MACRO_PINs : {int((kinds[nl.pin_obj] == HARD).sum()):>9}",
        f"# MACROs          : {int((kinds != PORT).sum()):>9}",
        f"# MACRO_PINs      : {int((kinds[nl.pin_obj] != PORT).sum()):>9}",
        f"# PORTs           : {int((kinds == PORT).sum()):>9}",
        f"# SOFT_MACROs     : {int((kinds == SOFT).sum()):>9}",
        f"# SOFT_MACRO_PINs : {int((kinds[nl.pin_obj] == SOFT).sum()):>9}",
        f"# STDCELLs        : {0:>9}",
        "# ",
    ]
    lines += [f"# {c}" for c in comments]
    lines.append("# node_index x y orientation fixed")
    for j in np.argsort(nl.obj_node, kind="stable"):
        o = "-" if kinds[j] == PORT else ORIENTATIONS[int(pl.orient[j])]
        lines.append(f"{int(nl.obj_node[j])} {_fmt(pl.x[j])} {_fmt(pl.y[j])} {o} {int(bool(pl.fixed[j]))}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
