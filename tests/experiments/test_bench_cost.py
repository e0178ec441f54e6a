"""experiments.bench_cost: a tiny calibration run, the figures it reports, and bad flags."""
from __future__ import annotations

import math

import pytest

pytest.importorskip("onnxruntime")


def test_tiny_calibration_run(tmp_path, monkeypatch, capsys):
    from experiments.bench_cost import main

    monkeypatch.setenv("SYSWORLD_CACHE_DIR", str(tmp_path))
    out = main(["--graphs", "squeezenet", "--zoo", "none", "--variants", "3", "--steps", "3", "--rounds", "2"])
    graphs = out["graphs"]
    assert len(graphs) >= 3 and graphs[0]["variant"] == "original"
    for g in graphs:
        assert g["measured_ms"] > 0 and g["ort-cpu"] > 0 and g["v100"] > 0
    for name in ("ort-cpu", "v100"):
        f = out["figures"][name]
        assert math.isnan(f["spearman"]) or -1.0 <= f["spearman"] <= 1.0
        assert f["median_rel_error"] >= 0
    # the v100 model predicts a GPU: its milliseconds are far from this CPU's
    assert out["figures"]["v100"]["median_rel_error"] > out["figures"]["ort-cpu"]["median_rel_error"]
    assert "| ort-cpu |" in capsys.readouterr().out


@pytest.mark.parametrize("args, msg", [(["--graphs", "nope"], "--graphs: unknown"),
                                       (["--costs", "e2e"], "measurement itself"),
                                       (["--rounds", "1"], "--rounds")])
def test_bad_flags(args, msg):
    from experiments.bench_cost import main

    with pytest.raises(ValueError, match=msg):
        main(["--zoo", "none", *args])
