"""Summaries of a sample of timings."""

from __future__ import annotations

import math

# torch.utils.benchmark flags a measurement whose IQR exceeds 10% of its median.
NOISY_IQR_RATIO = 0.10
UNRELIABLE_IQR_RATIO = 0.25


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        raise ValueError("percentile of an empty sample")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def distribution(values: list[float]) -> dict | None:
    """mean, quartiles, tails, IQR, coefficient of variation and a noise verdict."""
    if not values:
        return None
    v = sorted(values)
    n = len(v)
    mean = sum(v) / n
    var = sum((x - mean) ** 2 for x in v) / (n - 1) if n > 1 else 0.0
    p25, p50, p75 = (percentile(v, q) for q in (25, 50, 75))
    iqr = p75 - p25
    ratio = iqr / p50 if p50 > 0 else 0.0
    return {
        "count": n,
        "mean": mean,
        "p25": p25,
        "p50": p50,
        "p75": p75,
        "p90": percentile(v, 90),
        "p99": percentile(v, 99),
        "min": v[0],
        "max": v[-1],
        "iqr": iqr,
        "cv": math.sqrt(var) / mean if mean > 0 else 0.0,
        "iqr_over_median": ratio,
        "noise": "unreliable" if ratio > UNRELIABLE_IQR_RATIO else "noisy" if ratio > NOISY_IQR_RATIO else "ok",
    }


def median_ci_ranks(n: int, level: float = 0.95) -> tuple[int, int, float]:
    """1-based ranks (j, k) of the interval [x_(j), x_(k)] for the median, and its coverage.

    The coverage of order statistics is exact for any continuous distribution:
    P(x_(j) <= median < x_(k)) = P(j <= B < k), B ~ Binomial(n, 1/2). The interval is
    the narrowest symmetric one whose coverage is at least ``level``; where even the
    widest (the sample's range, coverage 1 - 2/2^n) falls short, it is that one, and the
    coverage returned says what it really is (0.75 for n = 3, 0.9375 for n = 5).
    """
    if n <= 0:
        raise ValueError("median_ci_ranks of an empty sample")

    def coverage(j: int) -> float:
        return sum(math.comb(n, i) for i in range(j, n - j + 1)) / 2.0 ** n

    best = 1
    for j in range(1, (n + 1) // 2 + 1):
        if coverage(j) >= level:
            best = j
        else:
            break
    return best, n + 1 - best, coverage(best)


def median_ci(values: list[float], level: float = 0.95) -> dict:
    """Median and an order-statistic confidence interval of it, with its true coverage.

    ``confidence`` is the level asked for; ``ci_level`` the interval's exact coverage,
    which is lower when there are too few values to reach ``confidence``.
    """
    v = sorted(values)
    n = len(v)
    if n == 0:
        return {"median": None, "ci_low": None, "ci_high": None, "confidence": level, "ci_level": None}
    med = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    j, k, cover = median_ci_ranks(n, level)
    return {"median": med, "ci_low": v[j - 1], "ci_high": v[k - 1], "confidence": level, "ci_level": cover}
