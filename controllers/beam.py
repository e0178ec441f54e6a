"""Policy-guided beam search on the real rewriting simulator.

The search keeps the ``width`` best partial rewrite sequences (beams) and grows them one
real step at a time. At each depth every beam's observation is scored by the policy in one
batch; each beam proposes its ``expand`` most probable legal actions. Proposing stop ends
that beam; every other proposal is applied to a clone of the beam's environment
(`GraphRewriteEnv.clone`: the real simulator, so the candidates a rewrite creates are
offered at once). Children that reach a graph another child reached at this depth (the same
rewrites in another order) are merged. The ``width`` children of lowest real cost survive
(ties: the higher summed log-probability). The search ends when no beam is left or when the
environment ends the episode (its ``max_steps``), and returns the cheapest graph it has
seen, never worse than the input.

``width=1, expand=1`` is the policy alone: its most probable action at every step, until it
stops (one clone of the environment stepped in place, no merging: the same result as the
general search with one beam, without its per-step clone and graph hash). Cost: at most
``width * expand`` real environment steps per depth, plus one batched policy evaluation.
"""
from __future__ import annotations

import time
from typing import Callable, NamedTuple, Sequence

import numpy as np

from systems_envs.rewrite.search import SearchResult, StructuralHasher

class Beam(NamedTuple):
    env: object                      # a `GraphRewriteEnv` (unwrapped) in this beam's state
    obs: dict                        # its observation
    logp: float                      # summed log-probability of the actions taken
    rewrites: list                   # [(rule name, matched node ids)] from the start


def beam_search(env, obs: dict, policy: Callable[[Sequence[dict]], np.ndarray], width: int = 4,
                expand: int = 4, progress: Callable[[str], None] | None = None) -> SearchResult:
    """Beam search from ``env`` (a `GraphRewriteEnv` after ``reset``; it is cloned, never
    stepped) whose current observation is ``obs``.

    ``policy(observations) -> log-probabilities`` float [len, A+1] (illegal actions very
    negative; only legal actions are ever proposed). Returns a `SearchResult` whose
    ``expanded`` counts the real environment steps taken."""
    if width < 1 or expand < 1:
        raise ValueError(f"beam search needs width >= 1 and expand >= 1, got {width} and {expand}")
    if width == 1 and expand == 1:
        return _greedy_rollout(env, obs, policy)
    t0 = time.perf_counter()
    cost0 = env.index.cost
    best = (cost0, env.graph.copy(), [])
    beams = [Beam(env, obs, 0.0, [])]
    hasher = StructuralHasher()
    steps = depth = 0
    while beams:
        depth += 1
        logp = np.asarray(policy([b.obs for b in beams]), np.float64)
        children: dict[tuple, tuple[float, float, Beam]] = {}
        for b, lp in zip(beams, logp):
            legal = np.flatnonzero(np.asarray(b.obs["action_mask"]) > 0)
            top = legal[np.argsort(-lp[legal], kind="stable")[:expand]]
            stop = len(lp) - 1
            for a in top:
                if a == stop:
                    continue
                child = b.env.clone()
                o, _, term, trunc, info = child.step(int(a))
                steps += 1
                cost = child.index.cost
                rewrites = b.rewrites + [(info["rule"], tuple(info["location"]))]
                if cost < best[0]:
                    best = (cost, child.graph.copy(), rewrites)
                if term or trunc:
                    continue          # the episode ended here: nothing left to grow
                h, s = hasher.full(child.graph)
                key = hasher.graph_key(child.graph, h, s)
                score = b.logp + float(lp[a])
                old = children.get(key)
                if old is None or (cost, -score) < (old[0], -old[1]):
                    children[key] = (cost, score, Beam(child, o, score, rewrites))
        ranked = sorted(children.values(), key=lambda c: (c[0], -c[1]))
        beams = [c[2] for c in ranked[:width]]
        if progress:
            progress(f"beam depth {depth}: {len(beams)} beams, best {best[0]:.4f} ms, {steps} real steps")
    return SearchResult(best[1], cost0, best[0], best[2], time.perf_counter() - t0, steps)


class RealPath:
    """Real steps taken one after another on ``env`` (stepped in place) and the cheapest graph
    seen along them: the bookkeeping of the searches that follow one path (the policy alone,
    MCTS re-rooted at the real state)."""

    def __init__(self, env):
        self.env, self.t0 = env, time.perf_counter()
        self.cost0 = env.index.cost
        self.best = (self.cost0, env.graph.copy(), [])    # (cost ms, graph, rewrites to it)
        self.rewrites: list = []
        self.steps = 0

    def step(self, action: int) -> tuple[dict, bool]:
        """Apply ``action``; returns the new observation and whether the episode ended."""
        obs, _, term, trunc, info = self.env.step(int(action))
        self.steps += 1
        self.rewrites.append((info["rule"], tuple(info["location"])))
        if self.env.index.cost < self.best[0]:
            self.best = (self.env.index.cost, self.env.graph.copy(), list(self.rewrites))
        return obs, term or trunc

    def result(self) -> SearchResult:
        """The cheapest graph seen; ``expanded`` = real steps taken."""
        cost, graph, rewrites = self.best
        return SearchResult(graph, self.cost0, cost, rewrites, time.perf_counter() - self.t0, self.steps)


def _greedy_rollout(env, obs: dict, policy) -> SearchResult:
    """The policy alone: `beam_search` with ``width = expand = 1`` on one clone of ``env``."""
    path = RealPath(env.clone())
    while True:
        lp = np.asarray(policy([obs]), np.float64)[0]
        legal = np.flatnonzero(np.asarray(obs["action_mask"]) > 0)
        a = int(legal[np.argsort(-lp[legal], kind="stable")[0]])
        if a == len(lp) - 1:
            break
        obs, ended = path.step(a)
        if ended:
            break
    return path.result()
