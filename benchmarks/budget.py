"""A benchmark's own time budget: fewer rounds when rounds are slow, a stop once the answer is known.

On a busy machine a round can take five times as long as on an idle one; a fixed
round count then runs into pytest's timeout and the suite fails without a figure.
Each benchmark instead gets a budget in seconds (``HARNESS_BENCH_BUDGET_SCALE``
multiplies every budget), runs rounds while the next one fits, stops early once the
95% interval of the median is narrow enough, and records in ``extra_info`` how many
rounds it managed and why it stopped.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from harness.measure.contention import CONTENDED_AT
from harness.measure.stats import median_ci


@dataclass
class Budget:
    seconds: float
    """Wall time the benchmark may take, setup included."""
    min_rounds: int = 3
    max_rounds: int = 61
    narrow: float | None = None
    """Stop when the 95% interval of the median is within +-this fraction of it."""
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        self.seconds *= float(os.environ.get("HARNESS_BENCH_BUDGET_SCALE", "1"))

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.started)

    def rounds_for(self, round_s: float) -> int:
        """How many rounds of ``round_s`` seconds fit in what is left (at least one)."""
        return max(1, min(self.max_rounds, int(self.left() // max(round_s, 1e-9))))

    def stop_reason(self, values: list[float], round_s: float) -> str | None:
        """Why to stop before another round of ``round_s`` seconds, or None to go on."""
        n = len(values)
        if n >= self.max_rounds:
            return "max_rounds"
        if self.left() < round_s:
            return "budget"
        if self.narrow is not None and n >= self.min_rounds:
            ci = median_ci(values)
            if ci["ci_level"] >= 0.95 and ci["median"] and \
                    (ci["ci_high"] - ci["ci_low"]) / 2 <= self.narrow * abs(ci["median"]):
                return "interval narrow"
        return None

    def record(self, info: dict, rounds: int, reason: str) -> None:
        info["rounds"] = rounds
        info["stopped_because"] = reason
        info["budget_s"] = round(self.seconds, 1)
        info["spent_s"] = round(time.perf_counter() - self.started, 1)


def interleaved(benchmark, budget: Budget, side_a, side_b, probe=None) -> list[tuple]:
    """Rounds of ``side_a(k)`` and ``side_b(k)`` back to back, alternating which goes first
    (a drift of the machine then falls on both sides alike), until ``budget`` says stop.

    Each side returns a tuple whose first item is its samples/s; the stop rule watches
    the per-round ratio a/b. One pytest-benchmark round holds them all: its count cannot
    change once started, and the figure is that ratio in ``extra_info``, not
    pytest-benchmark's own time. Returns the rounds as ``(a, b)`` pairs.

    A round during which other processes took the CPUs (harness/measure/contention.py,
    verdict ``contended``) is dropped: its ratio says how the machine's load fell on the
    two sides, not what the harness costs. ``extra_info`` counts them; ``not_measured``
    turns too few rounds left into the benchmark's answer. ``probe``: a factory of
    contention probes (tests give a fake).
    """
    from harness.measure.contention import Window

    rounds: list[tuple] = []
    foreign: list[float | None] = []

    def all_rounds():
        slowest = 0.0
        while True:
            t0 = time.perf_counter()
            k = len(foreign)
            with Window(probe() if probe else None) as window:
                if k % 2:
                    a, b = side_a(k), side_b(k)
                else:
                    b = side_b(k)
                    a = side_a(k)
            block = window.block()
            foreign.append(block["foreign_cpu_fraction"])
            if block["verdict"] != "contended":
                rounds.append((a, b))
            slowest = max(slowest, time.perf_counter() - t0)
            if len(foreign) >= budget.max_rounds:
                return "max_rounds"
            reason = budget.stop_reason([x[0] / y[0] for x, y in rounds], slowest)
            if reason:
                return reason

    stopped = benchmark.pedantic(all_rounds, rounds=1, iterations=1)
    budget.record(benchmark.extra_info, len(foreign), stopped)
    benchmark.extra_info["round_foreign_cpu_fraction"] = foreign
    benchmark.extra_info["dropped_contended"] = len(foreign) - len(rounds)
    return rounds


def not_measured(info: dict, ci_level: float) -> str | None:
    """The benchmark's answer when too few rounds are left for a 95% interval, or None.

    Contended rounds dropped: "not measured: contended", never a ratio from what is left.
    """
    if ci_level is not None and ci_level >= 0.95:
        return None
    dropped = info.get("dropped_contended", 0)
    if dropped:
        return (f"not measured: contended ({dropped} of {info['rounds']} rounds had other processes "
                f"take >= {CONTENDED_AT:.0%} of the CPUs; too few quiet rounds left for a 95% interval)")
    return (f"{info['rounds']} round(s) in {info['budget_s']:.0f} s: too few to judge the goal "
            "(HARNESS_BENCH_BUDGET_SCALE gives more time)")
