"""Placement baselines: single device, round-robin, expert split, METIS, m-ETF, annealing.

Every baseline is a function ``(cg, seed) -> placement`` ([n] device indices in
``cg.op_ids`` order); :func:`run_baseline` also simulates it. They use only the
:class:`~systems_envs.placement.simulator.CompiledGraph` arrays.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from systems_envs.placement.simulator import CompiledGraph, SimResult, simulate, step_time


def _speed(cg: CompiledGraph) -> np.ndarray:
    """[D] relative speed of each device (1 = fastest): serial time of the fastest / own."""
    serial = cg.serial_ms()
    return serial.min() / np.maximum(serial, 1e-12)


def single_device(cg: CompiledGraph, seed: int = 0) -> np.ndarray:
    """All ops on the fastest single device that fits; the fastest one if none fits."""
    best, best_t = None, math.inf
    for d in np.argsort(cg.serial_ms(), kind="stable"):
        p = np.full(cg.n, d, dtype=np.int64)
        if best is None:
            best = p
        t = step_time(cg, p)
        if t < best_t:
            best, best_t = p, t
    return best


def round_robin(cg: CompiledGraph, seed: int = 0) -> np.ndarray:
    """Op ``i`` (topological order) on device ``i mod D``."""
    return np.arange(cg.n, dtype=np.int64) % cg.num_devices


def expert(cg: CompiledGraph, seed: int = 0) -> np.ndarray:
    """Human-expert-like contiguous split: the topological order cut into D segments whose
    cost (on the fastest device) is proportional to each device's speed."""
    speed = _speed(cg)
    cost = cg.dur_ms[:, int(np.argmax(speed))]
    total = cost.sum()
    if total <= 0:
        return np.zeros(cg.n, dtype=np.int64)
    mid = (np.cumsum(cost) - 0.5 * cost) / total  # cost-centre of each op in [0, 1]
    bounds = np.cumsum(speed) / speed.sum()
    return np.minimum(np.searchsorted(bounds, mid, side="right"), cg.num_devices - 1).astype(np.int64)


def metis(cg: CompiledGraph, seed: int = 0) -> np.ndarray:
    """METIS k-way min-cut of the op graph (edge weight = KB transferred), vertex weight =
    cost in us on the fastest device, target part sizes proportional to device speed."""
    import pymetis

    D = cg.num_devices
    if D == 1 or cg.n <= D:
        return round_robin(cg)
    speed = _speed(cg)
    nbrs: list[dict[int, int]] = [dict() for _ in range(cg.n)]
    for i, j, b in cg.edges:
        w = max(1, int(b / 1e3))
        nbrs[i][j] = nbrs[i].get(j, 0) + w
        nbrs[j][i] = nbrs[j].get(i, 0) + w
    xadj, adjncy, ew = [0], [], []
    for nb in nbrs:
        for j, w in sorted(nb.items()):
            adjncy.append(j)
            ew.append(w)
        xadj.append(len(adjncy))
    vw = [max(1, int(1e3 * c)) for c in cg.dur_ms[:, int(np.argmax(speed))]]
    opts = pymetis.Options(seed=int(seed))
    _, parts = pymetis.part_graph(D, xadj=xadj, adjncy=adjncy, vweights=vw, eweights=ew,
                                  tpwgts=list(speed / speed.sum()), options=opts)
    return np.asarray(parts, dtype=np.int64)


def etf(cg: CompiledGraph, seed: int = 0, memory_margin: float = 0.95) -> np.ndarray:
    """Memory-aware earliest-task-first list scheduling (m-ETF).

    Repeatedly picks, over all ready ops and all devices, the (op, device) pair with the
    earliest start time (transfers estimated as latency + bytes / bandwidth, without link
    contention; ties broken by the longest remaining path). A device is eligible only if
    its running memory estimate (resident weights + live activations, a tensor freed once
    all its consumers are scheduled) stays within ``memory_margin`` of its capacity; if
    no device is eligible the op goes where it overflows least.
    """
    n, D = cg.n, cg.num_devices
    cap = cg.devices.capacity * memory_margin
    lat_ms = cg.devices.latency * 1e3
    ms_per_byte = 1e3 / cg.devices.bandwidth
    mean_dur = cg.dur_ms.mean(axis=1)
    succ: list[list[int]] = [[] for _ in range(n)]
    for i, j, _ in cg.edges:
        succ[i].append(j)
    blevel = mean_dur.copy()
    for i in range(n - 1, -1, -1):
        if succ[i]:
            blevel[i] += max(blevel[j] for j in succ[i])
    tprod, tbytes = cg.tensor_producer, cg.tensor_bytes
    out_bytes = np.bincount(tprod, weights=tbytes, minlength=n)
    res_of: list[list[int]] = [[] for _ in range(n)]
    for r, o in zip(cg.res_tensor.tolist(), cg.res_op.tolist()):
        res_of[o].append(r)
    n_cons = np.bincount(cg.cons_tensor, minlength=len(tbytes))
    left = n_cons.copy()
    npred = np.zeros(n, dtype=np.int64)
    for i, j, _ in cg.edges:
        npred[j] += 1
    ready = {i for i in range(n) if npred[i] == 0}
    place = np.full(n, -1, dtype=np.int64)
    fin = np.zeros(n)
    dev_free = np.zeros(D)
    mem = np.zeros(D)
    has_res = np.zeros((len(cg.res_bytes), D), dtype=bool)
    copies: dict[int, set[int]] = {}
    while ready:
        best = None
        for i in ready:
            arrive = np.zeros(D)
            need = np.full(D, out_bytes[i])
            for t in cg.op_inputs[i]:
                j = int(tprod[t])
                s = place[j]
                a = np.full(D, fin[j]) + lat_ms[s] + tbytes[t] * ms_per_byte[s]
                a[s] = fin[j]
                arrive = np.maximum(arrive, a)
                holders = copies.get(t, set())
                for d in range(D):
                    if d != s and d not in holders:
                        need[d] += tbytes[t]
            for r in res_of[i]:
                need += cg.res_bytes[r] * ~has_res[r]
            start = np.maximum(arrive, dev_free) + cg.dur_ms[i] * 1e-9  # prefer faster device on ties
            fits = mem + need <= cap
            if fits.any():
                d = int(np.argmin(np.where(fits, start, np.inf)))
                key = (0, start[d], -blevel[i], i)
            else:
                d = int(np.argmin(mem + need - cap))
                key = (1, start[d], -blevel[i], i)
            if best is None or key < best[0]:
                best = (key, i, d, need[d])
        _, i, d, need_d = best
        ready.remove(i)
        place[i] = d
        st = dev_free[d]
        for t in cg.op_inputs[i]:
            j = int(tprod[t])
            s = place[j]
            a = fin[j] if s == d else fin[j] + lat_ms[s, d] + tbytes[t] * ms_per_byte[s, d]
            st = max(st, a)
            if s != d:
                copies.setdefault(t, set()).add(d)
        fin[i] = st + cg.dur_ms[i, d]
        dev_free[d] = fin[i]
        mem[d] += need_d
        for r in res_of[i]:
            has_res[r, d] = True
        for t in cg.op_inputs[i]:  # free tensors whose consumers are all scheduled
            left[t] -= 1
            if left[t] == 0:
                mem[place[tprod[t]]] -= tbytes[t]
                for c in copies.pop(t, ()):
                    mem[c] -= tbytes[t]
        for t in np.flatnonzero(tprod == i):
            if n_cons[t] == 0 and not cg.tensor_is_output[t]:
                mem[d] -= tbytes[t]
        for j in succ[i]:
            npred[j] -= 1
            if npred[j] == 0:
                ready.add(j)
    return place


def anneal(cg: CompiledGraph, seed: int = 0, iters: int = 2000, start: np.ndarray | None = None,
           t0: float = 0.05, t1: float = 1e-3) -> np.ndarray:
    """Simulated annealing on the placement, minimising the simulated step time.

    Starts from ``start`` (default: the best of expert, METIS and m-ETF). A move either
    sets one random op to a random other device or (half the time) to the device of one
    of its graph neighbours. Metropolis acceptance at a temperature (relative to the
    starting step time) cooled geometrically from ``t0`` to ``t1``; out-of-memory moves
    are always rejected. Returns the best placement seen.
    """
    rng = np.random.default_rng(seed)
    n, D = cg.n, cg.num_devices
    if start is None:
        cands = [f(cg, seed) for f in (expert, metis, etf)]
        start = min(cands, key=lambda p: step_time(cg, p))
    cur = np.array(start, dtype=np.int64)
    cur_t = step_time(cg, cur)
    best, best_t = cur.copy(), cur_t
    if D == 1 or iters <= 0:
        return best
    nbrs: list[list[int]] = [[] for _ in range(n)]
    for i, j, _ in cg.edges:
        nbrs[i].append(j)
        nbrs[j].append(i)
    scale = cur_t if math.isfinite(cur_t) else cg.serial_ms().min()
    for k in range(iters):
        temp = scale * t0 * (t1 / t0) ** (k / max(1, iters - 1))
        i = int(rng.integers(n))
        old = cur[i]
        if nbrs[i] and rng.random() < 0.5:
            new = cur[nbrs[i][int(rng.integers(len(nbrs[i])))]]
        else:
            new = (old + 1 + int(rng.integers(D - 1))) % D
        if new == old:
            continue
        cur[i] = new
        t = step_time(cg, cur)
        if t <= cur_t or (math.isfinite(t) and rng.random() < math.exp(-(t - cur_t) / temp)):
            cur_t = t
            if t < best_t:
                best, best_t = cur.copy(), t
        else:
            cur[i] = old
    return best


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "single": single_device,
    "round_robin": round_robin,
    "expert": expert,
    "metis": metis,
    "etf": etf,
    "anneal": anneal,
}


def run_baseline(cg: CompiledGraph, method: str, seed: int = 0, **kwargs) -> tuple[np.ndarray, SimResult]:
    """Run a baseline by name and simulate its placement."""
    try:
        fn = BASELINES[method]
    except KeyError:
        raise ValueError(f"unknown placement method {method!r} (known: {', '.join(BASELINES)})") from None
    p = fn(cg, seed, **kwargs)
    return p, simulate(cg, p)
