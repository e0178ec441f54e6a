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


def test_reach_rows_model_based_against_model_free():
    from experiments.ablate import mean_curve, reach_rows
    mb = [[(64, 0.2), (128, 0.6), (256, 0.7)], [(64, 0.4), (128, 0.6), (256, 0.9)]]  # mean 0.3, 0.6, 0.8
    mf = [[(64, 0.1), (128, 0.3), (256, 0.5)], [(64, 0.1), (128, 0.5), (256, 0.7)]]  # mean 0.1, 0.4, 0.6
    steps, mean, lo, hi = mean_curve(mb)
    assert steps.tolist() == [64, 128, 256] and np.allclose(mean, [0.3, 0.6, 0.8]) and np.allclose(hi, [0.4, 0.6, 0.9])
    rows = {(r["cell"], r["reference"]): r for r in reach_rows({"mb": mb, "mf": mf, "empty": [[]]})}
    assert set(rows) == {("mb", "mf"), ("mf", "mb")}  # a cell without a curve is left out
    r = rows[("mb", "mf")]
    assert np.isclose(r["target"], 0.6) and r["steps_to_reach"] == 128 and r["reference_steps"] == 256
    assert r["ratio"] == 0.5
    assert rows[("mf", "mb")]["steps_to_reach"] is None and rows[("mf", "mb")]["ratio"] is None
