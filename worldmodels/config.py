"""Experiment configuration: nested frozen dataclasses, presets and a command-line parser.

Every leaf field of :class:`Config` can be set as ``--section.field value`` (or
``--section.field=value``); nested sections go deeper (``--controller.ppo.lr 1e-3``).
Values are parsed from the dataclass annotations: ``int``, ``float``, ``bool``
(true/false/1/0/yes/no), ``str``, ``Literal[...]`` (enum-like fields: one of the listed
strings) and tuples (``"1,2,3"`` or ``"[1, 2, 3]"``).
``--preset NAME`` (first) starts from a named preset; ``--config PATH`` starts from a
saved ``config.json``. An unknown flag is a :class:`ConfigError` naming the closest valid
flags (``difflib``); :func:`cli_parse` turns that into one line on stderr and exit 2.

A small hand parser is used instead of tyro because the error for a mistyped flag must
name the closest valid flags in one line, and nested dotted flags must map 1:1 onto the
dataclass tree (which is also the JSON layout of the saved config).

Adding a preset: ``PRESETS["name"] = replace_path(default_config(), {"model.hidden": 32})``.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence


class ConfigError(ValueError):
    """A bad flag, a bad value or a bad config file (one-line message)."""


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class DeviceEnvConfig:
    """``DevicePlacement-v0`` options (`systems_envs.placement.env`)."""

    devices: str = "gpu4"           # device-set preset (gpu2, gpu4, gpu8, cpu+gpu4)
    groups: int = 16                # ops placed per step (0 = one op per step)
    reward: Literal["speedup", "neg_runtime", "neg_sqrt_runtime"] = "speedup"
    anneal_iters: int = 1000        # iterations of the annealing baseline in the final comparison
    hint: Literal["none", "etf", "metis", "expert"] = "none"  # baseline device per op as a feature, actions relative to it


@dataclass(frozen=True)
class MemoryEnvConfig:
    """``MemoryPlacement-v0`` options (`systems_envs.placement.memory_env`)."""

    invalid_reward: float = -1.0    # reward of a mapping that breaks a capacity


@dataclass(frozen=True)
class MacroEnvConfig:
    """``MacroPlacement-v0`` options (`systems_envs.chip.env`); instances are ``ariane133``
    or ``gen:SEED`` netlists generated with the sizes below."""

    num_hard: int = 6               # generated netlists: hard macros (= steps per episode)
    num_soft: int = 24
    num_ports: int = 16
    num_nets: int = 120
    max_grid: int = 8               # generated netlists: at most max_grid x max_grid cells (actions)
    fd_steps: int = 20              # force-directed steps per stage for the soft macros at the end
    dead_end_reward: float = -3.0
    anneal_seconds: float = 5.0     # time limit of the annealing baseline in the final comparison


@dataclass(frozen=True)
class EnvConfig:
    """Which environment and problem instances; each environment's own options in its section."""

    name: str = "GraphRewrite-v0"   # GraphRewrite-v0 | DevicePlacement-v0 | MemoryPlacement-v0 | MacroPlacement-v0
    graph: str = ""                 # comma-separated training instances (graph names/files; netlists for macro)
    max_steps: int = 50             # rewrite: episode step limit (truncation)
    num_envs: int = 4               # parallel environments for rollouts
    node_capacity: int = 0          # rewrite: padding bucket for nodes (0 = smallest that fits)
    edge_capacity: int = 0          # rewrite: padding bucket for edges (0 = smallest that fits)
    heldout: str = ""               # comma-separated instances never trained on (validation only)
    max_candidates: int = 64        # rewrite: candidate action slots A
    cost: Literal["v100", "a100", "h100", "cpu", "ort-cpu", "e2e"] = "v100"  # rewrite: cost model of reward and baselines
    device: DeviceEnvConfig = field(default_factory=DeviceEnvConfig)
    memory: MemoryEnvConfig = field(default_factory=MemoryEnvConfig)
    macro: MacroEnvConfig = field(default_factory=MacroEnvConfig)


#: config fields added after checkpoints were written, at the value that reproduces what the code
#: did before them: a checkpoint whose config lacks one is compatible (resume, ``optimize``) when
#: the field has this value. A field whose default changes behaviour (e.g. ``model.slot_rewards``)
#: is not listed, so checkpoints from before it are refused.
ADDED_FIELDS: dict[str, Any] = {"env.cost": "v100", "controller.egrl.collect_rows": 1,
                                "loop.outcome.optimism": 0.0, "controller.egrl.measured_fitness": False}


#: training / held-out instances that ``--env.name E`` selects unless --env.graph / --env.heldout are given
ENV_INSTANCES = {
    "GraphRewrite-v0": {"env.graph": "squeezenet,bert", "env.heldout": "vit"},
    "DevicePlacement-v0": {"env.graph": "inception_v3,resnet50,bert", "env.heldout": "nasnet_a,resnext50,vit"},
    "MemoryPlacement-v0": {"env.graph": "squeezenet,resnet50,bert", "env.heldout": "inception_v3,vit"},
    "MacroPlacement-v0": {"env.graph": "gen:0,gen:1", "env.heldout": "gen:2"},
}


@dataclass(frozen=True)
class WorldModelConfig:
    """World model V + M: component names, sizes and optimisation. The one ``--model.*``
    section of every command that builds a world model (train, train_world_model,
    bench_world_model); `worldmodels.world_model.WorldModel.create` reads it."""

    encoder: str = "gn"             # registry name in encoders/ (gn, gat, gcn)
    dynamics: str = "mdnrnn"        # registry name in dynamics/ (mdnrnn, ensemble, rssm)
    width: int = 32                 # encoder node-embedding width
    depth: int = 2                  # encoder message-passing blocks
    latent_dim: int = 32            # encoder latent Z
    hidden: int = 32                # dynamics hidden size (LSTM / GRU deter / member MLP, heads)
    slot_width: int = 16            # action-slot embedding width
    mask_rank: int = 8              # rank of the mask head's bilinear slot score (`dynamics.heads.Heads`)
    mixtures: int = 3               # mdnrnn mixture components
    members: int = 3                # ensemble members
    stoch: int = 16                 # rssm stochastic size
    unroll: str = "teacher"         # teacher | open (multi-step open loop)
    seq_len: int = 5                # T: real steps per training window (5 met the fidelity targets; see README)
    batch_size: int = 8             # windows per training step
    lr: float = 1e-3
    grad_clip: float = 1.0
    latent_coef: float = 1.0
    reward_coef: float = 1.0
    terminated_coef: float = 1.0
    mask_coef: float = 1.0
    kl_coef: float = 0.1
    consumed_prior: bool = True     # rewriting: an applied slot, and every slot sharing a node with it, is illegal afterwards
    mask_loss: str = "all"          # all | residual: with consumed_prior, train the mask head only on slots not yet consumed (see README)
    slot_rewards: bool = True       # rewriting: a slot's description includes its candidate's immediate reward (false: a zero column)


#: short flags for the world-model component names (``--encoder gat`` = ``--model.encoder gat``)
MODEL_ALIASES = {"encoder": "model.encoder", "dynamics": "model.dynamics"}


@dataclass(frozen=True)
class PPOConfig:
    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    num_epochs: int = 4
    num_minibatches: int = 4
    rollout_len: int = 32
    hidden: int = 64
    message_steps: int = 2
    num_rules: int = 256            # size of the rule-id embedding table
    gain_prior: float = 0.0         # model-free rewriting: logit += gain_prior * candidate's immediate reward (unit scale)


@dataclass(frozen=True)
class CMAESConfig:
    popsize: int = 16
    sigma: float = 0.5
    hidden: int = 0                 # 0 = linear controller, >0 = one hidden layer
    num_rollouts: int = 4           # rollouts per candidate (fitness = mean return)
    horizon: int = 32


@dataclass(frozen=True)
class EGRLConfig:
    """`controllers.egrl.EGRL` (MemoryPlacement-v0): GA population, SAC learner, GNN size."""

    pop_size: int = 16
    elites: int = 2
    tournament: int = 3
    crossover_prob: float = 0.5
    mutation_prob: float = 0.9
    mutation_frac: float = 0.1
    mutation_std: float = 0.1
    super_mutation_prob: float = 0.05
    learner_episodes: int = 4       # mappings sampled from the learner per generation
    learner_steps: int = 32         # learner gradient steps per generation
    batch_size: int = 64
    replay_capacity: int = 4096     # mappings kept per training graph
    lr: float = 1e-3
    alpha: float = 0.2              # SAC entropy weight
    migrate_every: int = 1          # generations between copies of the learner into the population
    width: int = 32
    depth: int = 2
    collect_rows: int = 1           # model-based: collector env i plays population row i mod this (1: champion)
    measured_fitness: bool = False  # model-based: a mapping played in a real episode scores its measured reward, not the model's


@dataclass(frozen=True)
class PlannerConfig:
    method: str = "cem"             # "cem" or "random"
    horizon: int = 8
    num_samples: int = 64
    num_elites: int = 8
    iterations: int = 3
    smoothing: float = 0.5          # CEM update rate of the action distribution
    gamma: float = 1.0


@dataclass(frozen=True)
class ControllerConfig:
    """Controller C, and which environment it trains on (a config value, not code)."""

    name: str = "ppo"               # registry name: ppo, cmaes, egrl, planner, random, greedy, search
    train_env: Literal["imagined", "real"] = "imagined"
    ppo: PPOConfig = field(default_factory=PPOConfig)
    cmaes: CMAESConfig = field(default_factory=CMAESConfig)
    egrl: EGRLConfig = field(default_factory=EGRLConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)


@dataclass(frozen=True)
class OutcomeLoopConfig:
    """Placement, model-based: the outcome model (`worldmodels.outcome`) refit on the loop's
    completed real episodes and paying the imagined final reward."""

    enabled: bool = True            # false: the dynamics' reward head pays the final reward
    updates_per_iter: int = 50      # Adam steps per iteration
    width: int = 32
    members: int = 3
    lr: float = 2e-3
    batch_size: int = 32
    optimism: float = 0.0           # model-based EGRL: fitness = prediction + this many ensemble stds (UCB)


@dataclass(frozen=True)
class LoopConfig:
    """Model-based training loop."""

    total_env_steps: int = 100_000  # real environment steps
    model_updates_per_iter: int = 100
    controller_updates_per_iter: int = 10
    imagined_horizon: int = 16
    real_ratio: float = 0.1
    eval_every: int = 5_000         # real env steps between evaluations
    checkpoint_every: int = 10_000  # real env steps between checkpoints
    keep_checkpoints: int = 3
    mode: Literal["model_based", "model_free"] = "model_based"  # model_free: the same controller, real env only
    explore_eps: float = 0.1        # model-based: random legal action with this probability
    horizon_min: int = 1            # MBPO schedule: imagined horizon from horizon_min ...
    horizon_schedule: tuple[int, int] = (0, 10)  # ... rising linearly over these iterations
    imagined_envs: int = 32         # parallel imagined rollouts per controller update
    start_pool: int = 64            # encoded real states imagined rollouts start from
    replay_episodes: int = 2000     # replay capacity (oldest episodes dropped)
    replay_horizon: int = 10        # mask-target horizon of the replay store
    fidelity_ks: tuple[int, ...] = (1, 5)
    fidelity_windows: int = 64
    search_budget: int = 200        # backtracking dequeues of the final baseline comparison
    bc_steps: int = 0               # behaviour-cloning steps on the env's demonstrations before training (0 = off)
    bc_lr: float = 1e-3             # their Adam learning rate
    bc_batch: int = 32              # demonstrations per behaviour-cloning step
    outcome: OutcomeLoopConfig = field(default_factory=OutcomeLoopConfig)


@dataclass(frozen=True)
class LogConfig:
    logdir: str = "runs"
    run_name: str = ""              # "" = derived from preset and seed
    progress: bool = True           # progress bars


@dataclass(frozen=True)
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = 0


# ----------------------------------------------------------------------------- helpers


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"section.field": value}`` for every leaf of a config dataclass."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(v):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def leaf_types(cls, prefix: str = "") -> dict[str, Any]:
    """``{"section.field": annotated type}`` for every leaf of a config dataclass type."""
    out: dict[str, Any] = {}
    for name, tp in _hints(cls).items():
        if dataclasses.is_dataclass(tp):
            out.update(leaf_types(tp, prefix + name + "."))
        else:
            out[prefix + name] = tp
    return out


def parse_value(text: str, tp: Any, flag: str) -> Any:
    """Parse ``text`` as the annotated type ``tp``; errors name ``flag``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if text in typing.get_args(tp):
            return text
        raise ConfigError(f"flag --{flag}: {text!r} is not one of {', '.join(typing.get_args(tp))}")
    try:
        if tp is bool:
            low = text.strip().lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if tp is str:
            return text
        if origin is tuple:
            args = typing.get_args(tp)
            s = text.strip()
            if s.startswith("[") or s.startswith("("):
                s = s[1:-1]
            parts = [p.strip() for p in s.split(",") if p.strip()]
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(parse_value(p, args[0], flag) for p in parts)
            if len(parts) != len(args):
                raise ValueError
            return tuple(parse_value(p, a, flag) for p, a in zip(parts, args))
    except ConfigError:
        raise
    except ValueError:
        pass
    else:
        raise ConfigError(f"flag --{flag}: unsupported field type {tp!r}")
    name = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"flag --{flag}: cannot parse {text!r} as {name}")


def _coerce(value: Any, tp: Any, flag: str) -> Any:
    """Check/convert a JSON value to the annotated type (for loading saved configs)."""
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field {flag}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        elem = [args[0]] * len(value) if (len(args) == 2 and args[1] is Ellipsis) else list(args)
        if len(elem) != len(value):
            raise ConfigError(f"config field {flag}: expected {len(elem)} items, got {len(value)}")
        return tuple(_coerce(v, t, flag) for v, t in zip(value, elem))
    if typing.get_origin(tp) is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"config field {flag}: {value!r} is not one of {', '.join(typing.get_args(tp))}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, bool, str) and not (type(value) is tp):
        raise ConfigError(f"config field {flag}: expected {tp.__name__}, got {value!r}")
    return value


def replace_path(cfg: Any, updates: Mapping[str, Any]) -> Any:
    """Return ``cfg`` with dotted-path leaves replaced: ``{"controller.ppo.lr": 1e-3}``."""
    valid = flatten(cfg)
    nested: dict[str, Any] = {}
    for path, value in updates.items():
        if path not in valid:
            raise ConfigError(_unknown_message(path, valid))
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            nested[head] = value
    kwargs = {}
    for head, value in nested.items():
        sub = getattr(cfg, head)
        kwargs[head] = replace_path(sub, value) if dataclasses.is_dataclass(sub) else value
    return dataclasses.replace(cfg, **kwargs)


def _unknown_message(flag: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(flag, list(valid), n=3, cutoff=0.5)
    if not close:  # try matching the last component only (e.g. "--lr")
        last = {k.rsplit(".", 1)[-1]: k for k in valid}
        close = [last[c] for c in difflib.get_close_matches(flag.rsplit(".", 1)[-1], list(last), n=3, cutoff=0.6)]
    hint = ("; did you mean " + ", ".join("--" + c for c in close) + "?") if close else ""
    return f"unknown flag --{flag}{hint}"


# ----------------------------------------------------------------------------- presets


def default_config() -> Config:
    """The README's main job: model-based PPO on GraphRewrite-v0 (squeezenet + bert,
    held-out vit), a few minutes on a 2-core CPU."""
    return replace_path(Config(), {
        "env.graph": "squeezenet,bert", "env.heldout": "vit", "env.max_steps": 30, "env.num_envs": 4,
        "model.hidden": 64, "model.slot_width": 32, "model.seq_len": 4, "model.lr": 3e-4,
        "controller.ppo.hidden": 64, "controller.ppo.rollout_len": 32, "controller.ppo.lr": 1e-3,
        "loop.total_env_steps": 2048, "loop.model_updates_per_iter": 30, "loop.controller_updates_per_iter": 4,
        "loop.imagined_horizon": 10, "loop.horizon_schedule": (1, 8), "loop.real_ratio": 0.25,
        "loop.eval_every": 256, "loop.checkpoint_every": 256,
    })


def tiny_config() -> Config:
    """Smallest settings for smoke tests and CI (seconds per run on 2 cores)."""
    return replace_path(Config(), {
        "env.graph": "squeezenet", "env.num_envs": 2, "env.max_steps": 8, "env.max_candidates": 32,
        "model.latent_dim": 8, "model.hidden": 16, "model.width": 8, "model.slot_width": 8,
        "model.depth": 1, "model.batch_size": 2, "model.seq_len": 2, "model.lr": 3e-4,
        "controller.ppo.hidden": 16, "controller.ppo.rollout_len": 8, "controller.ppo.num_epochs": 1,
        "controller.ppo.num_minibatches": 2,
        "controller.cmaes.popsize": 4, "controller.cmaes.horizon": 8, "controller.cmaes.num_rollouts": 2,
        "controller.egrl.pop_size": 4, "controller.egrl.elites": 1, "controller.egrl.learner_episodes": 2,
        "controller.egrl.learner_steps": 2, "controller.egrl.batch_size": 8, "controller.egrl.replay_capacity": 64,
        "controller.egrl.width": 8, "controller.egrl.depth": 1,
        "controller.planner.num_samples": 8, "controller.planner.horizon": 4, "controller.planner.iterations": 1,
        "loop.total_env_steps": 64, "loop.model_updates_per_iter": 3, "loop.controller_updates_per_iter": 2,
        "loop.imagined_envs": 4, "loop.start_pool": 8, "loop.imagined_horizon": 4, "loop.horizon_schedule": (0, 2),
        "loop.eval_every": 32, "loop.checkpoint_every": 16, "loop.fidelity_windows": 8, "loop.search_budget": 10,
        "log.progress": False,
    })


#: name -> zero-argument factory returning a Config. Add presets here or at import time.
PRESETS: dict[str, Any] = {"default": default_config, "tiny": tiny_config,
                           "tiny_model_free": lambda: replace_path(tiny_config(), {"loop.mode": "model_free"}),
                           "model_free": lambda: replace_path(default_config(), {"loop.mode": "model_free"})}


def get_preset(name: str, presets: Mapping[str, Any] | None = None) -> Config:
    presets = PRESETS if presets is None else presets
    if name not in presets:
        close = difflib.get_close_matches(name, list(presets), n=3, cutoff=0.4)
        hint = ("; did you mean " + ", ".join(close) + "?") if close else ""
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(sorted(presets))}){hint}")
    p = presets[name]
    return p() if callable(p) else p


# ----------------------------------------------------------------------------- parsing


def help_text(cfg: Config, aliases: Mapping[str, str] | None = None) -> str:
    types = leaf_types(type(cfg))
    lines = ["flags (--section.field VALUE):", "  --preset NAME", "  --config PATH/config.json"]
    lines += [f"  --{a} = --{path}" for a, path in (aliases or {}).items()]
    for k, v in flatten(cfg).items():
        tp = types[k]
        name = "|".join(typing.get_args(tp)) if typing.get_origin(tp) is Literal else getattr(tp, "__name__", str(tp))
        lines.append(f"  --{k} {name} (default {v!r})")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None, presets: Mapping[str, Any] | None = None,
               base: Config | None = None, aliases: Mapping[str, str] | None = None) -> Config:
    """Parse ``argv`` (without the program name) into a :class:`Config`.

    ``aliases``: short flags standing for dotted ones (``{"encoder": "model.encoder"}``).
    Raises :class:`ConfigError` (one line) for an unknown flag (naming the closest valid
    ones), a missing value, a value of the wrong type (naming the flag) or an unknown
    preset. ``--help`` raises ``SystemExit(0)`` after printing all flags. ``--env.name E``
    (a change of environment) also selects E's training and held-out instances
    (`ENV_INSTANCES`) unless ``--env.graph`` / ``--env.heldout`` are given.
    """
    aliases = dict(aliases or {})
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = base if base is not None else default_config()
    # split into (flag, value) pairs
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok in ("-h", "--help"):
            print(help_text(cfg, aliases))
            raise SystemExit(0)
        if not tok.startswith("--"):
            raise ConfigError(f"unexpected argument {tok!r} (flags look like --section.field value)")
        name, eq, val = tok[2:].partition("=")
        name = aliases.get(name, name)
        if not eq:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                val = argv[i + 1]
                i += 1
            else:
                val = None
        pairs.append((name, val))
        i += 1
    # --preset / --config first, in that order, wherever they appear
    for name, val in pairs:
        if name == "preset":
            if val is None:
                raise ConfigError("flag --preset needs a value")
            cfg = get_preset(val, presets)
    for name, val in pairs:
        if name == "config":
            if val is None:
                raise ConfigError("flag --config needs a value")
            cfg = load_config(val)
    types = leaf_types(type(cfg))
    updates: dict[str, Any] = {}
    for name, val in pairs:  # --env.name E first selects E's default instances (explicit flags still win)
        if name == "env.name" and val in ENV_INSTANCES and "env.name" in types and val != cfg.env.name:
            updates.update(ENV_INSTANCES[val])
    for name, val in pairs:
        if name in ("preset", "config"):
            continue
        if name not in types:
            raise ConfigError(_unknown_message(name, list(types)))
        tp = types[name]
        if val is None:
            if tp is bool:
                val = "true"
            else:
                raise ConfigError(f"flag --{name} needs a value")
        updates[name] = parse_value(val, tp, name)
    return replace_path(cfg, updates) if updates else cfg


def cli_parse(argv: Sequence[str] | None = None, presets: Mapping[str, Any] | None = None) -> Config:
    """:func:`parse_args` for command-line tools: a bad flag prints ``error: ...`` and exits 2."""
    try:
        return parse_args(argv, presets)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)


# ----------------------------------------------------------------------------- (de)serialise


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples become lists in JSON)."""
    return dataclasses.asdict(cfg)


def from_dict(data: Mapping[str, Any], cls: type = Config, where: str = "") -> Any:
    """Build a config dataclass from a nested dict; unknown keys are an error, missing keys
    keep their defaults (so configs saved by an older version still load)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section {where or '<root>'}: expected an object, got {data!r}")
    hints = _hints(cls)
    unknown = [k for k in data if k not in hints]
    if unknown:
        raise ConfigError(_unknown_message(where + unknown[0], [where + k for k in hints]).replace("flag --", "config field "))
    kwargs = {}
    for k, v in data.items():
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = from_dict(v, tp, where + k + ".")
        else:
            kwargs[k] = _coerce(v, tp, where + k)
    return cls(**kwargs)


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def save_config(cfg: Any, run_dir: str | os.PathLike, name: str = "config.json") -> str:
    """Write the resolved config to ``run_dir/config.json`` atomically; return the path."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(to_json(cfg) + "\n")
    os.replace(tmp, path)
    return path


def load_config(path: str | os.PathLike, cls: type = Config) -> Any:
    """Load a config saved by :func:`save_config` (a file or a run directory)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return from_dict(data, cls)


def config_hash(cfg: Any, exclude: Sequence[str] = ()) -> str:
    """Stable 16-hex-digit hash of the config, ignoring leaves under the ``exclude`` prefixes
    (e.g. ``("log", "loop")`` for checkpoint compatibility)."""
    flat = {k: v for k, v in flatten(cfg).items()
            if not any(k == p or k.startswith(p + ".") for p in exclude)}
    blob = json.dumps(flat, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
