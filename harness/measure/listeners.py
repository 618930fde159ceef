"""What the meter tells its step listeners (the recorder, the progress lines, the profiler,
the setup clock), and when: only at the steps each asks for.

On a near-zero model a train step is a few hundred microseconds of host work, and a call to
each listener at each step was a large share of what the harness added to it (issue 29;
benchmarks/step_counts.py counts it). So the meter logs each step and tells the listeners
of the logged steps together when one of them is due. Imports nothing heavy: progress.py
builds on it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Protocol, Sequence

NEVER = sys.maxsize
"""A step number no train pass reaches: a listener's ``due`` for "not before any step"."""


@dataclass
class Ended:
    """Train steps that ended since the listeners were last told, in order."""

    step: int
    """The last one's number (this process's steps, warm-up included)."""
    wait_s: Sequence[float]
    """Each one's wait for its batch."""
    step_s: Sequence[float]
    """Each one's time from its batch to its end (host time)."""
    samples: Sequence[int]
    """Each one's real samples (not the padding; meter.real_batch_size)."""
    now: float
    """``time.perf_counter()`` when the last one ended."""


class StepListener(Protocol):
    """Told about the train steps, timed window or not (the recorder, the progress lines, the
    profiler, the setup clock), at the steps it asks for with ``due``. The meter logs each
    step and tells every listener at once when one of them is due (and at a window's edge,
    and when the pass ends), so a step no listener waits for costs the meter one append and
    two comparisons instead of calls to each listener. A listener must therefore take any
    number of ended steps at a time."""

    def due(self, step: int) -> tuple[int, int, float]:
        """Asked before the pass's first step and after each telling, ``step`` being the next
        step's number: (the step before whose batch ``before_step`` is due, the step after
        whose end ``steps_ended`` is due, the ``time.perf_counter()`` from which any step's end
        makes it due). ``NEVER`` and ``math.inf``: not due."""
        ...

    def before_step(self, step: int) -> None:
        """Step ``step`` is about to fetch its batch (called on every listener when one is due)."""
        ...

    def steps_ended(self, ended: Ended) -> None: ...


class FirstStep:
    """A listener told only before the first step, where it wraps one told before every step
    that uses only the first (the setup clock, which marks when training began)."""

    def __init__(self, listener):
        self.listener, self.told = listener, False

    def due(self, step: int) -> tuple[int, int, float]:
        return (NEVER if self.told else step), NEVER, math.inf

    def before_step(self, step: int) -> None:
        if not self.told:
            self.told = True
            self.listener.before_step(step)

    def steps_ended(self, ended: Ended) -> None:
        pass
