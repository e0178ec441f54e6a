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
