"""The gate's test: a one-sided Wilcoxon-Mann-Whitney rank-sum test, exact at small n.

Why this test (docs/compare.md says more): the replicates are whole runs, so a side
holds 2 to 10 values, not hundreds. At that size a normal approximation or a
bootstrap misstates p; the exact distribution of the rank sum does not, whatever
the distribution of the timings, and one slow run on a busy machine moves a rank,
not a mean. Ties (identical accuracies of two seeded runs, misses counted as an
infinite time) are handled exactly with mid-ranks.
"""

from __future__ import annotations

import math
from collections import Counter

ALPHA = 0.05
EXACT_MAX_N = 60
"""Up to this many values in all the distribution is counted exactly; beyond, the
normal approximation with tie correction (then accurate to well under 0.01)."""


def _midranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for m in range(i, j + 1):
            ranks[order[m]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _exact_upper_tail(weights: list[int], n1: int, observed: int) -> float:
    """P(sum of a random n1-subset of ``weights`` >= observed), every subset equally likely."""
    # counts[k][s]: subsets of size k with sum s, over the weights seen so far.
    counts = [Counter() for _ in range(n1 + 1)]
    counts[0][0] = 1
    for i, w in enumerate(weights):
        for k in range(min(i + 1, n1), 0, -1):
            for s, c in counts[k - 1].items():
                counts[k][s + w] += c
    total = math.comb(len(weights), n1)
    return sum(c for s, c in counts[n1].items() if s >= observed) / total


def one_sided_p(candidate: list[float], baseline: list[float], candidate_greater: bool) -> float:
    """p of "the candidate's values tend to be greater (or less) than the baseline's"."""
    n1, n2 = len(candidate), len(baseline)
    if n1 == 0 or n2 == 0:
        return 1.0
    sign = 1.0 if candidate_greater else -1.0
    pooled = [sign * v for v in candidate] + [sign * v for v in baseline]
    ranks = _midranks(pooled)
    doubled = [round(2 * r) for r in ranks]  # mid-ranks are halves: count in integers
    observed = sum(doubled[:n1])
    n = n1 + n2
    if n <= EXACT_MAX_N:
        return _exact_upper_tail(doubled, n1, observed)
    mean = n1 * (n + 1)  # of the doubled rank sum
    ties = sum(t ** 3 - t for t in Counter(ranks).values())
    var = 4 * n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (observed - 1 - mean) / math.sqrt(var)  # continuity correction of one doubled rank
    return 0.5 * math.erfc(z / math.sqrt(2))


def min_p(n1: int, n2: int) -> float:
    """The smallest p the exact test can give with n1 and n2 distinct values."""
    return 1.0 / math.comb(n1 + n2, n1) if n1 > 0 and n2 > 0 else 1.0


def can_reach(n1: int, n2: int, alpha: float = ALPHA) -> bool:
    """Whether the test on n1 and n2 values can give p < alpha at all."""
    return min_p(n1, n2) < alpha


def repeats_needed(alpha: float = ALPHA) -> int:
    """Fewest repeats per side with which a complete separation reaches p < alpha (4 at 0.05)."""
    n = 1
    while not can_reach(n, n, alpha):
        n += 1
    return n


def detectable_shift(values: list[float], alpha: float = ALPHA, higher_is_better: bool = True) -> float | None:
    """Smallest relative slowdown the test detects when both sides repeat ``values``' noise.

    The candidate is taken to be the same runs shifted by a factor: the smallest
    shift whose p falls below ``alpha``. None when no shift can (too few values).
    """
    v = [float(x) for x in values if x is not None and math.isfinite(x)]
    if not can_reach(len(v), len(v), alpha) or any(x <= 0 for x in v):
        return None
    lo, hi = 0.0, 1.0

    def detected(shift: float) -> bool:
        cand = [x / (1 + shift) if higher_is_better else x * (1 + shift) for x in v]
        return one_sided_p(cand, v, candidate_greater=not higher_is_better) < alpha

    while not detected(hi):
        hi *= 2
        if hi > 1e6:
            return None
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if detected(mid) else (mid, hi)
    return hi


def fewer_successes_p(k_cand: int, n_cand: int, k_base: int, n_base: int) -> float:
    """One-sided Fisher exact p of "the candidate succeeds less often than the baseline"."""
    n, k = n_cand + n_base, k_cand + k_base
    total = math.comb(n, n_cand)
    return sum(math.comb(k, x) * math.comb(n - k, n_cand - x) for x in range(0, k_cand + 1)) / total
