"""Sample efficiency of model-based vs model-free training, in real environment steps.

    python -m experiments.bench_train [--preset default] [--seeds 5] [--workers 2]
        [--mb-steps 1024] [--mf-steps 4096] [--logdir runs/bench_train] [--analyse-only]
        [-- TRAIN FLAGS]

Trains seeds 0..K-1 of model-based for ``--mb-steps`` and of model-free for ``--mf-steps``
real steps (long enough for model-free to plateau), with ``experiments.ablate`` (skipped with
``--analyse-only``; TRAIN FLAGS go to every run), then reads each run's TensorBoard curves
and summary.json and reports, for the training graphs and the held-out graphs:

- per mode, the final cost reduction as the interquartile mean (IQM) over the (seed, graph)
  score matrix with a 95% stratified-bootstrap interval (strata: graphs; `experiments.stats`);
- learning curves, the same IQM and interval at every evaluation step (``curves.png``);
- the first real step at which model-based's IQM curve reaches model-free's final IQM, as a
  fraction of model-free's budget and of the step at which model-free's own curve first
  reaches that level, with a 95% interval from resampling the seeds of both modes.

Writes ``DIR/bench.md``, ``DIR/bench.json`` and ``DIR/curves.png``.
"""
from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np

from experiments.stats import iqm, stratified_bootstrap_ci

MODES = ("model_based", "model_free")
SPLITS = {"train": "validation", "heldout": "heldout"}   # split -> TensorBoard tag prefix of its graphs


def steps_to_reach(curve: list[tuple[int, float]], target: float, tol: float = 1e-4) -> int | None:
    """First step whose value is >= target - tol (None if never). The tolerance (also
    `experiments.ablate`'s) covers TensorBoard's float32 curves against summary.json's
    float64 finals."""
    for step, v in curve:
        if v >= target - tol:
            return step
    return None


def load_runs(logdir: str) -> list[dict]:
    """Every run under ``logdir`` (any ``.../seed*/summary.json``): its mode, real steps,
    final per-graph scores and per-graph curves ``{split: {graph: {step: score}}}``."""
    from worldmodels.tb_reader import read_scalars

    runs = []
    for path in sorted(glob.glob(os.path.join(logdir, "**", "seed*", "summary.json"), recursive=True)):
        d = os.path.dirname(path)
        with open(path) as f:
            s = json.load(f)
        metric, scal = s["metric"], read_scalars(d)
        graphs = {"train": s["graphs"], "heldout": s["heldout"]}
        runs.append({
            "run": os.path.relpath(d, logdir), "mode": s["mode"], "real_env_steps": s["real_env_steps"],
            "wall_seconds": s["wall_seconds"], "metric": metric, "graphs": graphs,
            "final": {sp: {g: s["per_graph"][g][metric] for g in gs} for sp, gs in graphs.items()},
            "curves": {sp: {g: dict(scal.get(f"{SPLITS[sp]}/{g}/{metric}", [])) for g in gs}
                       for sp, gs in graphs.items()},
            "baselines": {sp: {b: [s["per_graph"][g][f"{b}_{metric}"] for g in gs] for b in s["baselines"]}
                          for sp, gs in graphs.items()},
        })
    if not runs:
        raise FileNotFoundError(f"--logdir {logdir}: no run (no */seed*/summary.json below it)")
    for sp in SPLITS:
        if len({tuple(r["graphs"][sp]) for r in runs}) > 1:
            raise ValueError(f"--logdir {logdir}: runs with different {sp} graphs cannot be compared")
    return runs


def score_matrix(runs: list[dict], split: str, step: int | None = None) -> np.ndarray:
    """[runs, graphs] scores: the final ones, or the curves' at ``step`` (runs without an
    evaluation at that step are left out)."""
    rows = []
    for r in runs:
        gs = r["graphs"][split]
        vals = [r["final"][split][g] if step is None else r["curves"][split][g].get(step) for g in gs]
        if gs and all(v is not None for v in vals):
            rows.append(vals)
    return np.asarray(rows, np.float64).reshape(len(rows), -1)


def aggregate(m: np.ndarray, reps: int, seed: int = 0) -> dict:
    """IQM of a [runs, graphs] matrix and its stratified-bootstrap interval."""
    if m.size == 0:
        return {"iqm": None, "ci95": [None, None], "runs": 0}
    lo, hi = stratified_bootstrap_ci([m[:, j] for j in range(m.shape[1])], iqm, reps, seed)
    return {"iqm": iqm(m), "ci95": [lo, hi], "runs": int(m.shape[0])}


def iqm_curve(runs: list[dict], split: str, reps: int = 0) -> list[dict]:
    """``[{"step", "iqm", "ci95"}]`` at every evaluation step of ``runs`` (interval only when
    ``reps`` > 0)."""
    steps = sorted({s for r in runs for c in r["curves"][split].values() for s in c})
    out = []
    for s in steps:
        m = score_matrix(runs, split, s)
        if m.size:
            out.append({"step": s, **(aggregate(m, reps) if reps else {"iqm": iqm(m)})})
    return out


def reach(mb: list[dict], mf: list[dict], split: str) -> dict:
    """Model-based's first real step at which its IQM curve reaches model-free's final IQM,
    and that step over model-free's budget and over model-free's own first step at that level."""
    target = iqm(score_matrix(mf, split))
    at = steps_to_reach([(p["step"], p["iqm"]) for p in iqm_curve(mb, split)], target)
    mf_at = steps_to_reach([(p["step"], p["iqm"]) for p in iqm_curve(mf, split)], target)
    budget = max(r["real_env_steps"] for r in mf)
    return {"target": target, "model_based_steps": at, "model_free_budget": budget, "model_free_steps": mf_at,
            "ratio_to_budget": None if at is None else at / budget,
            "ratio_to_model_free_steps": None if at is None or not mf_at else at / mf_at}


def reach_interval(mb: list[dict], mf: list[dict], split: str, reps: int, seed: int = 0) -> list[float | None]:
    """95% interval of ``reach(...)["ratio_to_budget"]`` over resamples of each mode's runs
    (with replacement); never reaching counts as infinite (``None`` in the interval)."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(reps):
        r = reach([mb[i] for i in rng.integers(0, len(mb), len(mb))],
                  [mf[i] for i in rng.integers(0, len(mf), len(mf))], split)
        vals.append(np.inf if r["ratio_to_budget"] is None else r["ratio_to_budget"])
    lo, hi = (float(np.quantile(vals, q, method="inverted_cdf")) for q in (0.025, 0.975))
    return [None if not np.isfinite(v) else v for v in (lo, hi)]


def analyse(logdir: str, reps: int = 2000) -> dict:
    runs = load_runs(logdir)
    by_mode = {m: [r for r in runs if r["mode"] == m] for m in MODES}
    out: dict = {"runs": [{k: r[k] for k in ("run", "mode", "real_env_steps", "wall_seconds", "final")} for r in runs],
                 "metric": runs[0]["metric"], "graphs": runs[0]["graphs"], "baselines": {}, "final": {},
                 "curves": {}, "reach": {}}
    for sp in SPLITS:
        if not runs[0]["graphs"][sp]:
            continue
        out["baselines"][sp] = {b: float(np.mean(v)) for b, v in runs[0]["baselines"][sp].items()}
        for m, rs in by_mode.items():
            if rs:
                out["final"].setdefault(sp, {})[m] = aggregate(score_matrix(rs, sp), reps)
                out["curves"].setdefault(sp, {})[m] = iqm_curve(rs, sp, reps)
        if all(by_mode.values()):
            out["reach"][sp] = {**reach(by_mode["model_based"], by_mode["model_free"], sp),
                                "ratio_to_budget_ci95": reach_interval(by_mode["model_based"], by_mode["model_free"],
                                                                       sp, reps)}
    lines = report(out)
    with open(os.path.join(logdir, "bench.json"), "w") as f:
        json.dump(out, f, indent=2)
    with open(os.path.join(logdir, "bench.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot(out, os.path.join(logdir, "curves.png"))
    print("\n".join(lines))
    return out


def report(out: dict) -> list[str]:
    f = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
    metric = out["metric"]
    lines = [f"| split | mode | runs | real steps | final {metric}: IQM [95% CI] | " + " | ".join(
        out["baselines"]["train"]) + " |", "|---|---|---:|---:|---|" + "---:|" * len(out["baselines"]["train"])]
    for sp, modes in out["final"].items():
        for m, a in modes.items():
            steps = sorted({r["real_env_steps"] for r in out["runs"] if r["mode"] == m})
            lines.append(f"| {sp} | {m} | {a['runs']} | {','.join(map(str, steps))} | {f(a['iqm'])} "
                         f"[{f(a['ci95'][0])}, {f(a['ci95'][1])}] | "
                         + " | ".join(f(v) for v in out["baselines"][sp].values()) + " |")
    if out["reach"]:
        lines += ["", "| split | model-free's final IQM | model-based reaches it at | model-free's budget | "
                  "model-free first reaches it at | ratio to budget [95% CI] | ratio to model-free's step |",
                  "|---|---:|---:|---:|---:|---|---:|"]
        for sp, r in out["reach"].items():
            ci = r["ratio_to_budget_ci95"]
            lines.append(f"| {sp} | {r['target']:.4f} | {r['model_based_steps'] or 'never'} | {r['model_free_budget']} | "
                         f"{r['model_free_steps'] or 'never'} | {f(r['ratio_to_budget'])} [{f(ci[0])}, "
                         f"{'never' if ci[1] is None else f(ci[1])}] | {f(r['ratio_to_model_free_steps'])} |")
    return lines


def plot(out: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(out["curves"])
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4), squeeze=False)
    for ax, sp in zip(axes[0], splits):
        for m, pts in out["curves"][sp].items():
            if pts:
                x = [p["step"] for p in pts]
                ax.plot(x, [p["iqm"] for p in pts], marker="o", ms=3, label=m.replace("_", "-"))
                ax.fill_between(x, [p["ci95"][0] for p in pts], [p["ci95"][1] for p in pts], alpha=0.2)
        for (b, v), ls in zip(out["baselines"][sp].items(), (":", "--", "-.")):
            ax.axhline(v, color="gray", ls=ls, lw=1, label=f"{b} (mean)")
        ax.set_title(f"{sp} graphs: {', '.join(out['graphs'][sp])}", fontsize=9)
        ax.set_xlabel("real environment steps")
        ax.set_ylabel(f"{out['metric']} (IQM over seeds x graphs, 95% CI)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--mb-steps", type=int, default=1024, help="real environment steps of each model-based run")
    p.add_argument("--mf-steps", type=int, default=4096, help="real environment steps of each model-free run")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--logdir", default="runs/bench_train")
    p.add_argument("--analyse-only", action="store_true")
    args, extra = p.parse_known_args(argv)
    if extra and extra[0] == "--":
        extra = extra[1:]
    for name in ("seeds", "workers", "mb_steps", "mf_steps", "bootstrap"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.analyse_only:
        from experiments import ablate
        for mode, steps in (("model_based", args.mb_steps), ("model_free", args.mf_steps)):
            ablate.main(["--base", args.preset, "--grid", f"loop.mode={mode}", "--grid", f"loop.total_env_steps={steps}",
                         "--seeds", str(args.seeds), "--workers", str(args.workers),
                         "--logdir", os.path.join(args.logdir, mode), "--", *extra])
    return analyse(args.logdir, args.bootstrap)


if __name__ == "__main__":
    from experiments._cli import run_main

    run_main(main)
