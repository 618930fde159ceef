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
