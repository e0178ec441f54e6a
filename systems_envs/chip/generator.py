"""Synthetic clustered netlists, so learned placers see more than one chip.

:func:`generate_netlist` draws a netlist of ``num_hard`` hard macros, ``num_soft``
standard-cell clusters (soft macros), ``num_ports`` ports and ``num_nets`` nets:

* hard macros: width and height log-uniform in [hard_size / 2, 2 hard_size] microns,
  each with 4..16 pins at random offsets inside the macro; soft macros: square, area
  log-uniform in [soft_area / 4, 4 soft_area], one pin per 4 nets on average, at the centre;
* every object belongs to one of ``num_groups`` logic groups; a net's driver is a random
  pin (each pin drives at most one net, nets in driver order as in a file), its Geometric(0.4) (>= 1) sinks are pins of the same group with probability
  0.8, else anywhere (sinks on the driver's own macro are dropped); weights are 1 (80%) or 2..8 (always 1 for
  port-driven nets);
* canvas: square, side sqrt(total macro area / utilization); ports evenly spaced on
  the four edges (0.05 um inside); grid: about one cell per half a mean hard-macro area, clipped to
  [4, max_grid] per side; routing capacities and macro allocations those of ariane133
  (routes per micron hor 57.031 / ver 56.818, macros use 39.583 / 30.303);
* initial placement: hard and soft macros at the canvas centre (unplaced).

Same arguments and seed, same netlist.
"""
from __future__ import annotations

import numpy as np

from systems_envs.chip.netlist import HARD, PORT, SOFT, Netlist
from systems_envs.chip.plc import PlcHeader, Placement


def generate_netlist(num_hard: int = 16, num_soft: int = 64, num_ports: int = 32, num_nets: int = 400,
                     seed: int = 0, utilization: float = 0.6, hard_size: float = 60.0, soft_area: float = 900.0,
                     num_groups: int = 8, max_grid: int = 24) -> tuple[Netlist, PlcHeader, Placement]:
    """A random clustered netlist, its .plc header (canvas, grid, routing) and an initial placement."""
    for name, v in (("num_hard", num_hard), ("num_soft", num_soft), ("num_ports", num_ports),
                    ("num_nets", num_nets)):
        if v < 0 or (name == "num_hard" and v < 1):
            raise ValueError(f"generate_netlist: {name} must be {'>= 1' if name == 'num_hard' else '>= 0'}, got {v}")
    if not 0 < utilization < 1:
        raise ValueError(f"generate_netlist: utilization must be in (0, 1), got {utilization}")
    rng = np.random.default_rng(seed)
    hw = np.exp(rng.uniform(np.log(hard_size / 2), np.log(2 * hard_size), num_hard))
    hh = np.exp(rng.uniform(np.log(hard_size / 2), np.log(2 * hard_size), num_hard))
    sa = np.exp(rng.uniform(np.log(soft_area / 4), np.log(4 * soft_area), num_soft))
    ss = np.sqrt(sa)
    area = float((hw * hh).sum() + sa.sum())
    side = float(np.sqrt(area / utilization))
    side = max(side, 2.05 * max(hw.max(), hh.max()))
    n_cells = int(np.clip(round(np.sqrt(2 * side * side / (hw * hh).mean())), 4, max_grid))
    header = PlcHeader(columns=n_cells, rows=n_cells, width=round(side, 3), height=round(side, 3),
                       hroutes_per_micron=57.031, vroutes_per_micron=56.818,
                       hrouting_alloc=39.583, vrouting_alloc=30.303)
    side = header.width

    names, obj_node, kind, oname, ow, oh, ox, oy, side_of = [], [], [], [], [], [], [], [], []
    pin_obj, pin_dx, pin_dy, pin_node = [], [], [], []

    def add_node(name):
        names.append(name)
        return len(names) - 1

    # ports evenly on the four edges
    for i in range(num_ports):
        t = (i + 0.5) / max(num_ports, 1) * 4
        edge, f = int(t), t - int(t)
        lo, hi = 0.05, side - 0.05      # on the edge, 0.05 um inside (as ariane133's ports)
        x, y, s = [(lo, f * side, "LEFT"), (f * side, hi, "TOP"), (hi, (1 - f) * side, "RIGHT"),
                   ((1 - f) * side, lo, "BOTTOM")][edge]
        nid = add_node(f"port{i}")
        o = len(obj_node)
        obj_node.append(nid), kind.append(PORT), oname.append(f"port{i}"), ow.append(0.0), oh.append(0.0)
        ox.append(x), oy.append(y), side_of.append(s)
        pin_obj.append(o), pin_dx.append(0.0), pin_dy.append(0.0), pin_node.append(nid)
    for i in range(num_hard):
        nid = add_node(f"M{i}")
        o = len(obj_node)
        obj_node.append(nid), kind.append(HARD), oname.append(f"M{i}"), ow.append(hw[i]), oh.append(hh[i])
        ox.append(side / 2), oy.append(side / 2), side_of.append("")
        for k in range(int(rng.integers(4, 17))):
            pin_node.append(add_node(f"M{i}/p{k}"))
            pin_obj.append(o)
            pin_dx.append(float(np.round(rng.uniform(-0.45, 0.45) * hw[i], 3)))
            pin_dy.append(float(np.round(rng.uniform(-0.45, 0.45) * hh[i], 3)))
    soft_pins = max(1, num_nets // max(4 * max(num_soft, 1), 1))
    for i in range(num_soft):
        nid = add_node(f"Grp_{i}")
        o = len(obj_node)
        obj_node.append(nid), kind.append(SOFT), oname.append(f"Grp_{i}"), ow.append(ss[i]), oh.append(ss[i])
        ox.append(side / 2), oy.append(side / 2), side_of.append("")
        for k in range(int(rng.integers(1, 2 * soft_pins + 1))):
            pin_node.append(add_node(f"Grp_{i}/P{k}"))
            pin_obj.append(o), pin_dx.append(0.0), pin_dy.append(0.0)
    pin_obj = np.array(pin_obj, np.int64)
    n_obj = len(obj_node)
    group = rng.integers(0, num_groups, n_obj)
    pins_of_group = [np.flatnonzero(group[pin_obj] == g) for g in range(num_groups)]
    net_ptr, net_pins, net_weight = [0], [], []
    n_pins = len(pin_obj)
    pin_node = np.array(pin_node, np.int64)
    drivers = rng.choice(n_pins, size=min(num_nets, n_pins), replace=False)
    for d in drivers[np.argsort(pin_node[drivers])]:   # one net per driver pin, in file order
        d = int(d)
        k = int(rng.geometric(0.4))
        same = pins_of_group[group[pin_obj[d]]]
        sinks = []
        for _s in range(k):
            pool = same if (rng.random() < 0.8 and len(same) > 1) else None
            s = int(rng.choice(pool)) if pool is not None else int(rng.integers(n_pins))
            if pin_obj[s] != pin_obj[d]:
                sinks.append(s)
        if not sinks:
            continue
        net_pins += [d] + sinks
        net_ptr.append(len(net_pins))
        heavy = rng.random() >= 0.8
        net_weight.append(float(rng.integers(2, 9)) if heavy and kind[pin_obj[d]] != PORT else 1.0)
    nl = Netlist(
        name=f"synthetic_h{num_hard}_s{num_soft}_p{num_ports}_n{num_nets}_seed{seed}",
        node_names=tuple(names), obj_node=np.array(obj_node, np.int64), obj_kind=np.array(kind, np.int8),
        obj_name=tuple(oname), obj_width=np.array(ow), obj_height=np.array(oh), obj_x=np.array(ox),
        obj_y=np.array(oy), obj_orient=np.zeros(n_obj, np.int8), port_side=tuple(side_of),
        pin_obj=pin_obj, pin_dx=np.array(pin_dx), pin_dy=np.array(pin_dy), pin_node=pin_node,
        net_ptr=np.array(net_ptr, np.int64), net_pins=np.array(net_pins, np.int64),
        net_weight=np.array(net_weight), metadata={"generator_seed": seed})
    return nl, header, Placement.from_netlist(nl)
