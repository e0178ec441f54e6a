"""`python -m experiments.optimize GRAPH --search policy --checkpoint RUN_DIR`: a checkpoint
this test trains (one tiny model-based iteration) optimises a built-in graph (policy alone,
MCTS in the world model) and a PyTorch export (beam search) into equivalent graphs; a run
that is missing, corrupt or trained with a rule this code lacks is a one-line error; a run
trained before rules were added is applied with its own rules, in its own id order."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from experiments._cli import run_main
from experiments.bench_plan import main as bench
from experiments.optimize import main

TRAIN_FLAGS = ["--preset", "tiny", "--loop.total_env_steps", "16", "--loop.eval_every", "16",
               "--loop.checkpoint_every", "16", "--loop.model_updates_per_iter", "2",
               "--loop.controller_updates_per_iter", "1"]


def _train(logdir) -> Path:
    """One iteration (16 real steps) of the tiny model-based preset on squeezenet, in process."""
    from experiments.train import main as train

    train([*TRAIN_FLAGS, "--logdir", str(logdir)])
    assert (logdir / "rules.json").exists() and (logdir / "checkpoints").is_dir()
    return logdir


def _ort_outputs(path, feeds=None, seed=0):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if feeds is None:
        rng = np.random.default_rng(seed)
        feeds = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in sess.get_inputs()}
    return sess.run(None, feeds)


def _assert_same(ref, out, feeds=None):
    for a, b in zip(_ort_outputs(ref, feeds), _ort_outputs(out, feeds), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(a).max())))


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_trained_optimiser_end_to_end(tmp_path, capsys):
    """Train once (one test, so parallel workers never train twice), then: the plan
    benchmark on a built-in graph, the policy alone and MCTS on it, beam search on a PyTorch
    export, and unusable copies of the run. Every written graph computes what its input does (onnxruntime)."""
    pytest.importorskip("onnxruntime")
    from systems_envs.graph.models import build_graph
    from systems_envs.graph.onnx_io import export_onnx

    run_dir = _train(tmp_path / "run")
    capsys.readouterr()
    # first the benchmark (every method; its compiled functions are reused by the runs below)
    b = bench(["--checkpoint", str(run_dir), "--graphs", "squeezenet", "--beams", "2", "--simulations", "4",
               "--replan", "1,2", "--backtrack-budget", "2"])
    assert _last_json(capsys) == b
    rows = {(r["method"], r["budget"]): r for r in b["rows"]}
    assert set(rows) == {("greedy", "-"), ("backtracking", 2), ("policy", "-"), ("beam", "K=2"),
                         ("mcts", "N=4,R=1"), ("mcts", "N=4,R=2")}
    assert all(r["split"] == "train" and r["reduction"] >= 0 and r["seconds"] > 0 for r in b["rows"])

    ref = tmp_path / "ref.onnx"
    export_onnx(build_graph("squeezenet"), ref)
    for extra in ([], ["--simulations", "4"]):
        out = tmp_path / f"opt{len(extra)}.onnx"
        s = main(["squeezenet", "--search", "policy", "--checkpoint", str(run_dir), "--out", str(out),
                  "--episodes", "1", *extra])
        assert _last_json(capsys) == s
        assert s["policy_search"] == ("mcts" if extra else "policy") and s["checkpoint_step"] == 16
        assert s["cost_after_ms"] <= s["cost_before_ms"] and s["max_error"] <= 1e-3
        assert s["expanded"] <= 8  # the run's episode length (tiny preset: env.max_steps 8)
        _assert_same(ref, out)

    if importlib.util.find_spec("torch") is not None:
        from systems_envs.graph import torch_zoo

        src = tmp_path / "squeezenet_torch.onnx"
        model = torch_zoo.build("squeezenet")
        torch_zoo.export_model(model, src, opset=17, dynamo=False)
        out = tmp_path / "opt_torch.onnx"
        s = main([str(src), "--search", "policy", "--checkpoint", str(run_dir), "--beam", "2", "--out", str(out),
                  "--episodes", "2"])
        assert _last_json(capsys) == s
        assert s["policy_search"] == "beam" and s["cost_after_ms"] < s["cost_before_ms"] and s["rewrites"] > 0
        assert s["rewrites"] <= 16   # two chained episodes of the run's 8 steps
        _assert_same(src, out, model.inputs)

    base = ["squeezenet", "--search", "policy", "--checkpoint"]
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    (bad / "config.json").write_text("{not json")
    assert "cannot read its config" in _error(base + [str(bad)], capsys)

    bad = tmp_path / "rules"
    shutil.copytree(run_dir, bad)
    rules = json.loads((bad / "rules.json").read_text())
    rules["names"][3] = "a_rule_this_code_does_not_have"
    (bad / "rules.json").write_text(json.dumps(rules))
    assert "only in the run: ['a_rule_this_code_does_not_have']" in _error(base + [str(bad)], capsys)

    bad = tmp_path / "corrupt"
    shutil.copytree(run_dir, bad)
    for p in (bad / "checkpoints").rglob("*"):
        if p.is_file() and p.suffix != ".npz" and p.stat().st_size > 0:
            p.write_bytes(b"\0" * 7)
    assert "checkpoint" in _error(base + [str(bad)], capsys)

    bad = tmp_path / "empty"
    bad.mkdir()
    (bad / "config.json").write_text((run_dir / "config.json").read_text())
    assert "no checkpoints/" in _error(base + [str(bad)], capsys)


@pytest.mark.slow
def test_a_graph_larger_than_the_training_capacity_is_adapted(tmp_path):
    from controllers.base import next_pow2
    from systems_envs.graph.load import load_graph
    from worldmodels.trained import load_run

    run_dir = _train(tmp_path / "run")
    trained = next_pow2(2 * len(load_graph("squeezenet")) + 2)   # the training loop's node capacity
    run = load_run(run_dir, "resnet50")
    assert run.env.max_nodes > trained and run.model_based
    r = run.optimise("beam", width=2)
    assert r.cost_after <= r.cost_before and r.expanded > 0


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        run_main(main, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


def test_bad_flags_and_missing_runs_are_one_line_errors(tmp_path, capsys):
    base = ["squeezenet", "--search", "policy", "--checkpoint"]
    assert "does not exist" in _error(base + [str(tmp_path / "nope")], capsys)
    assert "needs --checkpoint" in _error(["squeezenet", "--search", "policy"], capsys)
    assert "only apply with --search policy" in _error(["squeezenet", "--beam", "2"], capsys)
    assert "not both" in _error(base + [str(tmp_path), "--beam", "2", "--simulations", "2"], capsys)


def test_a_run_is_applied_with_its_own_rules_in_its_own_id_order(tmp_path):
    from systems_envs.rewrite.ruleset import default_rules
    from worldmodels.checkpoint import CheckpointError
    from worldmodels.trained import rules_for_run, write_rules

    now = default_rules()
    assert [r.name for r in rules_for_run(str(tmp_path), now)] == [r.name for r in now]  # no record
    older = list(reversed(now[:-3]))   # trained before the last three rules existed, ids in another order
    write_rules(str(tmp_path), older)
    adapted = rules_for_run(str(tmp_path), now)
    assert [r.name for r in adapted] == [r.name for r in older] and all(a is b for a, b in zip(adapted, older))
    write_rules(str(tmp_path), [*now[:2], now[0]])
    with pytest.raises(CheckpointError, match="repeated names"):
        rules_for_run(str(tmp_path), now)
    (tmp_path / "rules.json").write_text("{")
    with pytest.raises(CheckpointError, match="unreadable"):
        rules_for_run(str(tmp_path), now)
