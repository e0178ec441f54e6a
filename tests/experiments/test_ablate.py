"""`python -m experiments.ablate`: flag errors, the bootstrap, and a tiny grid (2 runs)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.ablate import bootstrap_ci, parse

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_grid_errors_name_the_field():
    with pytest.raises(ValueError, match="did you mean --loop.mode"):
        parse(["--grid", "loop.mod=model_free"])
    with pytest.raises(ValueError, match="cannot parse 'x' as int"):
        parse(["--grid", "loop.imagined_envs=4,x"])


def test_bootstrap_interval_contains_the_mean():
    m, lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and lo < m < hi and 1.0 <= lo and hi <= 4.0
    assert np.isnan(bootstrap_ci([])[0])


def test_ray_missing_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "experiments.ablate", "--grid", "seed=0", "--seeds", "1",
                        "--ray", "127.0.0.1:1", "--logdir", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    try:
        import ray  # noqa: F401
        pytest.skip("ray is installed")
    except ImportError:
        pass
    assert r.returncode == 2 and "needs the 'ray' package" in r.stderr and "Traceback" not in r.stderr


def test_tiny_ablation_over_mode(tmp_path):
    r = subprocess.run([sys.executable, "-m", "experiments.ablate", "--base", "tiny", "--grid",
                        "loop.mode=model_based,model_free", "--seeds", "1", "--workers", "2", "--logdir", str(tmp_path),
                        "--", "--loop.total_env_steps", "32"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    for f in ("table.md", "table.csv", "results.csv", "curves.png"):
        assert (tmp_path / f).exists()
    md = (tmp_path / "table.md").read_text()
    assert "loop.mode=model_based" in md and "loop.mode=model_free" in md


def test_bench_steps_to_reach():
    from experiments.bench_train import steps_to_reach
    curve = [(128, 0.1), (256, 0.3), (512, 0.2)]
    assert steps_to_reach(curve, 0.25) == 256
    assert steps_to_reach(curve, 0.5) is None
