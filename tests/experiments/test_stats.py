import numpy as np
import pytest

from experiments.stats import iqm, stratified_bootstrap_ci


def test_iqm_drops_the_top_and_bottom_quarter():
    assert iqm([1, 2, 3, 4, 100, -100, 2.5, 3.5]) == pytest.approx(np.mean([2, 2.5, 3, 3.5]))
    assert iqm([1.0, 5.0]) == 3.0                                    # fewer than 4: the mean
    assert iqm(np.array([[1.0, 2.0], [3.0, 100.0]])) == 2.5          # a score matrix: all entries


def test_bootstrap_interval_is_seeded_and_brackets_the_statistic():
    lo, hi = stratified_bootstrap_ci([np.array([1.0, 2.0, 3.0])], np.mean)
    assert 1.0 <= lo < 2.0 < hi <= 3.0
    assert stratified_bootstrap_ci([np.array([1.0, 2.0, 3.0])], np.mean) == (lo, hi)


def test_bootstrap_resamples_within_each_stratum():
    # each stratum keeps its size, so a constant stratum of 10s always contributes exactly
    # as many 10s: the mean of the concatenation only varies by the other stratum's draws
    a, b = np.full(4, 10.0), np.array([0.0, 0.0, 0.0, 4.0])
    lo, hi = stratified_bootstrap_ci([a, b], np.mean, reps=500)
    assert 5.0 <= lo <= hi <= 7.0
