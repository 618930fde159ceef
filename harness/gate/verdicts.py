"""One metric of one cell: baseline replicates against candidate replicates -> a verdict.

Replicates are independent runs of the recipe, never the steps of one run (steps
in a run share its allocator, caches and neighbours; treating 500 of them as 500
samples turns a 6% drift between two runs into p = 1e-43). A side's replicates are:

- one value per report when the side holds several reports of the cell;
- else the report's ``repeats`` list for the metric (whole-run repeats, or timed
  windows for samples/s);
- else its single value.

Verdicts: ``regression`` (worse beyond the threshold, p < alpha), ``suspicious``
(worse beyond the threshold, but too few replicates for the test ever to reach
p < alpha), ``ok`` (inside the threshold, or beyond it without significance),
``improved`` (better beyond the threshold, p < alpha), ``insufficient data``
(a side has no value).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from harness.report.figures import REPLICATES, dig, figure, token_repeats
from harness.gate.significance import ALPHA, can_reach, fewer_successes_p, min_p, one_sided_p, repeats_needed

REGRESSION, SUSPICIOUS, OK, IMPROVED, INSUFFICIENT = "regression", "suspicious", "ok", "improved", "insufficient data"


@dataclass(frozen=True)
class Metric:
    name: str
    """What ``--threshold NAME=PCT`` calls it; a harness.report.figures.FIGURES name."""
    label: str
    higher_is_better: bool
    threshold: float
    """Percent of the baseline, or percentage points when ``absolute``."""
    absolute: bool = False
    timed: bool = False
    """A timing: only as good as the machine was quiet (harness/report/conditions.py)."""

    @property
    def unit(self) -> str:
        return " pt" if self.absolute else "%"


# Defaults from 5 A/A whole runs of configs/digits_cnn.yaml on the idle 2-core machine
# (docs/compare.md, "Calibration"): the timings' A/A ranges rounded (samples/s 15.4%,
# step time p50 27.1%, time to target 18.2%), so one A/A pair rarely reads beyond them;
# memory varied 0.1% at most and accuracy not at all. On a busy machine timings swing far
# more than any threshold should absorb: the replicates and the exact test guard there.
METRICS = (
    Metric("samples_per_s", "samples/s", True, 15.0, timed=True),
    # A language model's figure (its samples are windows of data.seq_len tokens): judged
    # like samples/s, and only where both sides report it (OPTIONAL), so an image
    # cell's rows stay as they were.
    Metric("tokens_per_s", "tokens/s", True, 15.0, timed=True),
    Metric("step_time_p50_ms", "step time p50 (ms)", False, 30.0, timed=True),
    Metric("peak_rss_mb", "peak RSS (MB)", False, 2.0),
    # The tree's PSS counts the DataLoader workers (the main RSS leaves them out).
    Metric("peak_pss_mb", "peak PSS (MB)", False, 2.0),
    # Accuracy moves in points, not percent: 0.97 -> 0.96 is one point whatever the baseline.
    Metric("test_accuracy", "test accuracy", True, 1.0, absolute=True),
    Metric("time_to_target_s", "time to target (s)", False, 20.0, timed=True),
)
BY_NAME = {m.name: m for m in METRICS}
OPTIONAL = ("tokens_per_s",)
"""Metrics of one kind of workload only: a cell shows them where both sides have a value."""


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _value(report: dict, metric: Metric):
    v = figure(report, metric.name)
    if metric.name == "time_to_target_s" and v is None and _has_target(report):
        return math.inf  # a miss: it never got there
    return float(v) if _number(v) else None


def _has_target(report: dict) -> bool:
    return _number(dig(report, "accuracy.target_accuracy")) or _number(dig(report, "config.train.target_accuracy"))


def replicates(reports: list[dict], metric: Metric) -> list[float]:
    """The side's independent replicates of ``metric`` (misses of the target as inf)."""
    if len(reports) == 1:
        listed = token_repeats(reports[0]) if metric.name == "tokens_per_s" else \
            dig(reports[0], REPLICATES[metric.name])
        if isinstance(listed, list) and listed:
            miss = math.inf if metric.name == "time_to_target_s" and _has_target(reports[0]) else None
            values = [float(v) if _number(v) else miss for v in listed]
            return [v for v in values if v is not None]
    values = [_value(r, metric) for r in reports]
    return [v for v in values if v is not None]


@dataclass
class Judgement:
    baseline: float | None
    candidate: float | None
    change: str
    verdict: str
    note: str


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _change(metric: Metric, b: float, c: float) -> tuple[float, str]:
    """(size against the threshold, text); the size is inf when a side is inf."""
    if math.isinf(b) or math.isinf(c):
        return (0.0, "+0%") if b == c else (math.inf, "never" if math.isinf(c) else "reached")
    delta = c - b
    if metric.absolute:
        return abs(delta) * 100.0, f"{delta * 100.0:+.2f} pt"
    if b == 0:
        return (0.0, "+0%") if delta == 0 else (math.inf, "from 0")
    return abs(delta) / abs(b) * 100.0, f"{delta / abs(b) * 100.0:+.1f}%"


def _share(values: list[float]) -> str:
    return f"{sum(math.isfinite(v) for v in values)}/{len(values)}"


def judge(metric: Metric, base: list[dict], cand: list[dict], threshold: float, alpha: float = ALPHA) -> Judgement:
    return judge_values(metric, replicates(base, metric), replicates(cand, metric), threshold, alpha)


def judge_values(metric: Metric, b: list[float], c: list[float], threshold: float,
                 alpha: float = ALPHA) -> Judgement:
    """``judge`` on each side's replicates already drawn (a figure of a file other than the report)."""
    if not b or not c:
        side = "baseline" if not b else "candidate"
        return Judgement(_median(b) if b else None, _median(c) if c else None, "-", INSUFFICIENT,
                         f"no value in the {side}")
    mb, mc = _median(b), _median(c)
    n = f"n={len(b)}/{len(c)}"
    size, change = _change(metric, mb, mc)
    ttt = metric.name == "time_to_target_s"
    reached_less = ttt and _share_of(c) < _share_of(b)
    reached_more = ttt and _share_of(c) > _share_of(b)
    note_share = f", reached the target {_share(b)} vs {_share(c)}" if ttt else ""
    if size <= threshold and not (reached_less or reached_more):
        return Judgement(mb, mc, change, OK, f"inside the threshold ({n}{note_share})")
    if reached_less or reached_more:
        worse = reached_less
    else:
        worse = (mc > mb) != metric.higher_is_better
    cand_greater = worse != metric.higher_is_better
    p = one_sided_p(c, b, candidate_greater=cand_greater)
    test = "exact Mann-Whitney"
    if ttt:
        # Two questions, times (a miss counted as never) and the share that got there:
        # each at alpha/2 (Bonferroni), so the gate's false alarm rate stays alpha.
        kc, kb = (sum(math.isfinite(v) for v in x) for x in (c, b))
        p_share = fewer_successes_p(kc, len(c), kb, len(b)) if worse else fewer_successes_p(
            kb, len(b), kc, len(c))
        p = min(1.0, 2 * min(p, p_share))
        test = "min of exact Mann-Whitney and Fisher on the share reached, x2"
        alpha_each = alpha / 2
    else:
        alpha_each = alpha
    stats = f"{test} p={p:.3g}, {n}{note_share}"
    if p < alpha:
        return Judgement(mb, mc, change, REGRESSION if worse else IMPROVED, stats)
    if not can_reach(len(b), len(c), alpha_each):
        need = repeats_needed(alpha)
        why = (f"{n}: the exact test cannot reach p<{alpha:g} (p>={min_p(len(b), len(c)):.3g} at best); "
               f"needs >={need} repeats per side{note_share}")
        return Judgement(mb, mc, change, SUSPICIOUS if worse else OK,
                         why if worse else f"better beyond the threshold, unconfirmed: {why}")
    direction = "worse" if worse else "better"
    return Judgement(mb, mc, change, OK, f"{direction} beyond the threshold but not significant ({stats})")


def _share_of(values: list[float]) -> float:
    return sum(math.isfinite(v) for v in values) / len(values)
