"""The harness against a hand-written loop, judged the same way for every recipe.

``test_overhead.py`` (digits, samples/s) and ``test_lm_overhead.py`` (tiny_gpt,
tokens/s) run interleaved rounds; each round gives, per side, the throughput over
the whole window, every measured step's wait for its batch and every step's time.
``summarise`` turns those rounds into the figures both benchmarks record and print.
"""

from __future__ import annotations

import statistics

import pytest

from benchmarks.budget import not_measured
from harness.measure.stats import median_ci


def summarise(benchmark, rounds: list[dict], unit: str, goal: float) -> dict:
    """The median harness/plain throughput ratio with its interval (``median_ci``'s dict).

    ``rounds``: ``{"harness": (per_s, wait_ms, step_ms), "plain": (...)}`` each. Skips the
    test, with the reason printed, when too few quiet rounds are left for an interval:
    no answer is not a failure, and no ratio is reported.
    """
    ratios = [r["harness"][0] / r["plain"][0] for r in rounds]
    reason = not_measured(benchmark.extra_info, median_ci(ratios)["ci_level"])
    if reason:
        print(f"\n{reason}")
        pytest.skip(reason)
    # Where the time goes: every measured step's wait for its batch and the step itself,
    # pooled over the rounds, compared at their medians. Accelerate's loader fetches one
    # batch ahead, so the harness's first wait of an epoch covers two batches and its
    # last none; a median barely moves for that, a low percentile would.
    pooled = {side: {"wait": sorted(t for r in rounds for t in r[side][1]),
                     "step": sorted(t for r in rounds for t in r[side][2])} for side in ("harness", "plain")}
    p50 = {side: {part: statistics.median(v) for part, v in parts.items()} for side, parts in pooled.items()}
    step_ratios = [statistics.median(r["plain"][2]) / statistics.median(r["harness"][2]) for r in rounds]
    ci, step_ci = median_ci(ratios), median_ci(step_ratios)
    info = benchmark.extra_info
    info[f"harness_{unit}_per_s"] = [r["harness"][0] for r in rounds]
    info[f"plain_{unit}_per_s"] = [r["plain"][0] for r in rounds]
    info["pooled_p50_ms"] = p50  # {side: {wait, step}}
    info["pooled_steps"] = {side: len(parts["step"]) for side, parts in pooled.items()}
    info["ratio_per_round"] = ratios
    info["ratio_median"] = ci["median"]
    info["ratio_median_ci"] = [ci["ci_low"], ci["ci_high"]]
    info["ratio_median_ci_level"] = ci["ci_level"]
    info["ratio_of_medians"] = (statistics.median(info[f"harness_{unit}_per_s"])
                                / statistics.median(info[f"plain_{unit}_per_s"]))
    info["ratio_min"], info["ratio_max"] = min(ratios), max(ratios)
    info["step_ratio_per_round"] = step_ratios
    info["step_ratio_median"] = step_ci["median"]
    info["step_ratio_median_ci"] = [step_ci["ci_low"], step_ci["ci_high"]]
    print(f"\nharness / plain {unit}/s per round: {', '.join(f'{r:.3f}' for r in ratios)}\n"
          f"{len(rounds)} rounds ({info['stopped_because']}); {unit}/s ratio: median {ci['median']:.3f}, "
          f"{ci['ci_level']:.0%} CI {ci['ci_low']:.3f}-{ci['ci_high']:.3f}, "
          f"range {min(ratios):.3f}-{max(ratios):.3f} (goal >= {goal})\n"
          f"step ratio (plain p50 step / harness p50 step, per round): median "
          f"{step_ci['median']:.3f}, {step_ci['ci_level']:.0%} CI {step_ci['ci_low']:.3f}-{step_ci['ci_high']:.3f}\n"
          f"pooled p50 ms: wait plain {p50['plain']['wait']:.2f} / harness {p50['harness']['wait']:.2f}; "
          f"step plain {p50['plain']['step']:.2f} / harness {p50['harness']['step']:.2f}")
    return ci
