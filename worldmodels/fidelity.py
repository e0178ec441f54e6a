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

Placement with an outcome model (`worldmodels.outcome`; ``evaluate(..., outcome=...)``): the
imagined env's final reward is the outcome model's score of the imagined final assignment,
so ``final_reward_mae_k`` measures it, and ``final_reward_spearman_k`` /
``final_reward_kendall_k`` / ``final_reward_regret_k`` add `outcome_metrics` of predicted vs
real final rewards over those terminal steps (per graph of the store). Its termination is
exact there (the last group assigned), so ``terminated_acc_k`` is 1.

`outcome_metrics` scores an outcome model on sets of finished placements: MAE against the
predict-the-mean baseline, Spearman and Kendall rank correlation with the simulator, and
the top-1 regret (see its docstring).
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
             max_windows: int = 512, reference: Replay | None = None, outcome=None) -> dict[str, float]:
    """Fidelity metrics and baselines (see the module docstring) as a flat dict of floats.
    ``reference``: the training store, whose termination rate and mean terminal reward the
    baselines use (default: ``replay`` itself). ``outcome``: (OutcomeModel, params) for the
    imagined env's final placement reward (`worldmodels.imagined_env`)."""
    ks = sorted(set(int(k) for k in ks))
    kmax = ks[-1]
    if ks[0] < 1 or kmax > replay.horizon:
        raise ValueError(f"fidelity ks must be in 1..{replay.horizon} (the store's mask horizon), got {ks}")
    starts = window_starts(replay, max_windows, seed)
    w = replay.windows(starts, kmax)
    s0 = w["state"][:, 0]
    start = encode_starts(wm, params, replay, s0, placed=outcome is not None)
    keys = jax.random.split(jax.random.key(seed), len(starts))
    env = ImaginedEnv(wm, max_steps=kmax, outcome=outcome)
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
            if outcome is not None:   # ranking of the finished placements, per graph
                ep = np.searchsorted(replay.transition_index(), starts, side="right") - 1
                graph = np.broadcast_to(replay.episode_graph[ep][:, None], final.shape)[final]
                om = outcome_metrics(r_pred[:, :k][final], r_real[:, :k][final], graph, final_r)
                for name in ("spearman", "kendall", "regret"):
                    out[f"final_reward_{name}_k{k}"] = om[name]
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


def outcome_metrics(pred, real, group, mean_reward: float) -> dict[str, float]:
    """Fidelity of predicted final rewards ``pred`` [B] against the simulator's ``real`` [B]
    (environment units, higher is better) for placements of graphs ``group`` [B].

    - ``mae``: mean |pred - real|; ``mae_baseline``: mean |mean_reward - real| (predict the
      training data's mean); ``mae_ratio`` = mae / mae_baseline.
    - ``spearman`` / ``kendall``: rank correlation (`scipy.stats.spearmanr`, Kendall's tau-b)
      between pred and real *within each graph*, averaged over the graphs (a controller
      compares placements of one graph; pooled across graphs the correlation would mostly
      reward telling graphs apart); ``spearman_pooled`` over all placements together.
    - ``regret``: per graph, real best reward in the set minus the real reward of the
      placement the model ranks first, averaged over graphs; ``regret_rel``: the same divided
      by the best reward (a fraction).
    Graphs with fewer than 2 placements or constant rewards get no correlation (skipped; nan
    if no graph has one)."""
    from scipy import stats

    pred, real, group = np.asarray(pred, np.float64), np.asarray(real, np.float64), np.asarray(group)
    if not (pred.shape == real.shape == group.shape) or pred.ndim != 1 or len(pred) == 0:
        raise ValueError(f"outcome metrics: pred, real and group must be equal non-empty 1-D arrays, "
                         f"got shapes {pred.shape}, {real.shape}, {group.shape}")
    rho, tau, reg, reg_rel = [], [], [], []
    for g in np.unique(group):
        m = group == g
        p, r = pred[m], real[m]
        if len(p) >= 2 and np.ptp(r) > 0 and np.ptp(p) > 0:
            rho.append(stats.spearmanr(p, r).statistic)
            tau.append(stats.kendalltau(p, r).statistic)
        best = r.max()
        reg.append(best - r[int(np.argmax(p))])
        reg_rel.append(reg[-1] / abs(best) if best != 0 else np.nan)
    mae = float(np.abs(pred - real).mean())
    base = float(np.abs(mean_reward - real).mean())
    pooled = stats.spearmanr(pred, real).statistic if len(pred) >= 2 and np.ptp(real) > 0 and np.ptp(pred) > 0 else np.nan
    nanmean = lambda x: float(np.mean(x)) if len(x) else float("nan")  # noqa: E731
    return {"n": float(len(pred)), "graphs": float(len(np.unique(group))), "mae": mae, "mae_baseline": base,
            "mae_ratio": mae / base if base > 0 else float("nan"), "spearman": nanmean(rho), "kendall": nanmean(tau),
            "spearman_pooled": float(pooled), "regret": nanmean(reg), "regret_rel": nanmean(reg_rel)}
