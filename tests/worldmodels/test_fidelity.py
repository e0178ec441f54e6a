"""Fidelity metrics: the baselines are computed exactly; model metrics are well-formed."""
import numpy as np
import pytest

from worldmodels.fidelity import _prf, evaluate
from worldmodels.world_model import WorldModelConfig

CFG = WorldModelConfig(width=8, depth=1, latent_dim=8, hidden=16, slot_width=8, mixtures=2)


@pytest.fixture(scope="module")
def setup(small_world):
    return small_world(CFG, episodes=2, seed=1, max_steps=5, horizon=5)


def test_metrics_and_exact_baselines(setup):
    store, wm, params = setup
    m = evaluate(wm, params, store, ks=(1, 5), max_windows=0)
    assert m["windows"] == store.num_transitions
    for k in (1, 5):
        for name in ("reward_mae", "return_error", "terminated_acc", "mask_precision", "mask_recall", "mask_f1",
                     "cost_error"):
            assert np.isfinite(m[f"{name}_k{k}"]) and np.isfinite(m[f"{name}_baseline_k{k}"])
        assert 0 <= m[f"mask_f1_k{k}"] <= 1
    # one-step baselines, recomputed directly from the store
    mean_r = float(params["norm"]["reward_mean"])
    assert np.isclose(m["reward_mae_baseline_k1"], np.abs(mean_r - store.reward).mean(), rtol=1e-5)
    a = store.num_slots
    s = store.state_of
    legal = store.action_mask[s, :a].astype(bool)
    hit = store.action < a
    base = legal.copy()
    base[np.flatnonzero(hit), store.action[hit]] = False
    target = store.carried_mask[s, 0, :a].astype(bool)
    _, _, f1 = _prf(base, target, legal)
    assert np.isclose(m["mask_f1_baseline_k1"], f1)
    # conflict baseline: also drop every candidate sharing a (real) node with the applied one
    conf = base.copy()
    for t in np.flatnonzero(hit):
        nodes = store.candidate_nodes[s[t]]
        applied = set(nodes[store.action[t]][nodes[store.action[t]] >= 0])
        conf[t] &= ~np.array([bool(applied & set(n[n >= 0])) for n in nodes])
    _, _, f1c = _prf(conf, target, legal)
    assert np.isclose(m["mask_f1_conflict_baseline_k1"], f1c)
    # cost baseline from the mean reward: cost(s0) - initial * mean vs the real next cost
    ep = np.searchsorted(store.transition_index(), np.arange(len(s)), side="right") - 1
    init = store.cost[store.episode_start[ep]]
    pred = store.cost[s] - init * mean_r
    assert np.isclose(m["cost_error_baseline_k1"], np.mean(np.abs(pred - store.cost[s + 1]) / store.cost[s + 1]))


def test_prf_and_errors(setup):
    p = np.array([True, True, False, False])
    t = np.array([True, False, True, False])
    assert _prf(p, t, np.ones(4, bool)) == (0.5, 0.5, 0.5)
    store, wm, params = setup
    with pytest.raises(ValueError, match="ks"):
        evaluate(wm, params, store, ks=(1, 6))
