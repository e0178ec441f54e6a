"""train_world_model: a tiny default run end to end (collect, train, validate, checkpoint,
summary, TensorBoard), resume from the checkpoint, and flag errors."""
import json
import os

import pytest

from experiments import train_world_model as twm
from worldmodels.config import ConfigError


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp("wm") / "run")
    return logdir, twm.main(["--preset", "tiny", "--logdir", logdir, "--train.steps", "2"])


def test_tiny_run(tiny_run):
    logdir, s = tiny_run
    with open(os.path.join(logdir, "summary.json")) as f:
        saved = json.load(f)
    for key in ("mask_f1", "reward_mae", "reward_mae_baseline", "return_error_k10", "train_transitions",
                "validation_transitions"):
        assert key in saved
    assert saved["train_transitions"] > 0 and saved["validation_transitions"] > 0
    assert saved["train_episodes"] == 2 and saved["validation_episodes"] == 1
    assert 0.0 <= saved["mask_f1"] <= 1.0 and saved["train_steps"] == 2
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(logdir))
    assert os.path.exists(os.path.join(logdir, "replay.npz")) and os.path.exists(os.path.join(logdir, "config.json"))


@pytest.mark.slow
def test_resume(tiny_run):
    logdir, s = tiny_run
    # rerun: restores the final checkpoint instead of training, same validation figures
    s2 = twm.main(["--config", logdir, "--data.load", os.path.join(logdir, "replay.npz")])
    assert s2["final_train_loss"] is None and s2["train_steps"] == 2
    assert s2["validation"] == pytest.approx(s["validation"], rel=1e-5, abs=1e-7)


def test_bad_flags(tmp_path):
    with pytest.raises(ConfigError, match="--episodes"):
        twm.parse(["--episode", "3"])
    with pytest.raises(ConfigError, match="model.seq_len"):
        twm.parse(["--model.seqlen", "3"])
    with pytest.raises(ValueError, match="horizon"):
        twm.main(["--preset", "tiny", "--train.ks", "1,20", "--logdir", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_component_flags_are_the_model_section():
    cfg = twm.parse(["--encoder", "gat", "--dynamics=rssm", "--model.hidden", "8"])
    assert (cfg.model.encoder, cfg.model.dynamics, cfg.model.hidden) == ("gat", "rssm", 8)
    assert twm.parse(["--preset", "device_placement"]).env == "DevicePlacement-v0"
