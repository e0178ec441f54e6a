"""experiments.bench_runtime: a tiny run (claimed vs measured on one graph) and bad flags."""
from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")


def test_tiny_runtime_bench(tmp_path, monkeypatch, capsys):
    from experiments.bench_runtime import main

    monkeypatch.setenv("SYSWORLD_CACHE_DIR", str(tmp_path))
    out = main(["--graphs", "squeezenet", "--zoo", "none", "--costs", "ort-cpu,v100", "--rounds", "3"])
    assert not out["errors"]
    rows = {r["cost"]: r for r in out["rows"]}
    assert set(rows) == {"ort-cpu", "v100"}
    for r in rows.values():
        assert r["model"] == "builtin:squeezenet" and r["ms_before"] > 0 and r["ms_after"] > 0
        assert r["verdict"] in ("faster", "same", "slower")
        assert r["note"] or r["verdict"] == "faster"
    # under the v100 model greedy fuses every relu into its convolution; onnxruntime does that itself
    assert rows["v100"]["top_rule"].startswith("fuse_conv_relu") and rows["v100"]["claimed"] > 0.2
    assert rows["ort-cpu"]["claimed"] < 0.1
    assert out["summary"]["v100"]["models"] == 1
    assert "| builtin:squeezenet | v100 |" in capsys.readouterr().out


def test_bad_flags():
    from experiments.bench_runtime import main

    with pytest.raises(ValueError, match="--costs: unknown"):
        main(["--zoo", "none", "--costs", "tpu"])
    with pytest.raises(ValueError, match="e2e is too slow"):
        main(["--zoo", "none", "--costs", "e2e"])
    with pytest.raises(ValueError, match="--min-gain must be >= 0"):
        main(["--zoo", "none", "--min-gain", "-1"])


@pytest.mark.parametrize("first_verdict", ["faster", "same", "slower"])
def test_guard_writes_the_original_unless_the_first_timing_finds_it_faster(monkeypatch, first_verdict):
    """--guard: a first comparison chooses the written model, a second one (of that model
    against the original) is reported. The timings are replaced by fixed comparisons, so the
    choice is deterministic; the search and export are real."""
    import systems_envs.graph.measure as measure
    from experiments.bench_runtime import main

    speedup = {"faster": 1.2, "same": 1.0, "slower": 0.8}[first_verdict]
    first = measure.Comparison(1.0, 1.0 / speedup, speedup, 0.01, 0.01, 3)
    second = measure.Comparison(1.0, 0.99, 1.01, 0.02, 0.02, 3)
    assert first.verdict == first_verdict and second.verdict == "same"
    calls = []

    def fake_compare(original, optimised, **timing):
        calls.append((original, optimised))
        return first if len(calls) == 1 else second

    monkeypatch.setattr(measure, "compare_models", fake_compare)
    out = main(["--graphs", "squeezenet", "--zoo", "none", "--costs", "v100", "--rounds", "3", "--guard"])
    (row,) = out["rows"]
    assert row["rewrites"] > 0 and len(calls) == 2
    original = calls[0][0]
    assert calls[1][0] is original and calls[0][1] is not original  # the search's result was timed first
    if first_verdict == "faster":
        assert row["written"] == "optimized" and calls[1][1] is calls[0][1]
    else:
        assert row["written"] == "original" and calls[1][1] is original
        assert row["note"].startswith("original written")
    assert (row["select_speedup"], row["select_verdict"]) == (round(speedup, 3), first_verdict)
    assert (row["speedup"], row["verdict"]) == (1.01, "same")  # the second, independent timing
    assert out["summary"]["v100"]["written_optimized"] == (first_verdict == "faster")
