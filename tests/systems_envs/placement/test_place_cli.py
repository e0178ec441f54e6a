"""experiments.place and experiments.bench_place end to end."""
import json
import subprocess
import sys

import pytest

from experiments import bench_place, place


def run(*args):
    return subprocess.run([sys.executable, "-m", "experiments.place", *args], capture_output=True, text=True,
                          timeout=120)


def test_place_end_to_end():
    p = run("nasrnn", "--devices", "gpu2", "--method", "etf", "--seed", "1")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for k in ("graph", "devices", "method", "step_time_ms", "single_device_ms", "speedup", "peak_memory_mb", "valid"):
        assert k in out
    assert out["valid"] and out["devices"] == "gpu2" and len(out["peak_memory_mb"]) == 2
    assert out["speedup"] == pytest.approx(out["single_device_ms"] / out["step_time_ms"])


def test_place_in_process_is_deterministic(capsys):
    a = place.main(["nasrnn", "--devices", "gpu4", "--method", "anneal", "--iters", "50", "--seed", "2"])
    b = place.main(["nasrnn", "--devices", "gpu4", "--method", "anneal", "--iters", "50", "--seed", "2"])
    assert a == b and a["valid"]


@pytest.mark.parametrize("args,needle", [
    (["no_such_graph"], "no_such_graph"),
    (["missing.model"], "missing.model"),
    (["nasrnn", "--devices", "tpu9"], "tpu9"),
    (["nasrnn", "--method", "magic"], "magic"),
    (["nasrnn", "--method", "anneal", "--iters", "-1"], "--iters"),
])
def test_place_bad_input(args, needle):
    p = run(*args)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error") or "error:" in ln]
    assert lines and needle in p.stderr


def test_bench_place_small(capsys):
    out = bench_place.main(["--graphs", "nasrnn", "--devices", "gpu2", "--methods", "single,etf",
                            "--evals", "10"])
    text = capsys.readouterr().out
    assert "| nasrnn |" in text and "| gpu2 |" in text
    row = out["table"][0]
    assert row["ms"]["etf"] <= row["ms"]["single"] and out["throughput"][0]["random_per_s"] > 0
