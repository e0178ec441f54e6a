"""experiments.bench_world_model on tiny sizes: the rows, the JSON, the env arguments it
passes through (``--data.*``), and bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from experiments import bench_world_model

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--real_seconds", "0.2", "--episodes", "1", "--batch", "8", "--horizon", "3", "--repeats", "1",
        "--train_steps", "1", "--model.batch_size", "2"]


def test_bench_rewrite_tiny(tmp_path):
    out = tmp_path / "bench.json"
    (row,) = bench_world_model.main(["--graphs", "squeezenet", "--data.max_candidates", "8", "--out", str(out), *TINY])
    assert row["graph"] == "squeezenet"
    assert row["real_tps"] > 0 and row["imagined_tps"] > 0 and row["train_steps_per_s"] > 0 and row["peak_rss_mb"] > 0
    assert row["ratio"] == row["imagined_tps"] / row["real_tps"]
    saved = json.loads(out.read_text())
    assert saved["rows"] == [row] and saved["config"]["data"]["max_candidates"] == 8


def test_bench_placement_uses_data_section(monkeypatch):
    seen = []
    real = bench_world_model.real_rate
    monkeypatch.setattr(bench_world_model, "real_rate",
                        lambda env_id, graph, kw, *a: seen.append(kw) or real(env_id, graph, kw, *a))
    (row,) = bench_world_model.main(["--env", "DevicePlacement-v0", "--graphs", "squeezenet",
                                     "--data.devices", "gpu2", "--data.groups", "8", *TINY])
    assert seen == [{"devices": "gpu2", "reward": "speedup", "groups": 8}]
    assert row["imagined_tps"] > 0


def test_bench_refuses_load():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "experiments.bench_world_model", "--data.load", "x.npz"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--data.load does not apply" in r.stderr and "Traceback" not in r.stderr
