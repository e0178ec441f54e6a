"""Macro-placement baselines: the given placement, random legal, greedy, simulated annealing.

All return a :class:`PlacementResult` (the placement with soft macros placed, its cost
breakdown, wall seconds, and for annealing a trace of (seconds, best proxy cost) and the
proposals and acceptances per move kind).

* :func:`initial` - the placement as given (e.g. ``initial.plc``), not re-placed.
* :func:`random_legal` - hard macros in circuit_training's order (largest first), each
  onto a uniformly random legal grid cell (centre on the cell centre, inside the canvas,
  no overlap with macros already placed); then force-directed soft macros.
* :func:`greedy` - same order; each macro onto the legal cell with the lowest *partial
  cost*: wirelength cost of the nets as far as their pins are placed (ports, hard macros
  already placed, soft macros where they stand) + w_density x density cost of the placed
  hard macros and the soft macros (congestion is left to the final evaluation, as its
  routes need every pin); then force-directed soft macros.
* :func:`anneal` - simulated annealing on hard-macro positions and orientations over a
  legal start, with TILOS' move set: swap two macros, shift one by one grid cell, move one
  to a random position, flip one (N / FN / S / FS); plus three moves of ours: *nudge* a
  hard macro off the grid by a Gaussian step (sigma = a quarter cell; a macro straddling
  cell borders spreads its area over more cells, which lowers the density cost), shift a
  soft macro by a Gaussian step (sigma = half a cell), and *soft_hot*: move a soft macro
  centred in one of the densest 10% cells (those the density cost averages; the set is
  refreshed every ``hot_every`` proposals) to a random point of a cell within
  ``hot_reach`` cells whose density is below theirs. Moves that would leave the canvas or
  overlap another hard macro are rejected; cost = the exact proxy cost, kept
  incrementally (:class:`~systems_envs.chip.cost.PlacementCost`); Metropolis acceptance
  with a temperature falling geometrically from ``t0`` to ``t1`` over the time budget
  (proxy-cost deltas of single moves are 1e-5..1e-3); every ``fd_every`` seconds the soft
  macros are re-placed by force-directed placement from their current positions (kept
  when it lowers the cost). The best placement seen is returned, with per-move counts of
  proposals and acceptances. On ariane133 from the legalised initial.plc, 40,000
  proposals (seeds 0 and 1, no force-directed step, the shared 2-core machine) reached
  0.6674 / 0.6674 with the default mix against 0.6655 / 0.6711 with TILOS' moves and soft
  shifts only (0.15, 0.15, 0.15, 0.05, 0.5): the same final cost within seed noise, and
  faster early progress (0.690 / 0.694 against 0.706 / 0.705 after 40-60 s).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from systems_envs.chip.cost import TILOS_WEIGHTS, CostBreakdown, PlacementCost
from systems_envs.chip.force_directed import ForceDirected
from systems_envs.chip.legality import cell_centres, fits_canvas, is_legal, legal_cells, macro_order
from systems_envs.chip.netlist import HARD, Netlist
from systems_envs.chip.plc import PlcHeader, Placement

FLIPS = np.array([0, 2, 1, 3])   # N, FN, S, FS (indices into ORIENTATIONS)


@dataclass
class PlacementResult:
    placement: Placement
    costs: CostBreakdown
    seconds: float
    trace: list = field(default_factory=list)
    moves: dict = field(default_factory=dict)


class NoLegalCell(ValueError):
    """A macro has no legal grid cell left (the partial placement is a dead end)."""


def _finish(nl, header, pl, weights, t0, fd: ForceDirected | None, place_soft=True) -> PlacementResult:
    if place_soft:
        pl = (fd or ForceDirected(nl, header)).place(pl)
    c = PlacementCost(nl, header, pl, weights).costs()
    return PlacementResult(pl, c, time.perf_counter() - t0)


def initial(nl: Netlist, header: PlcHeader, pl: Placement, weights=TILOS_WEIGHTS) -> PlacementResult:
    """The given placement, evaluated as it is."""
    t0 = time.perf_counter()
    return _finish(nl, header, pl, weights, t0, None, place_soft=False)


def random_legal(nl: Netlist, header: PlcHeader, pl: Placement, seed: int = 0, weights=TILOS_WEIGHTS,
                 fd: ForceDirected | None = None, place_soft: bool = True) -> PlacementResult:
    """Each hard macro (largest first) onto a random legal cell; raises :class:`NoLegalCell`."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    out = pl.copy()
    placed = np.zeros(nl.num_objects, bool)
    cx, cy = cell_centres(header)
    for m in macro_order(nl):
        ok = np.flatnonzero(legal_cells(nl, header, out, m, placed))
        if len(ok) == 0:
            raise NoLegalCell(f"random: no legal cell left for macro {nl.obj_name[m]!r}")
        c = int(rng.choice(ok))
        out.x[m], out.y[m], placed[m] = cx[c], cy[c], True
    return _finish(nl, header, out, weights, t0, fd, place_soft)


def greedy(nl: Netlist, header: PlcHeader, pl: Placement, weights=TILOS_WEIGHTS,
           fd: ForceDirected | None = None, place_soft: bool = True) -> PlacementResult:
    """Each hard macro (largest first) onto the legal cell of lowest partial cost (module doc)."""
    t0 = time.perf_counter()
    out = pl.copy()
    pc = PlacementCost(nl, header, out, weights)
    g = pc.grid
    cx, cy = cell_centres(header)
    placed = np.zeros(nl.num_objects, bool)
    placed[nl.obj_kind != HARD] = True
    # density of everything but the unplaced hard macros
    hard_rows = pc._macro_row[nl.hard]
    dens = pc.density_area - pc._obj_area[hard_rows].sum(0)
    pin_placed = placed[nl.pin_obj]
    net_of = pc.net_of_entry
    norm = (g.width + g.height) * max(nl.net_count, 1e-300)
    cell_area = g.gw * g.gh
    for m in macro_order(nl):
        ok = np.flatnonzero(legal_cells(nl, header, out, m, placed & (nl.obj_kind == HARD)))
        if len(ok) == 0:
            raise NoLegalCell(f"greedy: no legal cell left for macro {nl.obj_name[m]!r}")
        _, nets, ptr, entries = pc._sub((int(m),))
        e_obj = nl.pin_obj[entries]
        mine = e_obj == m
        e_net = np.repeat(np.arange(len(nets)), np.diff(ptr))
        # bbox of the other placed pins of each net, and of m's own pin offsets
        other = ~mine & pin_placed[entries]
        big = np.inf

        def seg(vals, mask, fn, init, e_net=e_net, n=len(nets)):
            res = np.full(n, init)
            fn.at(res, e_net[mask], vals[mask])
            return res
        px, py = pc.pin_x[entries], pc.pin_y[entries]
        oxmin, oxmax = seg(px, other, np.minimum, big), seg(px, other, np.maximum, -big)
        oymin, oymax = seg(py, other, np.minimum, big), seg(py, other, np.maximum, -big)
        rel_x, rel_y = px - out.x[m], py - out.y[m]
        mxmin, mxmax = seg(rel_x, mine, np.minimum, big), seg(rel_x, mine, np.maximum, -big)
        mymin, mymax = seg(rel_y, mine, np.minimum, big), seg(rel_y, mine, np.maximum, -big)
        X, Y = cx[ok][None, :], cy[ok][None, :]
        hp = (np.maximum(oxmax[:, None], X + mxmax[:, None]) - np.minimum(oxmin[:, None], X + mxmin[:, None])
              + np.maximum(oymax[:, None], Y + mymax[:, None]) - np.minimum(oymin[:, None], Y + mymin[:, None]))
        wl = (nl.net_weight[nets][:, None] * hp).sum(0) / norm
        # density with m at each candidate cell
        w, h = nl.obj_width[m], nl.obj_height[m]
        ovx, _ = g.overlaps(cx[ok] - w / 2, cx[ok] + w / 2, "x")
        ovy, _ = g.overlaps(cy[ok] - h / 2, cy[ok] + h / 2, "y")
        cand = dens[None] + np.maximum(ovy, 0)[:, :, None] * np.maximum(ovx, 0)[:, None, :]
        flat = cand.reshape(len(ok), -1) / cell_area
        k = max(int(np.floor(flat.shape[1] * 0.1)), 1)
        dcost = 0.5 * np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:].sum(1) / k
        best = ok[int(np.argmin(weights[0] * wl + weights[1] * dcost))]
        out.x[m], out.y[m] = cx[best], cy[best]
        pc.move(m, cx[best], cy[best])
        dens = dens + pc._obj_area[pc._macro_row[m]]
        placed[m] = True
        pin_placed = placed[nl.pin_obj]
    return _finish(nl, header, pc.pl, weights, t0, fd, place_soft)


MOVES = ("swap", "shift", "move", "flip", "soft", "nudge", "soft_hot")
#: default proposal mix, in the order of :data:`MOVES`
DEFAULT_MOVE_PROBS = (0.1, 0.1, 0.05, 0.05, 0.4, 0.15, 0.15)
_SOFT_MOVES = [MOVES.index("soft"), MOVES.index("soft_hot")]
_HARD_MOVES = [MOVES.index(k) for k in ("shift", "move", "flip", "nudge")]


def check_move_probs(move_probs) -> np.ndarray:
    """``move_probs`` as float [len(MOVES)], or a one-line error if it is not one
    non-negative weight per move of :data:`MOVES` with a positive sum."""
    probs = np.asarray(move_probs, float)
    if len(probs) != len(MOVES) or (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f"anneal: move_probs needs {len(MOVES)} non-negative probabilities {MOVES}, "
                         f"got {move_probs}")
    return probs


def move_counts(tried: np.ndarray, taken: np.ndarray) -> dict:
    """Proposals and acceptances per move kind, from counts [len(MOVES)]."""
    return {k: {"proposed": int(a), "accepted": int(b)} for k, a, b in zip(MOVES, tried, taken)}


class AnnealChain:
    """One simulated-annealing chain: the proposals and Metropolis steps of :func:`anneal`
    (module docstring) over an incrementally kept :class:`PlacementCost`.

    By default every hard and soft macro may move anywhere in the canvas;
    :meth:`restrict` limits the moves to given macros, soft ones to a strip of the canvas
    (the parallel annealer's workers). ``cur`` is the chain's current
    proxy cost; ``tried`` / ``taken`` count proposals / acceptances per move kind.
    """

    def __init__(self, nl: Netlist, header: PlcHeader, start: Placement, seed=0, weights=TILOS_WEIGHTS,
                 move_probs=DEFAULT_MOVE_PROBS, hot_every: int = 100, hot_reach: int = 1):
        self.nl, self.header = nl, header
        self.base_probs = check_move_probs(move_probs)
        self.rng = np.random.default_rng(seed)
        self.pc = PlacementCost(nl, header, start, weights)
        self.cur = self.pc.costs().proxy_cost
        self.hot_every, self.hot_reach = hot_every, hot_reach
        self.cols, self.rows = header.columns, header.rows
        self.gw, self.gh = header.width / self.cols, header.height / self.rows
        self.k_hot = max(int(np.floor(0.1 * self.cols * self.rows)), 1)
        self._hard_pos = np.full(nl.num_objects, -1)
        self._hard_pos[nl.hard] = np.arange(len(nl.hard))
        self.n = 0
        self.tried, self.taken = np.zeros(len(MOVES), np.int64), np.zeros(len(MOVES), np.int64)
        self.restrict(nl.hard, nl.soft, None)

    def restrict(self, hard: np.ndarray, soft: np.ndarray, region: tuple | None) -> None:
        """Move only the macros ``hard`` and ``soft``; ``region`` = (axis 0 for x or 1 for
        y, lo, hi) microns: a moved soft macro's centre is clipped into [lo, hi] along that
        axis (None: the whole canvas)."""
        self.hard, self.soft, self.region = np.asarray(hard), np.asarray(soft), region
        probs = self.base_probs.copy()
        if len(self.soft) == 0:
            probs[_SOFT_MOVES] = 0.0
        if len(self.hard) < 2:
            probs[MOVES.index("swap")] = 0.0
        if len(self.hard) == 0:
            probs[_HARD_MOVES] = 0.0
        self.probs = probs / probs.sum() if probs.sum() > 0 else None
        # Generator.choice(p=probs)'s own draw: one uniform against the normalised cdf
        self._cdf = None
        if self.probs is not None:
            cdf = np.cumsum(self.probs)
            self._cdf = cdf / cdf[-1]
        self.hot_soft = self.soft[:0]
        self.dens, self.cutoff = np.zeros(self.rows * self.cols), np.inf
        self._refresh_hot()

    def set_placement(self, pl: Placement) -> None:
        """Continue from ``pl`` (all caches recomputed)."""
        self.pc.set_placement(pl)
        self.cur = self.pc.costs().proxy_cost
        self._refresh_hot()

    def _refresh_hot(self) -> None:
        # the densest cells (those the density cost averages) and the movable clusters centred in them
        if not len(self.soft):
            return
        pl = self.pc.pl
        self.dens = self.pc.density_map().ravel()
        self.cutoff = np.partition(self.dens, len(self.dens) - self.k_hot)[len(self.dens) - self.k_hot]
        sc = (np.clip((pl.y[self.soft] // self.gh).astype(int), 0, self.rows - 1) * self.cols
              + np.clip((pl.x[self.soft] // self.gw).astype(int), 0, self.cols - 1))
        self.hot_soft = self.soft[self.dens[sc] >= self.cutoff]

    def _legal_at(self, objs, xs, ys) -> bool:
        """Whether hard macros ``objs`` at (xs, ys) fit the canvas and overlap no other hard macro."""
        nl, pl, hdr = self.nl, self.pc.pl, self.header
        hard = nl.hard
        px, py = pl.x[hard], pl.y[hard]
        pw, ph = nl.obj_width[hard], nl.obj_height[hard]
        mine = self._hard_pos[list(objs)]
        for o, x, y in zip(objs, xs, ys):
            w, h = nl.obj_width[o], nl.obj_height[o]
            if not fits_canvas(x, y, w, h, hdr):
                return False
            ov = (np.abs(x - px) < (w + pw) / 2) & (np.abs(y - py) < (h + ph) / 2)
            ov[mine] = False
            if ov.any():
                return False
        return True

    def step(self, temp: float) -> bool:
        """One proposal at temperature ``temp``, accepted by the Metropolis rule (an illegal
        proposal counts as proposed and changes nothing). Returns whether a move was applied
        and kept. With nothing movable, proposes nothing and returns False."""
        if self.probs is None:
            return False
        pc, rng, pl = self.pc, self.rng, self.pc.pl
        nl, hdr = self.nl, self.header
        hw, hh, gw, gh = nl.obj_width, nl.obj_height, self.gw, self.gh
        if self.n % self.hot_every == 0:
            self._refresh_hot()
        ki = int(self._cdf.searchsorted(rng.random(), side="right"))
        kind = MOVES[ki]
        self.n += 1
        self.tried[ki] += 1
        if kind == "swap":
            a, b = rng.choice(self.hard, 2, replace=False)
            if not self._legal_at([a, b], [pl.x[b], pl.x[a]], [pl.y[b], pl.y[a]]):
                return False
            pc.swap(a, b)
        elif kind in ("shift", "move", "nudge"):
            m = int(rng.choice(self.hard))
            if kind == "shift":
                d = rng.integers(4)
                x = pl.x[m] + (gw, -gw, 0, 0)[d]
                y = pl.y[m] + (0, 0, gh, -gh)[d]
            elif kind == "move":
                x = rng.uniform(hw[m] / 2, hdr.width - hw[m] / 2)
                y = rng.uniform(hh[m] / 2, hdr.height - hh[m] / 2)
            else:   # nudge: off-grid step of a quarter cell (sigma), to straddle cell borders
                x = pl.x[m] + rng.normal(0, gw / 4)
                y = pl.y[m] + rng.normal(0, gh / 4)
            if not self._legal_at([m], [x], [y]):
                return False
            pc.move(m, x, y)
        elif kind in ("soft", "soft_hot"):
            cols, rows, reach = self.cols, self.rows, self.hot_reach
            if kind == "soft_hot" and len(self.hot_soft):
                # a cluster in one of the densest cells to a random point of a cell within
                # hot_reach cells whose density is below the densest cells' cutoff
                m = int(rng.choice(self.hot_soft))
                r0 = min(max(int(pl.y[m] // gh), 0), rows - 1)
                c0 = min(max(int(pl.x[m] // gw), 0), cols - 1)
                rr, cc = np.meshgrid(np.arange(max(r0 - reach, 0), min(r0 + reach + 1, rows)),
                                     np.arange(max(c0 - reach, 0), min(c0 + reach + 1, cols)), indexing="ij")
                cand = (rr * cols + cc).ravel()
                cand = cand[self.dens[cand] < self.cutoff]
                if len(cand) == 0:
                    return False
                cell = int(rng.choice(cand))
                x = (cell % cols + rng.uniform()) * gw
                y = (cell // cols + rng.uniform()) * gh
            else:   # a cluster by a Gaussian step of half a cell
                m = int(rng.choice(self.soft))
                x = pl.x[m] + rng.normal(0, gw / 2)
                y = pl.y[m] + rng.normal(0, gh / 2)
            # kept inside the canvas (and its centre inside the region)
            x = min(max(float(x), hw[m] / 2), hdr.width - hw[m] / 2)
            y = min(max(float(y), hh[m] / 2), hdr.height - hh[m] / 2)
            if self.region is not None:
                axis, lo, hi = self.region
                if axis == 0:
                    x = min(max(x, lo), hi)
                else:
                    y = min(max(y, lo), hi)
            pc.move(m, x, y)
        else:             # flip
            m = int(rng.choice(self.hard))
            o = int(pl.orient[m])
            new = int(rng.choice(FLIPS[FLIPS != o]))
            pc.flip(m, new)
        c = pc.costs().proxy_cost
        if c <= self.cur or rng.random() < np.exp((self.cur - c) / temp):
            self.cur = c
            self.taken[ki] += 1
            return True
        pc.undo()
        return False

    def moves(self) -> dict:
        """Proposals and acceptances per move kind."""
        return move_counts(self.tried, self.taken)


def anneal(nl: Netlist, header: PlcHeader, start: Placement, time_limit: float = 60.0, seed: int = 0,
           weights=TILOS_WEIGHTS, t0: float = 5e-5, t1: float = 1e-6, fd_every: float = 30.0,
           move_probs=DEFAULT_MOVE_PROBS, fd: ForceDirected | None = None,
           max_moves: int | None = None, hot_every: int = 100, hot_reach: int = 1) -> PlacementResult:
    """Simulated annealing from a legal ``start`` (module docstring). ``move_probs`` are the
    probabilities of the moves of :data:`MOVES`; ``max_moves`` caps the number of
    proposals (for tests; None = until ``time_limit`` seconds); the set of densest cells
    that ``soft_hot`` moves draw from is refreshed every ``hot_every`` proposals."""
    if not is_legal(nl, header, start):
        raise ValueError("anneal: the start placement is not legal (use legalize() or greedy first)")
    clock = time.perf_counter()
    chain = AnnealChain(nl, header, start, seed, weights, move_probs, hot_every, hot_reach)
    fd = fd or ForceDirected(nl, header)
    pc = chain.pc
    best, best_pl = chain.cur, pc.pl.copy()
    trace = [(0.0, best)]
    last_fd = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - clock
        if (max_moves is None and elapsed >= time_limit) or (max_moves is not None and chain.n >= max_moves):
            break
        frac = min(elapsed / time_limit, 1.0) if max_moves is None else chain.n / max_moves
        if chain.step(t0 * (t1 / t0) ** frac) and chain.cur < best:
            best, best_pl = chain.cur, pc.pl.copy()
            trace.append((time.perf_counter() - clock, best))
        if fd_every and time.perf_counter() - last_fd >= fd_every:
            prev, saved = chain.cur, pc.pl.copy()
            chain.set_placement(fd.place(pc.pl, use_current_loc=True))
            if chain.cur >= prev:   # kept only when it lowers the cost
                chain.set_placement(saved)
            elif chain.cur < best:
                best, best_pl = chain.cur, pc.pl.copy()
                trace.append((time.perf_counter() - clock, best))
            last_fd = time.perf_counter()
    final = PlacementCost(nl, header, best_pl, weights).costs()
    return PlacementResult(best_pl, final, time.perf_counter() - clock,
                           trace + [(time.perf_counter() - clock, best)], chain.moves())
