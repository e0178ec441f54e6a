"""Config: flags, presets, errors, JSON round trip, hash."""
import subprocess
import sys

import pytest

from worldmodels.config import (Config, ConfigError, PRESETS, config_hash, default_config, get_preset, load_config,
                                parse_args, replace_path, save_config)


def test_defaults_and_section_flags():
    cfg = parse_args([])
    assert cfg == default_config() == get_preset("default")  # no flags: the README's main job
    cfg = parse_args(["--controller.ppo.lr", "0.001", "--seed=3", "--log.progress", "false",
                      "--env.graph", "bert"])
    assert cfg.controller.ppo.lr == 0.001 and cfg.seed == 3
    assert cfg.log.progress is False and cfg.env.graph == "bert"


def test_bare_bool_flag_means_true():
    cfg = parse_args(["--log.progress", "false", "--log.progress"])
    assert cfg.log.progress is True


def test_unknown_flag_names_closest():
    with pytest.raises(ConfigError) as e:
        parse_args(["--controller.ppo.lrr", "1"])
    assert "--controller.ppo.lr" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_args(["--modle.hidden", "1"])
    assert "--model.hidden" in str(e.value)


def test_bad_value_names_flag():
    with pytest.raises(ConfigError) as e:
        parse_args(["--model.hidden", "lots"])
    assert "--model.hidden" in str(e.value) and "int" in str(e.value)
    with pytest.raises(ConfigError, match="--log.progress"):
        parse_args(["--log.progress", "maybe"])
    with pytest.raises(ConfigError, match="needs a value"):
        parse_args(["--seed"])


def test_the_rewrite_cost_model_is_a_flag_with_the_cost_models_names():
    import typing

    from systems_envs.graph.cost import COST_MODEL_NAMES
    from worldmodels.config import EnvConfig

    assert typing.get_args(typing.get_type_hints(EnvConfig)["cost"]) == COST_MODEL_NAMES
    assert parse_args(["--env.cost", "ort-cpu"]).env.cost == "ort-cpu" and parse_args([]).env.cost == "v100"
    with pytest.raises(ConfigError, match="--env.cost"):
        parse_args(["--env.cost", "tpu"])


def test_presets_and_override_order():
    tiny = get_preset("tiny")
    assert tiny.env.num_envs == 2
    cfg = parse_args(["--env.num_envs", "7", "--preset", "tiny"])
    assert cfg.env.num_envs == 7 and cfg.model.hidden == tiny.model.hidden
    with pytest.raises(ConfigError, match="tiny"):
        parse_args(["--preset", "tinny"])
    custom = {"mine": replace_path(Config(), {"model.hidden": 9})}
    assert parse_args(["--preset", "mine"], presets=custom).model.hidden == 9
    assert set(PRESETS) >= {"default", "tiny"}


def test_json_round_trip_and_hash(tmp_path):
    cfg = parse_args(["--preset", "tiny", "--controller.planner.horizon", "5", "--seed", "11"])
    save_config(cfg, tmp_path)
    back = load_config(tmp_path)
    assert back == cfg and config_hash(back) == config_hash(cfg)
    assert config_hash(cfg) != config_hash(replace_path(cfg, {"seed": 12}))
    assert config_hash(cfg, exclude=("log",)) == config_hash(replace_path(cfg, {"log.logdir": "x"}), exclude=("log",))
    assert parse_args(["--config", str(tmp_path / "config.json")]) == cfg


def test_bad_config_file(tmp_path):
    p = tmp_path / "config.json"
    p.write_text('{"model": {"hiden": 3}}')
    with pytest.raises(ConfigError, match="model.hidden"):
        load_config(p)
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(p)


def test_cli_exit_code():
    code = "from worldmodels.config import cli_parse; cli_parse(['--model.hiddn', '3'])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "--model.hidden" in r.stderr
