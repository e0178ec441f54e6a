"""Train a controller with the Dyna loop (model-based) or on the real env only (model-free).

    python -m experiments.train [--preset NAME] [--section.field value ...] --logdir DIR

``--preset`` (default ``default``: model-based PPO on GraphRewrite-v0, a few minutes on a
2-core CPU; ``tiny`` for CI); every config field is a flag (``--help`` lists them); an
unknown flag is an error naming the closest valid ones. The resolved config is saved as
``DIR/config.json``; TensorBoard scalars (against real environment steps), HParams and
``DIR/summary.json`` are written into DIR; checkpoints into ``DIR/checkpoints``. Running
the same command with the same DIR after an interruption resumes from the last checkpoint.
``--env.name`` selects the environment (GraphRewrite-v0, DevicePlacement-v0,
MemoryPlacement-v0, MacroPlacement-v0) and, unless ``--env.graph`` / ``--env.heldout`` are
given, its default instances; its options are in ``--env.device.*``, ``--env.memory.*``,
``--env.macro.*``. At the end it prints the controller's metric per instance (rewriting:
cost reduction) next to the environment's baselines (rewriting: greedy and backtracking),
and as its last line the summary as a JSON object.
"""
from __future__ import annotations

import json
import os
import sys

from worldmodels.config import ConfigError, load_config, parse_args, replace_path, save_config, to_json


def parse(argv: list[str] | None):
    """(config, logdir); ``--logdir DIR`` overrides ``--log.logdir``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logdir = None
    out = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--logdir" or tok.startswith("--logdir="):
            if "=" in tok:
                logdir = tok.split("=", 1)[1]
            elif i + 1 < len(argv):
                logdir = argv[i + 1]
                i += 1
            else:
                raise ConfigError("flag --logdir needs a value")
        else:
            out.append(tok)
        i += 1
    cfg = parse_args(out)
    if logdir is not None:
        cfg = replace_path(cfg, {"log.logdir": logdir})
    return cfg, cfg.log.logdir


def main(argv: list[str] | None = None) -> dict:
    from worldmodels.checkpoint import CheckpointError
    from worldmodels.loop import train

    cfg, logdir = parse(argv)
    os.makedirs(logdir, exist_ok=True)
    saved = os.path.join(logdir, "config.json")
    if os.path.exists(saved) and os.path.isdir(os.path.join(logdir, "checkpoints")):
        try:
            old = load_config(saved)
        except ConfigError as e:
            raise CheckpointError(f"{logdir}: cannot read the saved config ({e})") from None
        if to_json(replace_path(old, {"log.logdir": cfg.log.logdir})) != to_json(cfg):
            from worldmodels.config import flatten
            a, b = flatten(old), flatten(cfg)
            diff = [k for k in a if k in b and a[k] != b[k] and not k.startswith("log.")]
            if any(not (k.startswith("loop.") or k.startswith("log.")) for k in diff):
                raise CheckpointError(f"{logdir} holds a run with an incompatible config (differs in "
                                      f"{', '.join('--' + k for k in diff[:4])}); use another --logdir")
    save_config(cfg, logdir)
    from systems_envs.rewrite.ruleset import default_rules
    from worldmodels.trained import write_rules

    write_rules(logdir, default_rules())   # the rule set a trained optimiser must be applied with
    summary = train(cfg, logdir, echo=lambda m: print(m, flush=True))
    print_table(summary)
    print(json.dumps(summary, default=float))
    return summary


def print_table(s: dict) -> None:
    """The controller's final metric per instance next to the environment's baselines."""
    m, names = s["metric"], s["baselines"]
    print(f"\n{s['env']} {s['mode']} {s['controller']}: {s['real_env_steps']} real env steps, "
          f"{s['wall_seconds']:.0f} s wall ({m}, higher is better)")
    print("| instance | split | controller | " + " | ".join(names) + " | best baseline | controller seconds |")
    print("|---|---|---|" + "---|" * len(names) + "---|---|")
    for g, r in s["per_graph"].items():
        print(f"| {g} | {r['split']} | {r[m]:.4f} | " + " | ".join(f"{r[f'{b}_{m}']:.4f}" for b in names)
              + f" | {r['best_baseline']} | {r['seconds']:.2f} |")
    print(f"summary: {os.path.join(s['logdir'], 'summary.json') if s.get('logdir') else 'summary.json'}")


if __name__ == "__main__":
    from experiments._cli import run_main
    from worldmodels.config import ConfigError  # noqa: F401,F811  (a ValueError: handled by run_main)

    run_main(main)
