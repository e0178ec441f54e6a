"""experiments.optimize end to end: JSON summary, ONNX export equivalence, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args, timeout=240):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "experiments.optimize", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_optimize_squeezenet_greedy_and_export(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from systems_envs.graph.models import build_graph
    from systems_envs.graph.onnx_io import export_onnx

    out = tmp_path / "opt.onnx"
    r = _run("squeezenet", "--search", "greedy", "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    for k in ("graph", "ops_before", "ops_after", "cost_before_ms", "cost_after_ms", "reduction", "rewrites", "seconds"):
        assert k in summary
    assert summary["cost_after_ms"] < summary["cost_before_ms"] and summary["rewrites"] > 0
    ref_path = tmp_path / "ref.onnx"
    export_onnx(build_graph("squeezenet"), ref_path)

    def run(path):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in sess.get_inputs()}
        return sess.run(None, feeds)

    for a, b in zip(run(ref_path), run(out)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_optimize_backtrack_small_budget():
    r = _run("squeezenet", "--search", "backtrack", "--budget", "3", "--no-taso")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["cost_after_ms"] <= s["cost_before_ms"] and s["expanded"] <= 3


@pytest.mark.parametrize("args", [("missing_file.onnx",), ("not_a_graph",), ("squeezenet", "--budget", "0"),
                                  ("squeezenet", "--out", "x.txt")])
def test_optimize_bad_input(args):
    r = _run(*args, timeout=120)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
