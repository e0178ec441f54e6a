"""Parallel simulated annealing of a macro placement by spatial decomposition.

:func:`anneal_parallel` runs ``workers`` processes (standard-library ``multiprocessing``,
``fork`` start), each holding its own full copy of the placement and its incremental
:class:`~systems_envs.chip.cost.PlacementCost`. Time is cut into *epochs*. At the start
of each epoch the coordinating process cuts the canvas into ``workers`` strips along x
(even epochs) or y (odd epochs) at quantiles of the macro centres (hard and soft macros
weighing half each, so the strips get similar shares of both kinds of proposals), the
quantiles jittered by up to ``jitter`` / ``workers`` so that no macro stays on a cut for
long, and gives strip i to worker i:

* a hard macro whose footprint lies wholly inside strip i may be moved (swapped,
  shifted, flipped, nudged) by worker i only, and only to positions inside strip i;
  hard macros that straddle a cut stay put for the epoch. So the hard macros of
  different workers can never overlap after the merge, and the merged placement is legal;
* a soft macro whose centre lies in strip i is moved by worker i only, its centre kept
  in the strip.

Every worker runs :class:`~systems_envs.chip.baselines.AnnealChain` on its own macros
against the cost of the *whole* placement (the other strips as they were at the start of
the epoch), with the shared temperature schedule (geometric from ``t0`` to ``t1`` over the
budget, each epoch covering its slice of it). At the end of an epoch the coordinator takes
each worker's macros from that worker, recomputes the proxy cost of the merged placement
from scratch (that exact cost is the chain's state; the deltas of moves in different
strips are nearly, not exactly, additive since density and congestion average the top
cells of the whole map), and sends the merged placement to every worker for the next
epoch. Every ``fd_every`` seconds the coordinator re-places the soft macros by
force-directed placement (kept when it lowers the cost), as :func:`anneal` does. The best
merged placement is returned with its cost recomputed from scratch; it is checked legal.

Determinism: with ``max_moves`` (a proposal budget per worker; epochs of ``epoch_moves``
proposals each; temperature from the proposal count) and ``fd_every=0`` the result
depends only on ``seed`` and ``workers``. With a time budget, epochs last
``epoch_seconds`` and the temperature follows the clock, so (as for :func:`anneal`) the
result depends on the machine's speed and load.
"""
from __future__ import annotations

import multiprocessing as mp
import time
import traceback

import numpy as np

from systems_envs.chip.baselines import DEFAULT_MOVE_PROBS, MOVES, AnnealChain, PlacementResult
from systems_envs.chip.cost import TILOS_WEIGHTS, PlacementCost
from systems_envs.chip.force_directed import ForceDirected
from systems_envs.chip.legality import is_legal
from systems_envs.chip.netlist import Netlist
from systems_envs.chip.plc import PlcHeader, Placement


def split(nl: Netlist, header: PlcHeader, pl: Placement, workers: int, axis: int, cuts: np.ndarray):
    """Assign macros to strips. ``cuts`` [workers - 1] increasing coordinates (microns) along
    ``axis`` (0: x, 1: y). Returns, per strip, (hard macros wholly inside, soft macros
    centred inside, (axis, lo, hi))."""
    size = header.width if axis == 0 else header.height
    bounds = np.concatenate([[0.0], cuts, [size]])
    pos = pl.x if axis == 0 else pl.y
    ext = (nl.obj_width if axis == 0 else nl.obj_height) / 2
    hard, soft = nl.hard, nl.soft
    soft_strip = np.searchsorted(cuts, pos[soft], side="right")
    out = []
    for i in range(workers):
        lo, hi = bounds[i], bounds[i + 1]
        h = hard[(pos[hard] - ext[hard] >= lo) & (pos[hard] + ext[hard] <= hi)]
        out.append((h, soft[soft_strip == i], (axis, float(lo), float(hi))))
    return out


def balanced_cuts(nl: Netlist, pl: Placement, axis: int, quantiles: np.ndarray) -> np.ndarray:
    """Cut coordinates along ``axis`` at the given quantiles [workers - 1] of the macro
    centres, hard and soft macros each weighing half (so each strip gets about its share of
    both kinds of proposals)."""
    pos = pl.x if axis == 0 else pl.y
    objs = np.concatenate([nl.hard, nl.soft])
    w = np.concatenate([np.full(len(nl.hard), 0.5 / max(len(nl.hard), 1)),
                        np.full(len(nl.soft), 0.5 / max(len(nl.soft), 1))])
    order = np.argsort(pos[objs], kind="stable")
    cum = np.cumsum(w[order]) / w.sum()
    return pos[objs][order][np.minimum(np.searchsorted(cum, quantiles), len(objs) - 1)]


def _worker(conn, nl, header, start, seed, weights, move_probs, hot_every, hot_reach):
    """Worker loop: ('run', x, y, orient, hard, soft, region, temp_a, temp_b, kind, budget)
    -> (x, y, orient of its macros, tried, taken); ('stop',) ends it."""
    try:
        chain = AnnealChain(nl, header, start, seed, weights, move_probs, hot_every, hot_reach)
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                return
            _, x, y, orient, hard, soft, region, ta, tb, kind, budget = msg
            pl = chain.pc.pl.copy()
            pl.x[:], pl.y[:], pl.orient[:] = x, y, orient
            chain.set_placement(pl)
            chain.restrict(hard, soft, region)
            tried0, taken0 = chain.tried.copy(), chain.taken.copy()
            if kind == "moves":
                for i in range(budget):
                    chain.step(ta * (tb / ta) ** (i / budget))
            else:
                clock = time.perf_counter()
                while (e := time.perf_counter() - clock) < budget and chain.probs is not None:
                    chain.step(ta * (tb / ta) ** (e / budget))
            objs = np.concatenate([hard, soft])
            p = chain.pc.pl
            conn.send((objs, p.x[objs], p.y[objs], p.orient[objs], chain.tried - tried0, chain.taken - taken0))
    except Exception:   # reported to the coordinator, which raises
        conn.send(("error", traceback.format_exc()))


def anneal_parallel(nl: Netlist, header: PlcHeader, start: Placement, time_limit: float = 60.0, seed: int = 0,
                    workers: int = 2, weights=TILOS_WEIGHTS, t0: float = 5e-5, t1: float = 1e-6,
                    fd_every: float = 30.0, move_probs=DEFAULT_MOVE_PROBS, fd: ForceDirected | None = None,
                    max_moves: int | None = None, epoch_seconds: float = 2.0, epoch_moves: int = 2000,
                    jitter: float = 0.15, hot_every: int = 100, hot_reach: int = 1) -> PlacementResult:
    """Simulated annealing on ``workers`` processes (module docstring). ``max_moves`` is the
    proposal budget per worker (None: ``time_limit`` seconds of wall time). Returns the
    best merged placement, its cost recomputed from scratch, the trace of (seconds, best
    proxy cost) at merges and the proposals / acceptances per move kind summed over workers."""
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"anneal_parallel: workers must be an integer >= 1, got {workers!r}")
    if not is_legal(nl, header, start):
        raise ValueError("anneal: the start placement is not legal (use legalize() or greedy first)")
    if max_moves is None and not time_limit > 0:
        raise ValueError(f"anneal_parallel: time_limit must be > 0, got {time_limit}")
    if max_moves is not None and max_moves < 1:
        raise ValueError(f"anneal_parallel: max_moves must be >= 1, got {max_moves}")
    AnnealChain(nl, header, start, seed, weights, move_probs)   # validates move_probs here, not in a worker
    clock = time.perf_counter()
    fd = fd or ForceDirected(nl, header)
    pc = PlacementCost(nl, header, start, weights)
    cur = best = pc.costs().proxy_cost
    best_pl = pc.pl.copy()
    trace = [(0.0, best)]
    rng = np.random.default_rng(seed)
    seeds = np.random.SeedSequence(seed).spawn(workers)
    ctx = mp.get_context("fork")
    conns, procs = [], []
    for i in range(workers):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(child, nl, header, start, seeds[i], weights, move_probs,
                                              hot_every, hot_reach), daemon=True)
        p.start()
        conns.append(parent)
        procs.append(p)
    tried, taken = np.zeros(len(MOVES), np.int64), np.zeros(len(MOVES), np.int64)
    done_moves, epoch, last_fd = 0, 0, time.perf_counter()
    try:
        while True:
            elapsed = time.perf_counter() - clock
            if max_moves is None:
                if elapsed >= time_limit:
                    break
                budget = min(epoch_seconds, time_limit - elapsed)
                fa, fb, kind = elapsed / time_limit, (elapsed + budget) / time_limit, "seconds"
            else:
                if done_moves >= max_moves:
                    break
                budget = min(epoch_moves, max_moves - done_moves)
                fa, fb, kind = done_moves / max_moves, (done_moves + budget) / max_moves, "moves"
            axis = epoch % 2
            qs = (np.arange(1, workers) + rng.uniform(-jitter, jitter, workers - 1)) / workers
            parts = split(nl, header, pc.pl, workers, axis, balanced_cuts(nl, pc.pl, axis, qs))
            pl = pc.pl
            for conn, (h, s, region) in zip(conns, parts):
                conn.send(("run", pl.x, pl.y, pl.orient, h, s, region, t0 * (t1 / t0) ** fa, t0 * (t1 / t0) ** fb,
                           kind, budget))
            merged = pl.copy()
            for conn in conns:
                reply = conn.recv()
                if isinstance(reply[0], str):   # ("error", traceback)
                    raise RuntimeError(f"anneal_parallel: a worker failed:\n{reply[1]}")
                objs, x, y, o, tr, tk = reply
                merged.x[objs], merged.y[objs], merged.orient[objs] = x, y, o
                tried += tr
                taken += tk
            done_moves += budget if kind == "moves" else 0
            epoch += 1
            pc.set_placement(merged)
            cur = pc.costs().proxy_cost
            if fd_every and time.perf_counter() - last_fd >= fd_every:
                saved = pc.pl.copy()
                pc.set_placement(fd.place(pc.pl, use_current_loc=True))
                c = pc.costs().proxy_cost
                if c < cur:
                    cur = c
                else:
                    pc.set_placement(saved)
                last_fd = time.perf_counter()
            if cur < best:
                best, best_pl = cur, pc.pl.copy()
                trace.append((time.perf_counter() - clock, best))
    finally:
        for conn in conns:
            try:
                conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    if not is_legal(nl, header, best_pl):
        raise RuntimeError("anneal_parallel: the merged placement is not legal (a bug in the strip split)")
    final = PlacementCost(nl, header, best_pl, weights).costs()
    moves = {k: {"proposed": int(a), "accepted": int(b)} for k, a, b in zip(MOVES, tried, taken)}
    return PlacementResult(best_pl, final, time.perf_counter() - clock, trace + [(time.perf_counter() - clock, best)],
                           moves)
