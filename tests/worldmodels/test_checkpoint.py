"""Checkpoints: exact round trip, keep-k, incompatible config / structure, corrupt step,
and a kill -9 during a save never harms the last good checkpoint."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from worldmodels.checkpoint import Checkpointer, CheckpointError
from worldmodels.config import Config, replace_path


def make_state(seed):
    key = jax.random.PRNGKey(seed)
    params = {"w": jax.random.normal(key, (4, 3)), "b": jnp.zeros(3)}
    opt = optax.adam(1e-3)
    return {
        "params": params,
        "opt_state": opt.init(params),
        "step": seed * 10,
        "lr": 0.5 + seed,
        "flag": bool(seed % 2),
        "rng": jax.random.fold_in(key, 1),
        "typed_key": jax.random.key(seed),
        "replay": {"obs": np.arange(12, dtype=np.float32).reshape(4, 3) * seed,
                   "act": np.full((4,), seed, np.int32)},
        "count": np.int64(seed),
    }


def assert_same(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert type(x) is type(y), (type(x), type(y))
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert np.asarray(x).dtype == np.asarray(y).dtype


def test_round_trip_and_keep(tmp_path):
    cfg = Config()
    ck = Checkpointer(tmp_path / "ck", config=cfg, keep=2)
    for s in (1, 2, 3):
        ck.save(s, make_state(s), extra={"env_steps": s * 100})
    assert ck.all_steps() == [2, 3]
    # "fresh process": a new Checkpointer and a freshly initialised template
    ck2 = Checkpointer(tmp_path / "ck", config=replace_path(cfg, {"log.logdir": "elsewhere"}))
    state, extra = ck2.restore(like=make_state(0))
    assert_same(state, make_state(3))
    assert extra == {"env_steps": 300}
    state2, _ = ck2.restore(like=make_state(0), step=2)
    assert_same(state2, make_state(2))
    with pytest.raises(CheckpointError, match="already exists"):
        ck2.save(3, make_state(3))


def test_incompatible_config_and_structure(tmp_path):
    ck = Checkpointer(tmp_path, config=Config())
    ck.save(5, make_state(1))
    bad = Checkpointer(tmp_path, config=replace_path(Config(), {"model.hidden": 7}))
    with pytest.raises(CheckpointError, match=r"incompatible config.*model.hidden"):
        bad.restore(like=make_state(0))
    other = make_state(0)
    other["params"]["w"] = jnp.zeros((5, 3))
    with pytest.raises(CheckpointError, match=r"\['params'\]\['w'\]"):
        ck.restore(like=other)
    del other["replay"]
    with pytest.raises(CheckpointError, match="different state structure"):
        ck.restore(like=other)
    with pytest.raises(CheckpointError, match="no checkpoint step 9"):
        ck.restore(like=make_state(0), step=9)


def test_a_field_added_since_the_checkpoint_is_compatible_at_its_old_behaviour(tmp_path):
    from worldmodels.config import ADDED_FIELDS, flatten, to_dict

    defaults = flatten(Config())
    assert all(k in defaults and defaults[k] == v for k, v in ADDED_FIELDS.items())   # the defaults keep old runs

    old = to_dict(Config())
    del old["env"]["cost"]          # a checkpoint written before the field existed
    Checkpointer(tmp_path, config=old).save(1, make_state(1))
    state, _ = Checkpointer(tmp_path, config=Config()).restore(like=make_state(0))
    assert_same(state, make_state(1))
    other = Checkpointer(tmp_path, config=replace_path(Config(), {"env.cost": "ort-cpu"}))
    with pytest.raises(CheckpointError, match=r"env.cost: '<missing>' \(checkpoint\) vs 'ort-cpu' \(now\)"):
        other.restore(like=make_state(0))


def test_corrupt_step_is_clear_and_nothing_deleted(tmp_path):
    ck = Checkpointer(tmp_path, config=Config())
    ck.save(1, make_state(1))
    ck.save(2, make_state(2))
    state_dir = tmp_path / "2" / "state"
    for root, _, files in os.walk(state_dir):
        for f in files:
            if f not in ("_METADATA",):
                os.remove(os.path.join(root, f))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(CheckpointError, match=r"unreadable or incomplete.*other steps: \[1\]"):
        Checkpointer(tmp_path, config=Config()).restore(like=make_state(0), step=2)
    assert sorted(os.listdir(tmp_path)) == before
    state, _ = ck.restore(like=make_state(0), step=1)
    assert_same(state, make_state(1))


def test_kill_during_save_keeps_last_good(tmp_path):
    ckdir = tmp_path / "ck"
    ck = Checkpointer(ckdir, config=Config())
    ck.save(1, make_state(1))
    script = textwrap.dedent(f"""
        import numpy as np, sys
        from worldmodels.checkpoint import Checkpointer
        from worldmodels.config import Config
        ck = Checkpointer({str(ckdir)!r}, config=Config())
        big = {{"x": np.random.default_rng(0).standard_normal((64, 1024, 1024)).astype(np.float32)}}
        print("saving", flush=True)
        ck.save(2, big)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "saving"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ck2 = Checkpointer(ckdir, config=Config())
    assert 1 in ck2.all_steps()
    state, _ = ck2.restore(like=make_state(0), step=1)
    assert_same(state, make_state(1))
    if 2 not in ck2.all_steps():  # the killed save was not committed: latest is still 1
        assert ck2.latest_step() == 1
