"""End-to-end runs of `python -m experiments.train` (tiny preset): model-based, model-free,
kill -9 + resume, flag errors, incompatible checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from worldmodels.tb_reader import read_scalars

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TAGS = ("real/episode_return", "real/cost_reduction", "imagined/episode_return", "validation/return_gap",
        "model/loss")


def _cmd(logdir, *flags):
    return [sys.executable, "-m", "experiments.train", "--preset", "tiny", "--logdir", str(logdir), *flags]


def _run(cmd, timeout=600):
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_unknown_flag_names_the_closest_valid_ones(tmp_path):
    r = _run(_cmd(tmp_path, "--loop.imagined_horizn", "4"))
    assert r.returncode == 2
    assert "unknown flag --loop.imagined_horizn; did you mean --loop.imagined_horizon" in r.stderr
    assert "Traceback" not in r.stderr


def _check_strict(logdir):
    sc = read_scalars(str(logdir))
    for tag, pts in sc.items():
        steps = [s for s, _ in pts]
        assert steps == sorted(set(steps)), f"{tag}: steps not strictly increasing: {steps}"
    return sc


def test_model_free_tiny_run(tmp_path):
    r = _run(_cmd(tmp_path, "--loop.mode", "model_free"))
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.load(open(tmp_path / "summary.json"))
    assert s["mode"] == "model_free" and s["real_env_steps"] == 64
    sc = _check_strict(tmp_path)
    assert "real/cost_reduction" in sc and "model/loss" not in sc


def test_kill9_resume_model_based(tmp_path):
    """Run 1 is SIGKILLed after its first checkpoint; run 2 (same command) resumes and finishes."""
    cmd = _cmd(tmp_path, "--loop.total_env_steps", "48")
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    ck = tmp_path / "checkpoints"
    t0 = time.time()
    while time.time() - t0 < 400:
        if ck.is_dir() and any(d.isdigit() for d in os.listdir(ck)):
            break
        assert p.poll() is None, p.stdout.read()[-2000:]
        time.sleep(0.2)
    else:
        pytest.fail("no checkpoint written")
    p.send_signal(signal.SIGKILL)
    p.wait()
    first = sorted(int(d) for d in os.listdir(ck) if d.isdigit())
    assert not (tmp_path / "summary.json").exists()
    r = _run(cmd)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from checkpoint at real step" in r.stdout
    resumed = int(r.stdout.split("resumed from checkpoint at real step")[1].split()[0])
    assert resumed >= first[0] > 0  # not from scratch
    s = json.load(open(tmp_path / "summary.json"))
    assert s["real_env_steps"] == 48 and s["resumed_from_step"] == resumed
    sc = _check_strict(tmp_path)
    for tag in TAGS:
        assert tag in sc, f"missing TensorBoard tag {tag}"
    assert any(t.startswith("fidelity/") for t in sc)
    assert max(s_ for s_, _ in sc["real/episode_return"]) == 48
    # every iteration's step is logged exactly once across the two processes
    assert [s_ for s_, _ in sc["time/wall_seconds"]] == [16, 32, 48]
    # a different (incompatible) config in the same directory is refused with one line
    r = _run(_cmd(tmp_path, "--loop.total_env_steps", "48", "--model.latent_dim", "12"))
    assert r.returncode == 2 and "incompatible config" in r.stderr and "model.latent_dim" in r.stderr
