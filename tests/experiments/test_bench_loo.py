"""The leave-one-out benchmark's pure parts: fold selection and the per-graph summary (the
targets it reports: policy at least backtracking's reduction, at most a tenth of its time)."""
import pytest

from experiments.bench_loo import TIE, fold_list, parse_args, summarise
from systems_envs.graph.corpus import BENCHMARKS, ProtocolError


def _row(graph, method, reduction, seconds, seed=0):
    return {"graph": graph, "method": method, "reduction": reduction, "seconds": seconds, "seed": seed}


def test_folds_all_is_the_eight_benchmarks_and_unknown_folds_are_refused():
    assert fold_list("all") == [f"loo:{b}" for b in BENCHMARKS] and len(BENCHMARKS) == 8
    assert fold_list("loo:vit, loo:bert") == ["loo:vit", "loo:bert"]
    with pytest.raises(ProtocolError, match="unknown leave-one-out fold 'generated'"):
        fold_list("generated")
    with pytest.raises(ValueError, match="--steps must be >= 1"):
        parse_args(["--steps", "0"])
    assert parse_args(["--seeds", "2", "--", "--loop.mode", "model_free"]).extra == ["--loop.mode", "model_free"]


def test_summary_means_over_seeds_and_counts_the_targets():
    rows = [
        # vit: the policy ties backtracking (within TIE) in a twentieth of its time
        _row("vit", "greedy", 0.06, 0.1), _row("vit", "backtracking", 0.0647, 7.0),
        _row("vit", "policy", 0.0647 - TIE / 2, 0.3), _row("vit", "policy", 0.0647 - TIE / 2, 0.4, seed=1),
        _row("vit", "greedy", 0.06, 0.1, seed=1), _row("vit", "backtracking", 0.0647, 7.0, seed=1),
        # squeezenet: seeds 0.30 and 0.40 average to 0.35 < 0.4186, and 0.5 s > 1.7 s / 10
        _row("squeezenet", "greedy", 0.37, 0.03), _row("squeezenet", "backtracking", 0.4186, 1.7),
        _row("squeezenet", "policy", 0.30, 0.4), _row("squeezenet", "policy", 0.40, 0.6, seed=1),
    ]
    s = summarise(rows)
    vit, sq = s["graphs"]["vit"], s["graphs"]["squeezenet"]
    assert vit["seeds"] == 2 and vit["policy"]["seconds"] == pytest.approx(0.35)
    assert vit["at_least_backtracking"] and vit["time_ratio"] == pytest.approx(0.05)
    assert sq["policy"]["reduction"] == pytest.approx(0.35) and not sq["at_least_backtracking"]
    assert sq["time_ratio"] == pytest.approx(0.5 / 1.7)
    assert s["at_least_backtracking"] == 1 and s["tenth_of_time"] == 1 and s["folds"] == 2
    assert s["mean_reduction"]["policy"] == pytest.approx((0.0647 - TIE / 2 + 0.35) / 2)
