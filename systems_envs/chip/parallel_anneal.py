"""Parallel simulated annealing of a macro placement: hard and soft macros on separate
workers.

:func:`anneal_parallel` runs ``workers`` processes (standard-library ``multiprocessing``,
``spawn`` start: a forked child of a process with threads, such as JAX's, may deadlock),
each holding its own full copy of the placement and its incremental
:class:`~systems_envs.chip.cost.PlacementCost`. Time is cut into *epochs*; in each:

* worker 0 moves the hard macros (swap, shift, move, flip, nudge) and nothing else, so
  it alone decides where hard macros go and the merged placement is legal whenever its
  own is;
* workers 1..W-1 move the soft macros (soft, soft_hot): with one of them, all soft
  macros; with more, the canvas is cut into W-1 strips along x (even epochs) or y (odd
  epochs) at quantiles of the soft-macro centres, jittered by up to ``jitter`` / (W-1)
  so that no cluster stays on a cut, and worker i moves the clusters centred in strip i,
  their centres kept in the strip.

Every worker runs :class:`~systems_envs.chip.baselines.AnnealChain` on its own macros
against the cost of the *whole* placement (the other workers' macros as they were at the
start of the epoch), with the shared temperature schedule (geometric from ``t0`` to
``t1`` over the budget, each epoch covering its slice of it). At the end of an epoch the
coordinator takes each worker's macros from that worker, recomputes the proxy cost of the
merged placement from scratch (that exact cost is the state; the deltas of different
workers' moves are nearly, not exactly, additive since density and congestion average
the top cells of the whole map) and sends the merged placement to every worker for the
next epoch. Every ``fd_every`` seconds the coordinator re-places the soft macros by
force-directed placement (kept when it lowers the cost), as :func:`anneal` does. The best
merged placement is returned with its cost recomputed from scratch; it is checked legal.

Why not strips for the hard macros too: a first version cut the canvas into W strips
and gave each worker the hard macros lying wholly in its strip (those on a cut frozen)
and the clusters centred in it. On ariane133 (60,000 proposals per worker, no
force-directed step, seeds 0-2) it reached 0.6596 / 0.6597 / 0.6578 where one chain
reached 0.6631 / 0.6629 / 0.6656 with 60,000 proposals and 0.6497 / 0.6563 / 0.6504 with
120,000: a quarter to a half of the gain of doubling the proposals. Hard / soft workers
reached 0.6544 / 0.6559 / 0.6562 on the same budget: 65%, 106% and 62% of that gain.

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

from systems_envs.chip.baselines import (DEFAULT_MOVE_PROBS, MOVES, AnnealChain, PlacementResult, check_move_probs,
                                         move_counts)
from systems_envs.chip.cost import TILOS_WEIGHTS, PlacementCost
from systems_envs.chip.force_directed import ForceDirected
from systems_envs.chip.legality import is_legal
from systems_envs.chip.netlist import Netlist
from systems_envs.chip.plc import PlcHeader, Placement


def assign(nl: Netlist, pl: Placement, workers: int, axis: int, quantiles: np.ndarray) -> list:
    """Each worker's macros for one epoch: per worker (hard macros, soft macros, region).
    Worker 0: every hard macro, no soft macro, no region. Workers 1..W-1: the soft macros
    centred in their strip along ``axis`` (0: x, 1: y), cut at ``quantiles`` [W - 2] of
    the soft-macro centres; region (axis, lo, hi) of the strip (None with one soft worker)."""
    if workers < 2:
        raise ValueError(f"assign: needs at least 2 workers (one for hard, one for soft macros), got {workers}")
    soft = nl.soft
    out = [(nl.hard, soft[:0], None)]
    if workers == 2:
        return out + [(nl.hard[:0], soft, None)]
    pos = pl.x[soft] if axis == 0 else pl.y[soft]
    cuts = np.quantile(pos, quantiles) if len(soft) else np.zeros(len(quantiles))
    bounds = np.concatenate([[-np.inf], cuts, [np.inf]])
    strip = np.searchsorted(cuts, pos, side="right")
    return out + [(nl.hard[:0], soft[strip == i], (axis, float(bounds[i]), float(bounds[i + 1])))
                  for i in range(workers - 1)]


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
    if not isinstance(workers, (int, np.integer)) or workers < 2:
        raise ValueError(f"anneal_parallel: workers must be an integer >= 2 (use anneal() for one), got {workers!r}")
    if not is_legal(nl, header, start):
        raise ValueError("anneal: the start placement is not legal (use legalize() or greedy first)")
    if max_moves is None and not time_limit > 0:
        raise ValueError(f"anneal_parallel: time_limit must be > 0, got {time_limit}")
    if max_moves is not None and max_moves < 1:
        raise ValueError(f"anneal_parallel: max_moves must be >= 1, got {max_moves}")
    check_move_probs(move_probs)   # here, not in a worker
    clock = time.perf_counter()
    fd = fd or ForceDirected(nl, header)
    pc = PlacementCost(nl, header, start, weights)
    cur = best = pc.costs().proxy_cost
    best_pl = pc.pl.copy()
    trace = [(0.0, best)]
    rng = np.random.default_rng(seed)
    seeds = np.random.SeedSequence(seed).spawn(workers)
    ctx = mp.get_context("spawn")   # not fork: the caller may hold threads (JAX's)
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
            k = workers - 1   # soft-macro workers
            qs = (np.arange(1, k) + rng.uniform(-jitter, jitter, k - 1)) / k
            parts = assign(nl, pc.pl, workers, epoch % 2, np.sort(qs))
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
        raise RuntimeError("anneal_parallel: the merged placement is not legal (a bug: only worker 0 moves hard"
                           " macros)")
    final = PlacementCost(nl, header, best_pl, weights).costs()
    return PlacementResult(best_pl, final, time.perf_counter() - clock, trace + [(time.perf_counter() - clock, best)],
                           move_counts(tried, taken))
