"""Non-learned memory mappings for ``MemoryPlacement-v0`` (NumPy only), next to the
compiler-like default `systems_envs.placement.memory.greedy_mapping`.

Every function returns ``(w_level [L], a_level [L])`` level indices (0 = fastest);
`run_memory_baseline` also evaluates the mapping (`evaluate_mapping`).

* ``compiler``: `greedy_mapping`, tensors smallest first, each to the fastest level where it
  fits (the modelled compiler default).
* ``gain_density``: knapsack-style greedy: each tensor's time saved if moved from the slowest
  to the fastest level (on the roofline of every layer that touches it: a compute-bound
  layer saves nothing), divided by its bytes; tensors in decreasing order of that density,
  each to the fastest level where it fits.
* ``anneal``: simulated annealing from the better of the two above: a move sets one tensor
  (weights or activation of a random layer) to a random other level; over-capacity
  mappings are rejected; Metropolis acceptance on the latency at a temperature cooled
  geometrically; ``iters`` evaluations; the best mapping seen.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from systems_envs.placement.memory import (Accelerator, LayerGraph, MappingResult, check_capacity, evaluate_mapping,
                                           greedy_mapping, layer_times_ms)


def compiler(lg: LayerGraph, acc: Accelerator, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return greedy_mapping(lg, acc)


def _fill(lg: LayerGraph, acc: Accelerator, order: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Tensors (kind 0 = weights, 1 = activation; layer) in ``order``, each to the fastest
    level that still fits; the slowest level if none does."""
    L, M = len(lg), len(acc.levels)
    w, a = np.full(L, -1), np.full(L, -1)
    caps = np.array([lv.capacity for lv in acc.levels])
    for kind, i in order:
        arr = w if kind == 0 else a
        for m in range(M):
            arr[i] = m
            if np.all(check_capacity(lg, acc, w, a) <= caps):
                break
    return w, a


def gain_density(lg: LayerGraph, acc: Accelerator, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    L, M = len(lg), len(acc.levels)
    slow = np.full(L, M - 1)
    base = layer_times_ms(lg, acc, slow, slow).sum()
    items = []
    for kind in (0, 1):
        for i in range(L):
            size = (lg.w_bytes if kind == 0 else lg.a_bytes)[i]
            if size <= 0:
                continue
            w, a = slow.copy(), slow.copy()
            (w if kind == 0 else a)[i] = 0
            gain = base - layer_times_ms(lg, acc, w, a).sum()
            items.append((-gain / size, size, kind, i))
    order = [(k, i) for _, _, k, i in sorted(items)]
    done = {(k, i) for k, i in order}
    order += [(k, i) for k in (0, 1) for i in range(L) if (k, i) not in done]
    return _fill(lg, acc, order)


def anneal(lg: LayerGraph, acc: Accelerator, seed: int = 0, iters: int = 2000, t0: float = 0.02,
           t1: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    L, M = len(lg), len(acc.levels)
    starts = [f(lg, acc) for f in (compiler, gain_density)]
    cur_w, cur_a = min(starts, key=lambda p: evaluate_mapping(lg, acc, *p).latency_ms)
    cur_w, cur_a = cur_w.copy(), cur_a.copy()
    cur = evaluate_mapping(lg, acc, cur_w, cur_a).latency_ms
    best = (cur, cur_w.copy(), cur_a.copy())
    for k in range(iters):
        temp = cur * t0 * (t1 / t0) ** (k / max(1, iters - 1))
        i, kind = int(rng.integers(L)), int(rng.integers(2))
        arr = cur_w if kind == 0 else cur_a
        old = arr[i]
        arr[i] = (old + 1 + int(rng.integers(M - 1))) % M
        lat = evaluate_mapping(lg, acc, cur_w, cur_a).latency_ms
        if lat <= cur or (math.isfinite(lat) and rng.random() < math.exp(-(lat - cur) / temp)):
            cur = lat
            if lat < best[0]:
                best = (lat, cur_w.copy(), cur_a.copy())
        else:
            arr[i] = old
    return best[1], best[2]


MEMORY_BASELINES: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "compiler": compiler,
    "gain_density": gain_density,
    "anneal": anneal,
}


def run_memory_baseline(lg: LayerGraph, acc: Accelerator, method: str, seed: int = 0,
                        **kwargs) -> tuple[tuple[np.ndarray, np.ndarray], MappingResult]:
    """Run a memory baseline by name and evaluate its mapping."""
    try:
        fn = MEMORY_BASELINES[method]
    except KeyError:
        raise ValueError(f"unknown memory mapping method {method!r} (known: {', '.join(MEMORY_BASELINES)})") from None
    w, a = fn(lg, acc, seed, **kwargs)
    return (w, a), evaluate_mapping(lg, acc, w, a)
