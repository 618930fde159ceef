"""The gate's exact tests against scipy.stats on a few hundred random cases.

harness/gate/significance.py counts the distributions itself so that ``harness compare``
never imports scipy (docs/compare.md); this is where its p values are checked against the
reference implementation. scipy is a dev dependency: without it the file skips.
"""

from __future__ import annotations

import math
import random

import pytest

stats = pytest.importorskip("scipy.stats")
np = pytest.importorskip("numpy")

from harness.gate.significance import EXACT_MAX_N, fewer_successes_p, one_sided_p  # noqa: E402

CASES = 300


def _distinct(rng: random.Random, n: int) -> list[float]:
    return [rng.uniform(0.0, 100.0) for _ in range(n)]


def _tied(rng: random.Random, n: int) -> list[float]:
    # Few levels, so most samples hold ties: identical accuracies of seeded runs, misses as inf.
    return [rng.choice([1.0, 2.0, 3.0, 4.0, math.inf]) for _ in range(n)]


@pytest.mark.parametrize("seed", range(3))
def test_mann_whitney_matches_scipy_exact_without_ties(seed):
    rng = random.Random(seed)
    for _ in range(CASES // 3):
        cand, base = _distinct(rng, rng.randint(1, 10)), _distinct(rng, rng.randint(1, 10))
        greater = rng.random() < 0.5
        ours = one_sided_p(cand, base, candidate_greater=greater)
        ref = stats.mannwhitneyu(cand, base, alternative="greater" if greater else "less", method="exact").pvalue
        assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12), (cand, base, greater)


def _rank_sum(x, y, axis=-1):
    pooled = np.concatenate([x, y], axis=axis)
    return np.take(stats.rankdata(pooled, axis=axis), range(x.shape[axis]), axis=axis).sum(axis=axis)


@pytest.mark.parametrize("seed", range(2))
def test_mann_whitney_with_ties_matches_scipy_exact_permutation(seed):
    """scipy's exact Mann-Whitney does not count ties exactly; every split of the mid-ranks,
    enumerated by scipy's permutation test, does, and that is what the gate claims."""
    rng = random.Random(100 + seed)
    for _ in range(CASES // 6):
        cand, base = _tied(rng, rng.randint(2, 6)), _tied(rng, rng.randint(2, 6))  # scipy: 2 or more
        greater = rng.random() < 0.5
        ours = one_sided_p(cand, base, candidate_greater=greater)
        # rankdata does not take inf apart from a large number: replace it by one above every level.
        x, y = (np.array([v if math.isfinite(v) else 1e9 for v in s]) for s in (cand, base))
        ref = stats.permutation_test((x, y), _rank_sum, permutation_type="independent", vectorized=True,
                                     alternative="greater" if greater else "less", n_resamples=np.inf).pvalue
        assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12), (cand, base, greater)


def test_mann_whitney_beyond_the_exact_size_matches_scipy_asymptotic():
    """Past EXACT_MAX_N values: the normal approximation with tie and continuity correction."""
    rng = random.Random(7)
    for _ in range(20):
        n1 = rng.randint(EXACT_MAX_N // 2 + 1, EXACT_MAX_N)
        cand = [float(rng.randint(0, 30)) for _ in range(n1)]
        n2 = rng.randint(EXACT_MAX_N - n1 + 1, 60)
        base = [float(rng.randint(0, 30)) + rng.choice([0.0, 2.0]) for _ in range(n2)]
        greater = rng.random() < 0.5
        ours = one_sided_p(cand, base, candidate_greater=greater)
        ref = stats.mannwhitneyu(cand, base, alternative="greater" if greater else "less",
                                 method="asymptotic", use_continuity=True).pvalue
        assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12), (cand, base, greater)


def test_fisher_matches_scipy_fisher_exact():
    rng = random.Random(11)
    for _ in range(CASES):
        n_cand, n_base = rng.randint(1, 20), rng.randint(1, 20)
        k_cand, k_base = rng.randint(0, n_cand), rng.randint(0, n_base)
        ours = fewer_successes_p(k_cand, n_cand, k_base, n_base)
        table = [[k_cand, n_cand - k_cand], [k_base, n_base - k_base]]
        ref = stats.fisher_exact(table, alternative="less").pvalue
        assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12), (k_cand, n_cand, k_base, n_base)
