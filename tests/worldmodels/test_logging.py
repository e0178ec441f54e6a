"""RunLogger writes TensorBoard event files readable by tensorboard's EventAccumulator."""
import json
import math

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from worldmodels.logging import RunLogger, progress


def test_scalars_hparams_summary(tmp_path):
    with RunLogger(tmp_path) as log:
        for step in (0, 100, 250):
            log.scalar("train/loss", 1.0 / (step + 1), step)
        log.scalars({"eval/return": np.float32(3.5), "vec": np.zeros(3)}, step=250)
        log.hparams({"model.hidden": 64, "controller.name": "ppo", "shape": (1, 2)},
                    {"eval/return": 3.5})
        path = log.write_summary({"final_return": np.float32(3.5), "nan": float("nan"), "steps": 250})
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train/loss" in tags and "eval/return" in tags and "vec" not in tags
    ev = acc.Scalars("train/loss")
    assert [e.step for e in ev] == [0, 100, 250]
    assert math.isclose(ev[1].value, 1 / 101, rel_tol=1e-6)
    assert acc.Scalars("eval/return")[0].step == 250
    # the HParams plugin data is in the same run
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(acc.PluginTagToContent("hparams"))
    data = json.loads(open(path).read())
    assert data["final_return"] == 3.5 and data["nan"] == "nan" and data["steps"] == 250


def test_progress_disabled_is_noop():
    bar = progress(total=10, enabled=False)
    bar.update(10)
    bar.close()
    assert list(progress(range(3), enabled=False)) == [0, 1, 2]
