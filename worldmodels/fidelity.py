"""Fidelity of the world model against the real simulator, on held-out real trajectories.

For every window start s_0 (a real state of the held-out store) the imagined environment
controllers train in (`worldmodels.imagined_env.ImaginedEnv`, reset from the encoded s_0) is
stepped open loop for K = max(ks) steps under the *real* actions, and what it returned is
compared with what the simulator did. Its semantics apply: once it ends an episode (predicted
termination, rewriting's stop action or an empty predicted mask) its rewards are 0 and its
mask stays. For each k in ``ks`` (metrics named ``..._k{k}``), over the first k steps of each
window (steps after the real episode ended are excluded):

- ``reward_mae_k``: mean |predicted - real| reward per step (environment units).
- ``return_error_k``: mean over windows of |sum of predicted rewards - real sum|.
- ``cost_error_k`` (rewriting): mean relative error of the predicted cost after the window,
  ``cost(s_0) - initial_cost * sum(predicted rewards)`` (rewards are cost decreases relative
  to the episode's initial cost, so from s_0 = episode start this is
  ``initial_cost * (1 - sum)``), vs the simulator's cost.
- ``terminated_acc_k``: accuracy of the imagined env's ``terminated`` flag.
- ``final_reward_mae_k`` (when the windows hold real terminal steps): mean |predicted -
  real| reward over the steps where the real episode terminated. For placement this is the
  model's error on the episode's only non-zero reward, the simulated speedup or runtime of
  the finished placement, which a per-step MAE (mostly zero rewards) hides.
- ``mask_precision_k`` / ``mask_recall_k`` / ``mask_f1_k``: the positive class is "slot
  legal", over the existing non-stop slots of s_0 (rewriting: its offered candidates;
  placement: every device), predicted legal = in the imagined env's mask, target = the carried-slot
  legality in the real state reached (`worldmodels.replay`). The always-legal stop slot is
  left out so it cannot inflate the figures.

Baselines (``..._baseline``), same windows and steps: reward = the training data's mean
reward (the model's normaliser mean); return = that mean times the number of steps; cost
from the mean reward; termination = the training data's majority class; final reward = the
training data's mean reward on terminal steps; mask = "mask
unchanged": rewriting: every slot legal in s_0 stays legal except those applied so far in
the window; placement: s_0's mask. Rewriting adds a stronger mask baseline,
``mask_*_conflict_baseline_k``: "unchanged" minus every slot whose match shares a node with
a rewrite applied so far (the slot conflicts of s_0, `dynamics.heads.rewrite_slots`; the
rule-based part of the model's mask, `WorldModel.legal_slots`), so the learned mask head's
own contribution can be read off.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from worldmodels.imagined_env import ImaginedEnv, encode_starts, open_loop
from worldmodels.replay import REWRITE, Replay
from worldmodels.world_model import WorldModel


def _prf(pred: np.ndarray, target: np.ndarray, where: np.ndarray) -> tuple[float, float, float]:
    p, t = pred & where, target & where
    tp = float((p & t).sum())
    prec = tp / max(float(p.sum()), 1.0)
    rec = tp / max(float(t.sum()), 1.0)
    f1 = 2 * prec * rec / max(prec + rec, 1e-12)
    return prec, rec, f1


def window_starts(replay: Replay, max_windows: int, seed: int = 0) -> np.ndarray:
    """All transition indices, or ``max_windows`` of them drawn without replacement (sorted)."""
    n = replay.num_transitions
    if n == 0:
        raise ValueError("fidelity: the held-out replay store has no transitions")
    if max_windows <= 0 or max_windows >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_windows, replace=False))


def evaluate(wm: WorldModel, params, replay: Replay, ks: Sequence[int] = (1, 5, 10), seed: int = 0,
             max_windows: int = 512, reference: Replay | None = None) -> dict[str, float]:
    """Fidelity metrics and baselines (see the module docstring) as a flat dict of floats.
    ``reference``: the training store, whose termination rate and mean terminal reward the
    baselines use (default: ``replay`` itself)."""
    ks = sorted(set(int(k) for k in ks))
    kmax = ks[-1]
    if ks[0] < 1 or kmax > replay.horizon:
        raise ValueError(f"fidelity ks must be in 1..{replay.horizon} (the store's mask horizon), got {ks}")
    starts = window_starts(replay, max_windows, seed)
    w = replay.windows(starts, kmax)
    s0 = w["state"][:, 0]
    start = encode_starts(wm, params, replay, s0)
    keys = jax.random.split(jax.random.key(seed), len(starts))
    env = ImaginedEnv(wm, max_steps=kmax)
    run = jax.jit(jax.vmap(lambda p, s, a, k: open_loop(env, p, s, a, k), (None, 0, 0, 0)))
    r_pred, t_pred, m_pred = (np.asarray(x) for x in run(params, start, jnp.asarray(w["action"]), keys))
    valid = w["valid"].astype(bool)
    r_real = w["reward"].astype(np.float64)
    mean_r = float(params["norm"]["reward_mean"])
    ref = replay if reference is None else reference
    term_rate = float(ref.terminated.mean())
    final_r = float(ref.reward[ref.terminated].mean()) if ref.terminated.any() else mean_r
    a = replay.num_slots
    exists = replay.action_mask[s0, :a].astype(bool) if replay.kind == REWRITE else np.ones((len(s0), a), bool)
    target = w["next_mask"][:, :, :a].astype(bool)
    pred_mask = m_pred[:, :, :a]
    # "mask unchanged" baseline
    if replay.kind == REWRITE:
        applied = np.zeros((len(s0), kmax, a), bool)
        acts = w["action"]
        for t in range(kmax):
            hit = acts[:, t] < a
            applied[hit, t, acts[hit, t]] = True
        applied = np.cumsum(applied, axis=1) > 0
        base_mask = exists[:, None, :] & ~applied
        masks = {"": pred_mask, "_baseline": base_mask}
        if start.slots.conflicts is not None:
            conflicts = np.asarray(start.slots.conflicts)                                   # [W, A, A]
            hit = np.einsum("wta,wab->wtb", applied.astype(np.int32), conflicts.astype(np.int32)) > 0
            masks["_conflict_baseline"] = exists[:, None, :] & ~hit
    else:
        base_mask = np.broadcast_to(replay.action_mask[s0, None, :a].astype(bool), target.shape)
        masks = {"": pred_mask, "_baseline": base_mask}

    out: dict[str, float] = {"windows": float(len(starts))}
    for k in ks:
        v = valid[:, :k]
        nv = max(float(v.sum()), 1.0)
        err = np.abs(r_pred[:, :k] - r_real[:, :k])
        out[f"reward_mae_k{k}"] = float((err * v).sum() / nv)
        out[f"reward_mae_baseline_k{k}"] = float((np.abs(mean_r - r_real[:, :k]) * v).sum() / nv)
        ret_real = (r_real[:, :k] * v).sum(1)
        ret_pred = (r_pred[:, :k] * v).sum(1)
        ret_base = mean_r * v.sum(1)
        out[f"return_error_k{k}"] = float(np.abs(ret_pred - ret_real).mean())
        out[f"return_error_baseline_k{k}"] = float(np.abs(ret_base - ret_real).mean())
        term_real = w["terminated"][:, :k].astype(bool)
        out[f"terminated_acc_k{k}"] = float(((t_pred[:, :k] == term_real) & v).sum() / nv)
        out[f"terminated_acc_baseline_k{k}"] = float((((term_rate > 0.5) == term_real) & v).sum() / nv)
        final = term_real & v
        if final.any():
            out[f"final_reward_mae_k{k}"] = float(np.abs(r_pred[:, :k] - r_real[:, :k])[final].mean())
            out[f"final_reward_mae_baseline_k{k}"] = float(np.abs(final_r - r_real[:, :k])[final].mean())
        where = v[:, :, None] & exists[:, None, :]
        for name, pm in masks.items():
            p, r, f = _prf(pm[:, :k], target[:, :k], where)
            out[f"mask_precision{name}_k{k}"], out[f"mask_recall{name}_k{k}"], out[f"mask_f1{name}_k{k}"] = p, r, f
        if replay.kind == REWRITE:
            ep = np.searchsorted(replay.transition_index(), starts, side="right") - 1
            init_cost = replay.cost[replay.episode_start[ep]]
            n_steps = v.sum(1)
            cost_real = replay.cost[w["state"][np.arange(len(s0)), n_steps]]
            c0 = replay.cost[s0]
            rel = lambda pred: float(np.mean(np.abs(pred - cost_real) / np.maximum(cost_real, 1e-12)))  # noqa: E731
            out[f"cost_error_k{k}"] = rel(c0 - init_cost * ret_pred)
            out[f"cost_error_baseline_k{k}"] = rel(c0 - init_cost * ret_base)
    return out
