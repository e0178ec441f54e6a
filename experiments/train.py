"""Train a controller with the Dyna loop (model-based) or on the real env only (model-free).

    python -m experiments.train [--preset NAME] [--section.field value ...] --logdir DIR

``--preset`` (default ``default``: model-based PPO on GraphRewrite-v0, a few minutes on a
2-core CPU; ``tiny`` for CI); every config field is a flag (``--help`` lists them); an
unknown flag is an error naming the closest valid ones. The resolved config is saved as
``DIR/config.json``; TensorBoard scalars (against real environment steps), HParams and
``DIR/summary.json`` are written into DIR; checkpoints into ``DIR/checkpoints``. Running
the same command with the same DIR after an interruption resumes from the last checkpoint.
At the end it prints the controller's real cost reduction per graph next to greedy's and
the backtracking search's.
"""
from __future__ import annotations

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
    return summary


def print_table(s: dict) -> None:
    print(f"\n{s['mode']} {s['controller']}: {s['real_env_steps']} real env steps, {s['wall_seconds']:.0f} s wall")
    print("| graph | split | controller | greedy | backtracking | controller seconds |")
    print("|---|---|---|---|---|---|")
    for g, m in s["per_graph"].items():
        print(f"| {g} | {m['split']} | {m['cost_reduction']:.4f} | {m['greedy_cost_reduction']:.4f} | "
              f"{m['backtracking_cost_reduction']:.4f} | {m['seconds']:.2f} |")
    print(f"summary: {os.path.join(s.get('logdir', ''), 'summary.json') if s.get('logdir') else 'summary.json'}")


if __name__ == "__main__":
    from experiments._cli import run_main
    from worldmodels.config import ConfigError  # noqa: F401,F811  (a ValueError: handled by run_main)

    run_main(main)
