"""experiments.macro_place and experiments.bench_macro end to end."""
import json
import subprocess
import sys

import pytest

from experiments import bench_macro, macro_place
from systems_envs.chip.env import load_shipped
from systems_envs.chip.plc import read_plc

KEYS = ("wirelength_cost", "density_cost", "congestion_cost", "proxy_cost", "wirelength", "grid",
        "num_hard_macros", "num_soft_macros", "seconds")


def run(*args):
    return subprocess.run([sys.executable, "-m", "experiments.macro_place", *args], capture_output=True, text=True,
                          timeout=300)


def test_evaluate_reproduces_header_and_writes_plc_and_plot(tmp_path):
    out_plc, out_png = tmp_path / "o.plc", tmp_path / "o.png"
    p = run("ariane133", "--method", "evaluate", "--out", str(out_plc), "--plot", str(out_png))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert all(k in out for k in KEYS)
    assert (round(out["wirelength_cost"], 4), round(out["density_cost"], 4), round(out["congestion_cost"], 4)) == \
        (0.0497, 0.6067, 0.7128)
    assert out["grid"] == [24, 21] and out["num_hard_macros"] == 133 and not out["legal"]
    assert out_png.stat().st_size > 10_000
    nl, _, pl = load_shipped("ariane133")
    header, pl2 = read_plc(str(out_plc), nl)
    assert header.recorded["congestion_cost"] == 0.7128 and (pl2.x == pl.x).all()


def test_anneal_short_run_in_process_is_legal_and_better(capsys):
    out = macro_place.main(["ariane133", "--method", "anneal", "--time-limit", "3", "--seed", "1"])
    assert out["legal"] and out["proxy_cost"] < 0.7568      # the legalised initial.plc scores 0.7568
    assert out["trace"][0][1] >= out["proxy_cost"]
    assert set(out["moves"]) == {"swap", "shift", "move", "flip", "soft", "nudge", "soft_hot"}
    assert sum(m["accepted"] for m in out["moves"].values()) > 0


def test_anneal_two_workers_in_process(capsys):
    out = macro_place.main(["ariane133", "--method", "anneal", "--time-limit", "3", "--workers", "2", "--seed", "1"])
    assert out["legal"] and out["proxy_cost"] < 0.7568 and out["workers"] == 2
    assert sum(m["proposed"] for m in out["moves"].values()) > 0


@pytest.mark.parametrize("args,needle", [
    (["ariane133", "--weights", "1,2"], "--weights"),
    (["missing.pb.txt", "--plc", "x.plc"], "missing.pb.txt"),
    (["ariane133", "--plc", "missing.plc"], "missing.plc"),
    (["ariane133", "--method", "magic"], "magic"),
    (["ariane133", "--time-limit", "0"], "--time-limit"),
    (["ariane133", "--method", "anneal", "--workers", "0"], "--workers"),
])
def test_bad_input(args, needle):
    p = run(*args)
    assert p.returncode == 2
    assert needle in p.stderr and "Traceback" not in p.stderr


def test_netlist_without_plc(tmp_path):
    net = tmp_path / "n.pb.txt"
    net.write_text('node {\n  name: "p"\n  attr {\n    key: "type"\n    value {\n      placeholder: "PORT"\n'
                   '    }\n  }\n}\n')
    p = run(str(net))
    assert p.returncode == 2 and "give --plc" in p.stderr


def test_bench_macro_runs(capsys):
    out = bench_macro.main(["--anneal-seconds", "1", "--repeats", "1", "--moves", "5", "--skip-protobuf",
                            "--workers", "2"])
    assert out["full_eval_ms"] > 0 and out["incremental_move_ms"] > 0 and out["force_directed_s"] > 0
    names = [r["method"] for r in out["baselines"]]
    assert len(names) == 5 and out["baselines"][0]["proxy_cost"] == pytest.approx(0.70948, abs=1e-4)
    assert all(r["legal"] for r in out["baselines"][1:])
    assert out["workers"] == 2 and names[-1].endswith("2 workers")
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
