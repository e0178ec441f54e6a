"""`experiments.bench_train`'s analysis on runs written the way the loop writes them:
summary.json and real TensorBoard event files."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboardX import SummaryWriter

from experiments.bench_train import analyse, reach, steps_to_reach

REPO = Path(__file__).resolve().parents[2]
TRAIN, HELD = ["squeezenet", "bert"], ["vit"]


def _write_run(d: Path, mode: str, curve: dict[int, float], budget: int) -> None:
    """A run whose every graph scores ``curve[step]`` (+0.01 on the second training graph)."""
    d.mkdir(parents=True)
    w = SummaryWriter(str(d))
    for step, v in curve.items():
        for i, g in enumerate(TRAIN):
            w.add_scalar(f"validation/{g}/cost_reduction", v + 0.01 * i, step)
        w.add_scalar("heldout/vit/cost_reduction", v, step)
    w.close()
    last = curve[max(curve)]
    per_graph = {g: {"cost_reduction": last + 0.01 * i, "split": "train", "greedy_cost_reduction": 0.2,
                     "backtracking_cost_reduction": 0.25} for i, g in enumerate(TRAIN)}
    per_graph["vit"] = {"cost_reduction": last, "split": "heldout", "greedy_cost_reduction": 0.1,
                        "backtracking_cost_reduction": 0.1}
    (d / "summary.json").write_text(json.dumps({
        "mode": mode, "metric": "cost_reduction", "graphs": TRAIN, "heldout": HELD, "per_graph": per_graph,
        "baselines": ["greedy", "backtracking"], "real_env_steps": budget, "wall_seconds": 1.0}))


def _bench(tmp_path: Path, mb_level: float) -> dict:
    for s in range(5):
        _write_run(tmp_path / "model_free" / "cell" / f"seed{s}", "model_free",
                   {256: 0.05, 512: 0.1, 768: 0.15, 1024: 0.2 + 0.01 * s}, 1024)
        _write_run(tmp_path / "model_based" / "cell" / f"seed{s}", "model_based",
                   {128: 0.1, 256: mb_level + 0.001 * s}, 256)
    return analyse(str(tmp_path), reps=200)


def test_steps_to_reach():
    curve = [(128, 0.1), (256, 0.3), (512, 0.2)]
    assert steps_to_reach(curve, 0.25) == 256
    assert steps_to_reach(curve, 0.5) is None


def test_model_based_reaching_model_free_final_level_at_a_quarter(tmp_path):
    out = _bench(tmp_path, mb_level=0.25)
    r = out["reach"]["heldout"]
    # model-free's final held-out IQM over seeds 0.20..0.24: the middle three, 0.22
    assert r["target"] == pytest.approx(0.22)
    assert r["model_based_steps"] == 256 and r["model_free_budget"] == 1024 and r["ratio_to_budget"] == 0.25
    assert r["model_free_steps"] == 1024 and r["ratio_to_model_free_steps"] == 0.25
    assert r["ratio_to_budget_ci95"] == [0.25, 0.25]
    final = out["final"]["train"]["model_free"]
    # train matrix [5 seeds, 2 graphs]: graph 2 = graph 1 + 0.01; IQM drops 2 of 10 values each side
    assert final["runs"] == 5 and final["iqm"] == pytest.approx(np.mean([0.21, 0.22, 0.22, 0.23, 0.23, 0.24]))
    assert final["ci95"][0] <= final["iqm"] <= final["ci95"][1]
    assert out["baselines"]["train"] == {"greedy": 0.2, "backtracking": 0.25}
    curve = out["curves"]["heldout"]["model_free"]
    assert [p["step"] for p in curve] == [256, 512, 768, 1024]
    assert curve[0]["iqm"] == pytest.approx(0.05) and curve[0]["ci95"] == pytest.approx([0.05, 0.05])
    for f in ("bench.md", "bench.json", "curves.png"):
        assert (tmp_path / f).stat().st_size > 0
    assert "| heldout | 0.2200 | 256 | 1024 | 1024 | 0.2500 [0.2500, 0.2500] | 0.2500 |" in (tmp_path / "bench.md").read_text()


def test_model_based_that_never_reaches_it(tmp_path):
    r = _bench(tmp_path, mb_level=0.15)["reach"]["train"]
    assert r["model_based_steps"] is None and r["ratio_to_budget"] is None
    assert r["ratio_to_budget_ci95"] == [None, None]


def test_reach_uses_the_iqm_curve_not_one_lucky_seed():
    def run(mode, c, budget):
        return {"mode": mode, "real_env_steps": budget, "graphs": {"heldout": ["g"]},
                "final": {"heldout": {"g": c[max(c)]}}, "curves": {"heldout": {"g": c}}}
    mf = [run("model_free", {512: 0.2}, 512) for _ in range(4)]
    mb = [run("model_based", {128: 0.3 if s == 0 else 0.0, 256: 0.0}, 256) for s in range(4)]
    assert reach(mb, mf, "heldout")["model_based_steps"] is None


def test_bad_logdir_is_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "experiments.bench_train", "--analyse-only", "--logdir", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no run" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "experiments.bench_train", "--seeds", "0"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--seeds must be >= 1" in r.stderr


@pytest.mark.slow
def test_bench_train_end_to_end(tmp_path):
    r = subprocess.run([sys.executable, "-m", "experiments.bench_train", "--preset", "tiny", "--seeds", "2",
                        "--mb-steps", "32", "--mf-steps", "64", "--bootstrap", "50", "--logdir", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads((tmp_path / "bench.json").read_text())
    assert {r["mode"] for r in out["runs"]} == {"model_based", "model_free"} and len(out["runs"]) == 4
    assert set(out["reach"]) == {"train"}                          # the tiny preset holds no graph out
    assert set(out["final"]["train"]) == {"model_based", "model_free"}
    assert (tmp_path / "curves.png").stat().st_size > 0
