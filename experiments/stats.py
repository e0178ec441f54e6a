"""Aggregate statistics over runs, rliable's recipe computed with NumPy.

A *score matrix* holds one score per (run, task): runs are seeds, tasks are graphs.
`iqm` is the interquartile mean over all its entries; `stratified_bootstrap_ci` resamples
runs with replacement within each task (stratum) and returns the 95% percentile interval of
a statistic (Agarwal et al., "Deep RL at the Edge of the Statistical Precipice", 2021).
"""
from __future__ import annotations

import numpy as np


def iqm(x) -> float:
    """Interquartile mean: the mean of the middle 50% of the values (all of them when
    fewer than 4)."""
    x = np.sort(np.asarray(x, np.float64).ravel())
    k = len(x) // 4
    return float(x[k:len(x) - k].mean())


def stratified_bootstrap_ci(groups: list[np.ndarray], stat, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of ``stat`` (a function of one concatenated array) over
    ``reps`` resamples that redraw the values of each group with replacement, within the
    group. ``groups``: one 1-D array per stratum (e.g. the seeds' scores on one graph)."""
    rng = np.random.default_rng(seed)
    vals = [stat(np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])) for _ in range(reps)]
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))
