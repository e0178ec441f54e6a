"""The leave-one-out benchmark's pure parts: fold selection and the per-graph summary (the
targets it reports: policy at least backtracking's reduction, at most a tenth of its time)."""
import pytest

import json

from experiments.bench_loo import TIE, fold_list, main, parse_args, summarise, table
from systems_envs.graph.corpus import BENCHMARKS, ProtocolError


def _row(graph, method, reduction, seconds, seed=0, budget="-"):
    return {"graph": graph, "method": method, "reduction": reduction, "seconds": seconds, "seed": seed,
            "budget": budget}


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
    rows += [_row("squeezenet", "greedy", 0.37, 0.03, seed=1), _row("squeezenet", "backtracking", 0.4186, 1.7, seed=1),
             # a beam of width 4 reaches backtracking on squeezenet in both seeds, slower
             _row("squeezenet", "beam", 0.4186, 0.9, budget="K=4"), _row("squeezenet", "beam", 0.4186, 0.9, 1, "K=4")]
    s = summarise(rows)
    vit, sq = s["graphs"]["vit"], s["graphs"]["squeezenet"]
    assert s["learned"] == ["policy", "beam K=4"]
    assert vit["seeds"] == 2 and vit["policy"]["seconds"] == pytest.approx(0.35)
    assert vit["at_least_backtracking"]["policy"] and vit["time_ratio"]["policy"] == pytest.approx(0.05)
    assert sq["policy"]["reduction"] == pytest.approx(0.35) and not sq["at_least_backtracking"]["policy"]
    assert sq["time_ratio"]["policy"] == pytest.approx(0.5 / 1.7)
    assert sq["at_least_backtracking"]["beam K=4"] and "beam K=4" not in vit
    assert s["at_least_backtracking"] == {"policy": 1, "beam K=4": 1} and s["tenth_of_time"]["policy"] == 1
    assert s["folds"] == 2
    assert s["mean_reduction"]["policy"] == pytest.approx((0.0647 - TIE / 2 + 0.35) / 2)
    # per seed: seed 0 (0.0647 - TIE/2 + 0.30) / 2, seed 1 (0.0647 - TIE/2 + 0.40) / 2, 0.05 apart:
    # sample sd 0.05 / sqrt(2), interval t(0.975, 1) * sd / sqrt(2) = 12.706 * 0.05 / 2
    assert s["seed_means"]["policy"] == pytest.approx([(0.0647 - TIE / 2 + 0.30) / 2, (0.0647 - TIE / 2 + 0.40) / 2])
    assert s["ci95"]["policy"] == pytest.approx(12.706 * 0.05 / 2, rel=1e-3)
    assert "beam K=4" in table(s, 1000).splitlines()[0]


def test_merge_summarises_earlier_files_and_refuses_a_row_given_twice(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"rows": [_row("vit", "greedy", 0.06, 0.1), _row("vit", "backtracking", 0.0647, 7.0),
                                      _row("vit", "policy", 0.05, 0.3)]}))
    b.write_text(json.dumps({"rows": [_row("vit", "greedy", 0.06, 0.1, 1), _row("vit", "backtracking", 0.0647, 7.0, 1),
                                      _row("vit", "policy", 0.07, 0.3, 1)]}))
    out = main(["--merge", f"{a},{b}", "--logdir", str(tmp_path / "all")])
    assert out["graphs"]["vit"]["seeds"] == 2 and out["mean_reduction"]["policy"] == pytest.approx(0.06)
    assert (tmp_path / "all" / "table.md").read_text().startswith("| left-out graph")
    with pytest.raises(ValueError, match="also in an earlier file"):
        main(["--merge", f"{a},{a}", "--logdir", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="not a readable loo.json"):
        main(["--merge", str(tmp_path / "missing.json"), "--logdir", str(tmp_path / "x")])
