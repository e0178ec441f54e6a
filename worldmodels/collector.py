"""The real-environment collector (a driver): B real environments stepped together by a
policy, recording every episode for the replay store and, if asked, the PPO-format batch.
The loop uses it for training data (`Collector.collect`), validation (`Collector.episode`)
and whole-episode fitness (`Collector.episode_return`); tests drive it directly.

Observations handed to policies are the task's graph observations (`worldmodels.tasks`),
passed through ``featurize`` (model-free: stacked and padded; model-based: encoded by the
world model). Each `collect` call resets the environments first with seeds drawn from its
key, so a call is a pure function of (key, policy state): what makes kill -9 resume exact.
"""
from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax
import numpy as np

from controllers.rollout import Transition
from worldmodels.episodes import EpisodeRecord


class Collected(NamedTuple):
    records: list          # finished `EpisodeRecord`s (the cut last ones marked truncated)
    batch: Transition | None   # [T, B] when asked for
    returns: list          # returns of the episodes completed in this call
    graph_obs: list        # [T] lists of B graph observations the actions were taken in
    steps: int             # real environment steps taken


def random_legal(mask, rng: np.random.Generator) -> int:
    """Uniform over the legal non-stop actions of an [A+1] mask (stop if none)."""
    m = np.asarray(mask).astype(bool)
    moves = np.flatnonzero(m[:-1])
    return int(rng.choice(moves)) if len(moves) else len(m) - 1


class Collector:
    """B real environments of ``task`` over its training instances."""

    def __init__(self, task, num_envs: int):
        self.task = task
        self.envs = [task.make_env(task.train) for _ in range(num_envs)]
        self._eval_envs: dict[str, object] = {}

    def _record(self, env, o, info) -> EpisodeRecord:
        rec = EpisodeRecord(self.task.instance_index(info, self.task.train))
        rec.add_state(*self.task.replay_state(o, env, info))
        return rec

    def collect(self, key, steps: int, act: Callable | None = None, featurize: Callable | None = None,
                values: Callable | None = None, explore_eps: float = 0.0, want_batch: bool = False) -> Collected:
        """``steps`` steps of each environment (reset first, auto-reset). ``act(feats, key) ->
        (action, log_prob, value)`` [B] on ``featurize(graph observations)``; None: uniform
        random legal actions. ``explore_eps``: a random legal action with this probability.
        ``want_batch``: also the PPO `Transition` [T, B] (``values(feats)`` gives the
        bootstrap values)."""
        task, envs, B = self.task, self.envs, len(self.envs)
        kr, key = jax.random.split(key)
        seeds = np.asarray(jax.random.randint(kr, (B,), 0, 2**31 - 1))
        raw, gobs, recs = [], [], []
        for i, env in enumerate(envs):
            o, info = env.reset(seed=int(seeds[i]))
            raw.append(o)
            gobs.append(task.graph_obs(o))
            recs.append(self._record(env, o, info))
        rng = np.random.default_rng(int(seeds[0]))
        done_recs, ep_returns, ep_ret = [], [], np.zeros(B)
        cols = {k: [] for k in Transition._fields}
        steps_obs: list[list[dict]] = []
        feats = featurize(gobs) if act is not None else None
        for t in range(steps):
            key, ka = jax.random.split(key)
            if act is None:
                a, lp, v = np.array([random_legal(g["action_mask"], rng) for g in gobs]), 0, 0
            else:
                a, lp, v = act(feats, ka)
                a = np.array(a)
                for i in range(B):
                    if explore_eps > 0 and rng.random() < explore_eps:
                        a[i] = random_legal(gobs[i]["action_mask"], rng)
            steps_obs.append(list(gobs))
            rew, te, tr, er = (np.zeros(B, np.float32), np.zeros(B, bool), np.zeros(B, bool), np.zeros(B, np.float32))
            finals = {}
            for i, env in enumerate(envs):
                o, r, term, trunc, info = env.step(int(a[i]))
                rec = recs[i]
                rec.add_step(a[i], r, term, trunc)
                rec.add_state(*task.replay_state(o, env, info))
                rew[i], te[i], tr[i] = r, term, trunc
                ep_ret[i] += r
                if term or trunc:
                    er[i] = ep_ret[i]
                    ep_returns.append(ep_ret[i])
                    ep_ret[i] = 0.0
                    done_recs.append(rec)
                    if trunc and not term:
                        finals[i] = task.graph_obs(o)
                    o, info = env.reset()
                    recs[i] = self._record(env, o, info)
                raw[i] = o
                gobs[i] = task.graph_obs(o)
            if act is not None and want_batch:
                cols["obs"].append(feats); cols["action"].append(a); cols["log_prob"].append(np.asarray(lp))
                cols["value"].append(np.asarray(v)); cols["reward"].append(rew); cols["terminated"].append(te)
                cols["truncated"].append(tr); cols["episode_return"].append(er)
                feats = featurize(gobs)
                nv = values(feats)
                if finals:
                    nv_f = values(featurize([finals.get(i, gobs[i]) for i in range(B)]))
                    nv = np.where([i in finals for i in range(B)], nv_f, nv)
                cols["next_value"].append(np.where(te, 0.0, nv).astype(np.float32))
            elif act is not None:
                feats = featurize(gobs)
        for rec in recs:  # cut episodes: keep them, marked truncated
            if rec.actions:
                rec.truncs[-1] = True
                done_recs.append(rec)
        batch = None
        if cols["obs"]:
            stack = lambda xs: jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(x) for x in a]), *xs)  # noqa: E731
            batch = Transition(obs=stack(cols["obs"]), **{k: np.stack(cols[k]) for k in Transition._fields if k != "obs"})
        return Collected(done_recs, batch, ep_returns, steps_obs, steps * B)

    def eval_env(self, instance: str):
        """The (cached) real environment of one instance, for validation."""
        if instance not in self._eval_envs:
            self._eval_envs[instance] = self.task.make_env([instance])
        return self._eval_envs[instance]

    def episode(self, instance: str, key, act: Callable, featurize: Callable, batch: int) -> dict:
        """One real episode of ``instance`` (reset seed 0) by ``act`` on ``featurize`` of the
        observation repeated ``batch`` times (the batch size of collection: no new compile).
        Returns the task's ``metric``, its details, the return, wall seconds, ``first`` (the
        featurized first observation) and ``first_obs`` (its graph observation)."""
        env = self.eval_env(instance)
        t0 = time.perf_counter()
        o, first_info = env.reset(seed=0)
        info, ret, done, first = first_info, 0.0, False, None
        first_obs = self.task.graph_obs(o)
        while not done:
            key, k = jax.random.split(key)
            feats = featurize([self.task.graph_obs(o)] * batch)
            if first is None:
                first = feats
            a = int(np.asarray(act(feats, k)[0])[0])
            o, r, te, tr, info = env.step(a)
            ret += r
            done = te or tr
        return {self.task.metric: self.task.episode_metric(first_info, info, ret), "return": ret,
                "seconds": time.perf_counter() - t0, **self.task.episode_details(first_info, info), "first": first,
                "first_obs": first_obs}

    def episode_return(self, action_fn: Callable, seed: int, instance: str | None = None) -> tuple[float, int]:
        """(return, steps) of one real episode of the first environment (reset ``seed``), or of
        ``instance``'s (`eval_env`), by ``action_fn(graph observation) -> action``."""
        env = self.envs[0] if instance is None else self.eval_env(instance)
        o, _ = env.reset(seed=seed)
        ret, steps, done = 0.0, 0, False
        while not done:
            o, r, te, tr, _ = env.step(action_fn(self.task.graph_obs(o)))
            ret += r
            steps += 1
            done = te or tr
        return ret, steps
