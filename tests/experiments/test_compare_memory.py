"""experiments.compare_memory: a tiny comparison end to end (table + JSON), bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]


def _run(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "experiments.compare_memory", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _check(r, learners):
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    row = out["graphs"]["squeezenet"]
    assert row["compiler"] > 1.0 and row["best_non_learned"] >= row["compiler"]
    for n in learners:
        assert len(row[n]["runs"]) == out["seeds"] and row[n]["ci95"][0] <= row[n]["mean"] <= row[n]["ci95"][1]
        assert all(x > 1.0 for x in row[n]["runs"])          # every learner found a valid mapping
        assert n in out["aggregate"]
    assert "| squeezenet | 64 |" in r.stdout
    return out


def test_tiny_comparison(tmp_path):
    r = _run("--graphs", "squeezenet", "--seeds", "1", "--controllers", "egrl", "--budget", "8",
             "--egrl-pop", "3", "--max-generations", "2", "--out", str(tmp_path))
    _check(r, ["egrl"])
    assert (tmp_path / "summary.json").is_file()


@pytest.mark.slow
def test_tiny_comparison_all_step_learners():
    r = _run("--graphs", "squeezenet", "--seeds", "1", "--controllers", "egrl,ppo,cmaes", "--budget", "8",
             "--egrl-pop", "3", "--max-generations", "2")
    _check(r, ["egrl", "ppo", "cmaes"])


@pytest.mark.slow
def test_comparison_with_model_fitness_and_seeds():
    r = _run("--graphs", "squeezenet", "--seeds", "2", "--controllers", "egrl,egrl_model,ppo,cmaes",
             "--budget", "40", "--egrl-pop", "4", "--max-generations", "20", timeout=1800)
    _check(r, ["egrl", "egrl_model", "ppo", "cmaes"])


@pytest.mark.parametrize("args, msg", [
    (["--graphs", "nope"], "not a built-in graph"),
    (["--controllers", "egrl,sac"], "unknown 'sac'"),
    (["--budget", "1"], "--budget"),
    (["--bogus", "1"], "unrecognized arguments"),
])
def test_bad_input_is_one_line_error(args, msg):
    r = _run(*args, timeout=120)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
