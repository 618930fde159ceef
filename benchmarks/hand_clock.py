"""The clock of the hand-written loops (plain_loop.py, plain_lm_loop.py): what the harness's window reads.

The loops themselves stay hand-written; only their timing is shared, so both yardsticks
time alike. As the harness's meter: the window opens at the end of warm-up, and each
epoch's segment opens before its first batch is fetched (after the iterator exists) and
closes after its last step; data loading is inside, evaluation outside. Each measured
step records its wait for the batch and its time from the batch in hand to the
scheduler's step.
"""

from __future__ import annotations

import time


class StepClock:
    def __init__(self, warmup_steps: int):
        self.warmup_steps = warmup_steps
        self.steps = 0
        self.counted = 0
        """Samples (or tokens) of the measured steps, as the loop counts them."""
        self.window_s = 0.0
        self.wait_ms: list[float] = []
        self.step_ms: list[float] = []
        self._opened: float | None = None
        self._asked = self._got = 0.0

    def open(self) -> None:
        """An epoch's iterator exists: its segment opens now, once warm-up is over."""
        self._opened = time.perf_counter() if self.steps >= self.warmup_steps else None

    def fetching(self) -> None:
        self._asked = time.perf_counter()

    def fetched(self) -> None:
        self._got = time.perf_counter()

    def stepped(self, count: int) -> None:
        """After the scheduler's step: ``count`` samples or tokens, counted once warm-up is over."""
        if self._opened is not None:
            self.counted += count
            self.wait_ms.append((self._got - self._asked) * 1000.0)
            self.step_ms.append((time.perf_counter() - self._got) * 1000.0)
        self.steps += 1
        if self.steps == self.warmup_steps:
            self._opened = time.perf_counter()

    def close(self) -> None:
        """After an epoch's last step (or the run's): its segment joins the window."""
        if self._opened is not None:
            self.window_s += time.perf_counter() - self._opened
            self._opened = None

    @property
    def measured_steps(self) -> int:
        return self.steps - self.warmup_steps

    @property
    def per_s(self) -> float:
        return self.counted / self.window_s
