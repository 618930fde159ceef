"""The interval of a median says its true level: 10,000 samples per size cover the median as stated."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.measure.stats import median_ci, median_ci_ranks


@pytest.mark.parametrize("n", [3, 5, 8, 20])
def test_intervals_cover_the_true_median_at_their_stated_level(n):
    rng = np.random.default_rng(12)
    draws = np.sort(rng.exponential(1.0, size=(10_000, n)), axis=1)  # skewed on purpose
    true_median = math.log(2)
    j, k, level = median_ci_ranks(n, 0.95)
    # The ranks are what median_ci applies to one sample; check it does on one row.
    row = median_ci(list(draws[0]))
    assert (row["ci_low"], row["ci_high"], row["ci_level"]) == (draws[0, j - 1], draws[0, k - 1], level)
    covered = np.mean((draws[:, j - 1] <= true_median) & (true_median <= draws[:, k - 1]))
    assert abs(covered - level) < 0.01, (n, covered, level)


def test_the_level_is_never_claimed_when_n_is_too_small():
    assert median_ci([1.0, 2.0, 3.0])["ci_level"] == pytest.approx(0.75)
    assert median_ci([float(v) for v in range(5)])["ci_level"] == pytest.approx(0.9375)
    assert median_ci([float(v) for v in range(6)])["ci_level"] >= 0.95  # the range now reaches 95%
    ci = median_ci([float(v) for v in range(1, 21)])
    assert ci["ci_level"] >= 0.95 and (ci["ci_low"], ci["ci_high"]) == (6.0, 15.0)  # narrowest at >= 95%
    assert median_ci([])["ci_level"] is None
