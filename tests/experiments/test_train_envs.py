"""`experiments.train` on every environment: tiny in-process runs (fast suite) and, marked
slow, model-based and model-free subprocess runs on each placement environment, a kill -9
resume and an ablation on a placement environment."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from worldmodels.config import replace_path, tiny_config
from worldmodels.loop import train
from worldmodels.tb_reader import read_scalars

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTANCES = {"DevicePlacement-v0": ("squeezenet", "bert"), "MemoryPlacement-v0": ("squeezenet", "bert"),
             "MacroPlacement-v0": ("gen:0", "gen:1")}
#: the smallest useful run: one iteration, evaluated at its end only
FAST = {"loop.model_updates_per_iter": 1, "loop.controller_updates_per_iter": 1, "loop.eval_every": 10_000,
        "loop.checkpoint_every": 10_000, "loop.fidelity_windows": 2, "loop.outcome.updates_per_iter": 2,
        "loop.outcome.members": 1, "loop.outcome.width": 8, "env.device.anneal_iters": 10,
        "env.macro.anneal_seconds": 0.2, "env.macro.fd_steps": 2}


def _tiny(env, mode, **extra):
    graph, heldout = INSTANCES[env]
    return replace_path(tiny_config(), {"env.name": env, "env.graph": graph, "env.heldout": heldout,
                                        "loop.mode": mode, "loop.total_env_steps": 1, **FAST, **extra})


def _check_summary(s, env, metric):
    assert s["env"] == env and s["metric"] == metric
    for g, row in s["per_graph"].items():
        assert row[metric] == row[metric]  # not nan
        assert row["best_baseline"] in s["baselines"]
        assert f"best_baseline_{metric}" in row


@pytest.mark.parametrize("env,mode,metric", [("DevicePlacement-v0", "model_based", "speedup"),
                                             ("MemoryPlacement-v0", "model_free", "speedup"),
                                             ("MacroPlacement-v0", "model_free", "neg_proxy_cost")])
def test_tiny_run_in_process(tmp_path, env, mode, metric):
    s = train(_tiny(env, mode), str(tmp_path), echo=lambda m: None)
    _check_summary(s, env, metric)
    sc = read_scalars(str(tmp_path))
    for tag in ("real/episode_return", "real/score", f"real/{metric}", "heldout/score", "time/wall_seconds"):
        assert tag in sc, tag
    if mode == "model_based":
        assert "model/loss" in sc and "outcome/loss" in sc and "validation/return_gap" in sc
    assert json.load(open(tmp_path / "summary.json"))["real_score"] == pytest.approx(s["real_score"])


def _cmd(logdir, env, *flags):
    graph, heldout = INSTANCES[env]
    fast = [f"--{k}={v}" for k, v in FAST.items() if not k.startswith("loop.eval") and not k.startswith("loop.check")]
    return [sys.executable, "-m", "experiments.train", "--preset", "tiny", "--env.name", env, "--env.graph", graph,
            "--env.heldout", heldout, "--logdir", str(logdir), *fast, *flags]


def _run(cmd, timeout=1800):
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.mark.slow
@pytest.mark.parametrize("env", list(INSTANCES))
@pytest.mark.parametrize("mode", ["model_based", "model_free"])
def test_train_command_on_each_placement_env(tmp_path, env, mode):
    r = _run(_cmd(tmp_path, env, "--loop.mode", mode))
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])  # the last line is the summary
    assert s["mode"] == mode and s["real_env_steps"] >= 64
    assert "| instance | split | controller |" in r.stdout
    sc = read_scalars(str(tmp_path))
    for tag, pts in sc.items():
        steps = [x for x, _ in pts]
        assert steps == sorted(set(steps)), tag


@pytest.mark.slow
def test_kill9_resume_on_device_placement(tmp_path):
    """Run 1 is SIGKILLed after its first checkpoint; the same command resumes and ends with
    the same final summary as an uninterrupted run."""
    flags = ("--loop.total_env_steps", "48", "--loop.checkpoint_every", "16", "--loop.eval_every", "16")
    full = tmp_path / "full"
    r = _run(_cmd(full, "DevicePlacement-v0", *flags))
    assert r.returncode == 0, r.stderr[-2000:]
    cut = tmp_path / "cut"
    p = subprocess.Popen(_cmd(cut, "DevicePlacement-v0", *flags), cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    ck = cut / "checkpoints"
    t0 = time.time()
    while time.time() - t0 < 600:
        if ck.is_dir() and any(d.isdigit() for d in os.listdir(ck)):
            break
        assert p.poll() is None, p.stdout.read()[-2000:]
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = _run(_cmd(cut, "DevicePlacement-v0", *flags))
    assert r.returncode == 0 and "resumed from checkpoint" in r.stdout, r.stderr[-2000:]
    a, b = json.load(open(full / "summary.json")), json.load(open(cut / "summary.json"))
    for g in a["per_graph"]:
        assert a["per_graph"][g]["speedup"] == b["per_graph"][g]["speedup"]
        assert a["per_graph"][g]["imagined_return"] == pytest.approx(b["per_graph"][g]["imagined_return"], rel=1e-5)
    sa, sb = read_scalars(str(full)), read_scalars(str(cut))
    assert [s for s, _ in sa["real/score"]] == [s for s, _ in sb["real/score"]]
    assert sa["real/score"] == sb["real/score"]


@pytest.mark.slow
def test_tiny_ablation_on_memory_placement(tmp_path):
    r = _run([sys.executable, "-m", "experiments.ablate", "--base", "tiny", "--grid", "loop.mode=model_based,model_free",
              "--seeds", "1", "--workers", "2", "--logdir", str(tmp_path), "--", "--env.name", "MemoryPlacement-v0",
              "--env.graph", "squeezenet", "--env.heldout", "bert", "--loop.total_env_steps", "1"])
    assert r.returncode == 0, r.stderr[-2000:]
    md = (tmp_path / "table.md").read_text()
    assert "real_score" in md and "loop.mode=model_free" in md


@pytest.mark.parametrize("mode", ["model_free", pytest.param("model_based", marks=pytest.mark.slow)])
def test_egrl_tiny_run_in_process(tmp_path, mode):
    """EGRL through the loop: one generation on real episodes (model-free) or on the outcome
    model (model-based); validated on the training and the held-out graph."""
    s = train(_tiny("MemoryPlacement-v0", mode, **{"controller.name": "egrl"}), str(tmp_path), echo=lambda m: None)
    _check_summary(s, "MemoryPlacement-v0", "speedup")
    assert s["controller"] == "egrl" and s["baselines"] == ["all_slowest", "compiler_default"]
    assert all(row["speedup"] > 0 for row in s["per_graph"].values())     # valid mappings, held-out graph too
    sc = read_scalars(str(tmp_path))
    tags = ["real/episode_return", "real/speedup", "heldout/score", "controller/best_fitness", "time/wall_seconds"]
    if mode == "model_based":
        tags += ["model/loss", "outcome/loss", "imagined/episode_return"]
    for tag in tags:
        assert tag in sc, tag
    assert os.path.isdir(tmp_path / "checkpoints")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["model_free", "model_based"])
def test_egrl_resume_from_a_checkpoint_is_exact(tmp_path, mode):
    """An EGRL run ends after one iteration (checkpointed); the same run with one more
    iteration's budget resumes from it and ends exactly like an uninterrupted run."""
    cfg = _tiny("MemoryPlacement-v0", mode, **{"controller.name": "egrl", "loop.checkpoint_every": 1})
    quiet = lambda m: None  # noqa: E731
    n = train(cfg, str(tmp_path / "cut"), echo=quiet)["real_env_steps"]
    longer = replace_path(cfg, {"loop.total_env_steps": n + 1})
    cut = train(longer, str(tmp_path / "cut"), echo=quiet)
    full = train(longer, str(tmp_path / "full"), echo=quiet)
    assert cut["resumed_from_step"] == n and cut["real_env_steps"] == full["real_env_steps"] == 2 * n
    for g in full["per_graph"]:
        assert cut["per_graph"][g]["speedup"] == full["per_graph"][g]["speedup"]
    a, b = read_scalars(str(tmp_path / "cut")), read_scalars(str(tmp_path / "full"))
    for tag in ("controller/best_fitness", "controller/critic_loss", "real/episode_return"):
        assert a[tag] == b[tag], tag
    if mode == "model_based":
        assert a["outcome/loss"] == b["outcome/loss"] and a["imagined/episode_return"] == b["imagined/episode_return"]
