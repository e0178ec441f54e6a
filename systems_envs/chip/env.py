"""``MacroPlacement-v0``: circuit_training's sequential macro placement.

Episode: a netlist is drawn from the pool (uniformly, with the env's seed); its hard
macros are placed one per step in circuit_training's order (largest area first, ties in
netlist order); action a = grid cell ``row * cols + col`` puts the current macro's centre
on the cell's centre. After the last macro the soft macros are placed by force-directed
placement (:mod:`~systems_envs.chip.force_directed`, from the canvas centre) and the
episode terminates with reward ``-proxy_cost`` (weights ``weights``); every other step
gives 0. If the current macro has no legal cell left, the episode terminates at once with
reward ``dead_end_reward`` (default -3, below the proxy cost of any complete placement seen
on the shipped and generated netlists, which stay under 2).

Action mask: cells where the current macro lies inside the canvas and overlaps (with
positive area) no hard macro placed so far; cells beyond this netlist's grid (the action
space has room for the largest grid of the pool) are masked. A masked-out action is never
placed: it ends the episode at once with ``dead_end_reward`` and ``info["illegal_action"]``.

Observation (a dict; padded to fixed capacities so batches go through
:func:`encoders.graphs.batch_observations` like the other environments; N = max_nodes,
M = max_edges, A = max_cells):

* ``node_features`` float32 [N, 10]: one node per port / hard macro / soft macro:
  is_port, is_hard, is_soft, width / W, height / H, placed flag, x / W, y / H (0 when not
  placed; ports always placed), is_current, orientation is N;
* ``edge_features`` float32 [M, 1]: log1p(total weight) of the nets joining a driver's
  object to a sink's object (one directed edge per object pair, self pairs dropped);
* ``senders``, ``receivers`` int32 [M]; ``n_node``, ``n_edge`` int32 [1];
* ``globals`` float32 [4]: cols / 32, rows / 32, fraction of hard macros placed,
  W / 1000 um;
* ``current`` int32 [1]: node index of the macro to place (-1 once done);
* ``action_mask`` int8 [A].
"""
from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from systems_envs.chip.cost import TILOS_WEIGHTS, PlacementCost
from systems_envs.chip.force_directed import ForceDirected
from systems_envs.chip.generator import generate_netlist
from systems_envs.chip.legality import cell_centres, legal_cells, macro_order
from systems_envs.chip.netlist import HARD, PORT, SOFT, Netlist, read_netlist
from systems_envs.chip.plc import PlcHeader, Placement, read_plc

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "netlists")
SHIPPED = ("ariane133",)
NODE_FEATURES = 10


def load_shipped(name: str) -> tuple[Netlist, PlcHeader, Placement]:
    """A shipped netlist with its initial.plc (header settings and placement)."""
    if name not in SHIPPED:
        raise ValueError(f"unknown netlist {name!r} (shipped: {', '.join(SHIPPED)})")
    d = os.path.join(DATA_DIR, name)
    nl = read_netlist(os.path.join(d, "netlist.pb.txt.gz"), name=name)
    header, pl = read_plc(os.path.join(d, "initial.plc"), nl)
    return nl, header.settings(), pl


class _Case:
    """One pool entry: netlist, header, start placement, and the static observation parts."""

    def __init__(self, nl: Netlist, header: PlcHeader, pl: Placement):
        self.nl, self.header, self.pl = nl, header, pl
        self.order = macro_order(nl)
        self.fd = ForceDirected(nl, header)
        self.cx, self.cy = cell_centres(header)
        lens = np.diff(nl.net_ptr)
        drv = np.repeat(nl.pin_obj[nl.net_pins[nl.net_ptr[:-1]]], lens - 1)
        sink_mask = np.ones(len(nl.net_pins), bool)
        sink_mask[nl.net_ptr[:-1]] = False
        snk = nl.pin_obj[nl.net_pins[sink_mask]]
        w = np.repeat(nl.net_weight, lens - 1)
        keep = drv != snk
        key = drv[keep] * nl.num_objects + snk[keep]
        uk, inv = np.unique(key, return_inverse=True)
        self.senders, self.receivers = (uk // nl.num_objects).astype(np.int32), (uk % nl.num_objects).astype(np.int32)
        self.edges = np.log1p(np.bincount(inv, w[keep])).astype(np.float32)[:, None]
        W, H = header.width, header.height
        f = np.zeros((nl.num_objects, NODE_FEATURES), np.float32)
        f[:, 0], f[:, 1], f[:, 2] = nl.obj_kind == PORT, nl.obj_kind == HARD, nl.obj_kind == SOFT
        f[:, 3], f[:, 4] = nl.obj_width / W, nl.obj_height / H
        ports = nl.obj_kind == PORT
        f[ports, 5] = 1.0
        f[ports, 6], f[ports, 7] = pl.x[ports] / W, pl.y[ports] / H
        self.base = f


class MacroPlacementEnv(gym.Env):
    """circuit_training's macro placement as a gymnasium environment (module docstring).

    Args:
      netlists: names of shipped netlists (``"ariane133"``) and/or (Netlist, PlcHeader,
        Placement) triples; default ``("ariane133",)``.
      num_generated: synthetic netlists added to the pool (:func:`generate_netlist` with
        seeds ``generator_seed + i`` and ``generator_kwargs``).
      weights: proxy-cost weights (wirelength, density, congestion).
      dead_end_reward: reward when the current macro has no legal cell.
      fd_steps: force-directed steps per stage for the final soft-macro placement.
      max_nodes, max_edges, max_cells: observation/action capacities (default: the pool's
        largest).
    """

    metadata = {"render_modes": []}

    def __init__(self, netlists=SHIPPED, num_generated: int = 0, generator_kwargs: dict | None = None,
                 generator_seed: int = 0, weights=TILOS_WEIGHTS, dead_end_reward: float = -3.0,
                 fd_steps: int = 100, max_nodes: int | None = None, max_edges: int | None = None,
                 max_cells: int | None = None):
        cases = []
        for item in netlists:
            cases.append(_Case(*load_shipped(item)) if isinstance(item, str) else _Case(*item))
        for i in range(num_generated):
            cases.append(_Case(*generate_netlist(seed=generator_seed + i, **(generator_kwargs or {}))))
        if not cases:
            raise ValueError("MacroPlacementEnv: empty netlist pool (give netlists or num_generated > 0)")
        self.cases = cases
        self.weights = tuple(weights)
        self.dead_end_reward = float(dead_end_reward)
        self.fd_steps = int(fd_steps)
        need_n = max(c.nl.num_objects for c in cases) + 1
        need_e = max(len(c.senders) for c in cases)
        need_a = max(c.header.columns * c.header.rows for c in cases)
        self.max_nodes = max_nodes or need_n
        self.max_edges = max_edges or need_e
        self.max_cells = max_cells or need_a
        if self.max_nodes < need_n or self.max_edges < need_e or self.max_cells < need_a:
            raise ValueError(f"MacroPlacementEnv: capacities too small for the pool (need nodes >= {need_n}, "
                             f"edges >= {need_e}, cells >= {need_a})")
        N, M, A = self.max_nodes, self.max_edges, self.max_cells
        self.observation_space = spaces.Dict({
            "node_features": spaces.Box(-1e6, 1e6, (N, NODE_FEATURES), np.float32),
            "edge_features": spaces.Box(0.0, 1e6, (M, 1), np.float32),
            "senders": spaces.Box(0, N - 1, (M,), np.int32),
            "receivers": spaces.Box(0, N - 1, (M,), np.int32),
            "n_node": spaces.Box(0, N, (1,), np.int32),
            "n_edge": spaces.Box(0, M, (1,), np.int32),
            "globals": spaces.Box(-1e6, 1e6, (4,), np.float32),
            "current": spaces.Box(-1, N - 1, (1,), np.int32),
            "action_mask": spaces.Box(0, 1, (A,), np.int8),
        })
        self.action_space = spaces.Discrete(A)
        self._case = cases[0]
        self._pl = None
        self._placed = None
        self._k = 0
        self._done = True

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        self._case = self.cases[int(self.np_random.integers(len(self.cases)))]
        c = self._case
        self._pl = c.pl.copy()
        self._placed = c.nl.obj_kind == PORT
        self._k = 0
        self._done = False
        mask = self.action_mask()
        return self._obs(mask), {"netlist": c.nl.name, "macro": int(c.order[0])}

    def step(self, action):
        if self._done:
            raise RuntimeError("step() called after the episode terminated; call reset()")
        c = self._case
        a = int(action)
        mask = self.action_mask()
        if not 0 <= a < self.max_cells:
            raise ValueError(f"action {action!r} is not a cell index in 0..{self.max_cells - 1}")
        if not mask[a]:
            self._done = True
            return (self._obs(np.zeros(self.max_cells, np.int8)), self.dead_end_reward, True, False,
                    {"illegal_action": True, "netlist": c.nl.name})
        m = c.order[self._k]
        self._pl.x[m], self._pl.y[m] = c.cx[a], c.cy[a]
        self._placed[m] = True
        self._k += 1
        if self._k == len(c.order):
            self._done = True
            s = self.fd_steps
            pl = c.fd.place(self._pl, num_steps=(s, s, s))
            self._pl = pl
            self._placed[:] = True
            cost = PlacementCost(c.nl, c.header, pl, self.weights).costs()
            info = {**cost.as_dict(), "netlist": c.nl.name, "placement": pl}
            return self._obs(np.zeros(self.max_cells, np.int8)), -float(cost.proxy_cost), True, False, info
        mask = self.action_mask()
        if not mask.any():
            self._done = True
            return self._obs(mask), self.dead_end_reward, True, False, {"dead_end": True, "netlist": c.nl.name}
        return self._obs(mask), 0.0, False, False, {"netlist": c.nl.name, "macro": int(c.order[self._k])}

    # ------------------------------------------------------------------ helpers
    def action_mask(self) -> np.ndarray:
        """[max_cells] int8 legal cells for the current macro (module docstring)."""
        c = self._case
        out = np.zeros(self.max_cells, np.int8)
        if self._done or self._k >= len(c.order):
            return out
        ok = legal_cells(c.nl, c.header, self._pl, c.order[self._k], self._placed)
        out[:len(ok)] = ok
        return out

    def finished_observation(self, case: int, placement: Placement) -> dict:
        """The observation a finished episode of pool entry ``case`` ends with when its final
        placement (hard and soft macros) is ``placement``: every node placed, no current
        macro, an all-zero mask. For placements made outside the environment (annealing,
        perturbations) that an outcome model should score like the environment's own. Does
        not change the environment's episode state."""
        saved = (self._case, self._pl, self._placed, self._k, self._done)
        c = self.cases[case]
        self._case, self._pl, self._placed, self._k, self._done = c, placement, np.ones(c.nl.num_objects, bool), \
            len(c.order), True
        try:
            return self._obs(np.zeros(self.max_cells, np.int8))
        finally:
            self._case, self._pl, self._placed, self._k, self._done = saved

    @property
    def placement(self) -> Placement:
        return self._pl.copy()

    @property
    def netlist(self) -> Netlist:
        return self._case.nl

    @property
    def header(self) -> PlcHeader:
        return self._case.header

    def _obs(self, mask: np.ndarray) -> dict:
        c = self._case
        n, e = c.nl.num_objects, len(c.senders)
        W, H = c.header.width, c.header.height
        nodes = np.zeros((self.max_nodes, NODE_FEATURES), np.float32)
        nodes[:n] = c.base
        placed = self._placed
        nodes[:n, 5] = placed
        nodes[:n, 6] = np.where(placed, self._pl.x / W, 0.0)
        nodes[:n, 7] = np.where(placed, self._pl.y / H, 0.0)
        cur = int(c.order[self._k]) if not self._done and self._k < len(c.order) else -1
        if cur >= 0:
            nodes[cur, 8] = 1.0
        nodes[:n, 9] = self._pl.orient == 0
        edges = np.zeros((self.max_edges, 1), np.float32)
        edges[:e] = c.edges
        snd = np.zeros(self.max_edges, np.int32)
        rcv = np.zeros(self.max_edges, np.int32)
        snd[:e], rcv[:e] = c.senders, c.receivers
        glob = np.array([c.header.columns / 32, c.header.rows / 32, self._k / len(c.order), W / 1000], np.float32)
        return {"node_features": nodes, "edge_features": edges, "senders": snd, "receivers": rcv,
                "n_node": np.array([n], np.int32), "n_edge": np.array([e], np.int32), "globals": glob,
                "current": np.array([cur], np.int32), "action_mask": mask.astype(np.int8)}
