"""The meter: the loop hands it the train loader and gets batches back.

The meter times the wait for each batch and the step that follows, decides which
steps fall inside the timed window (after warm-up), and owns the clocks. The loop
itself holds no timing code. ``NullMeter`` is the do-nothing variant.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch

from harness.measure.config import MeasureConfig
from harness.measure.memory import MB, RssSampler
from harness.measure.stats import distribution


def batch_size_of(batch) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    return int(first.shape[0]) if hasattr(first, "shape") else len(first)


@dataclass
class Window:
    """What happened inside the timed window on this process."""

    data_wait_s: list[float] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)
    samples: int = 0
    wall_s: float = 0.0
    """Sum of the window's segments (one per epoch); evaluation falls outside it."""


class Meter:
    def __init__(self, cfg: MeasureConfig, device: torch.device):
        self.cfg = cfg
        self.cuda = device.type == "cuda"
        self.device = device
        self.step = 0
        """Train steps seen by this process, warm-up included."""
        self.window = Window()
        self.rss = RssSampler()
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    # -- the window ---------------------------------------------------------------

    def in_window(self, step: int) -> bool:
        end = None if self.cfg.window_steps is None else self.cfg.warmup_steps + self.cfg.window_steps
        return step >= self.cfg.warmup_steps and (end is None or step < end)

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    # -- the hook the loop calls --------------------------------------------------

    def steps(self, loader: Iterable, limit: int | None = None) -> Iterator:
        """Yield up to ``limit`` batches of ``loader``, timing each wait and step.

        Clock reads at a segment's edges are preceded by a device sync, so queued
        GPU work is inside the window; between them, per-step GPU time comes
        from CUDA events, which do not stall the host.
        """
        it = iter(loader)
        taken = 0
        segment_start = None
        try:
            while limit is None or taken < limit:
                t0 = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    return
                t1 = time.perf_counter()
                timed = self.in_window(self.step)
                if timed and segment_start is None:
                    self._sync()
                    segment_start = t0
                    self.rss.start()
                if timed and self.cuda:
                    start_ev, end_ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start_ev.record()
                yield batch
                if timed:
                    if self.cuda:
                        end_ev.record()
                        self._events.append((start_ev, end_ev))
                    self.window.data_wait_s.append(t1 - t0)
                    self.window.step_s.append(time.perf_counter() - t1)
                    self.window.samples += batch_size_of(batch)
                elif segment_start is not None:
                    segment_start = self._close_segment(segment_start)
                self.step += 1
                taken += 1
        finally:
            if segment_start is not None:
                self._close_segment(segment_start)

    def _close_segment(self, start: float) -> None:
        self._sync()
        self.window.wall_s += time.perf_counter() - start
        return None

    # -- results ------------------------------------------------------------------

    def step_times_s(self) -> list[float]:
        if self.cuda and self._events:
            self._sync()
            return [s.elapsed_time(e) / 1000.0 for s, e in self._events]
        return list(self.window.step_s)

    def summary(self) -> dict:
        self.rss.stop()
        w = self.window
        steps = self.step_times_s()
        wait_total = sum(w.data_wait_s)
        return {
            "warmup_steps": self.cfg.warmup_steps,
            "measured_steps": len(w.step_s),
            "window_s": w.wall_s,
            "samples": w.samples,
            "samples_per_s": (w.samples / w.wall_s) if w.wall_s > 0 else None,
            "step_time_ms": distribution([s * 1000 for s in steps]),
            "step_times_ms": [s * 1000 for s in steps],
            "data_wait_ms": distribution([s * 1000 for s in w.data_wait_s]),
            "data_wait_fraction": (wait_total / w.wall_s) if w.wall_s > 0 else None,
            "peak_rss_mb": self.rss.peak_bytes / MB if self.rss.peak_bytes else None,
        }


class NullMeter(Meter):
    """Measures nothing: the loop runs exactly as without a meter."""

    def steps(self, loader: Iterable, limit: int | None = None) -> Iterator:
        for taken, batch in enumerate(loader):
            if limit is not None and taken >= limit:
                return
            yield batch
            self.step += 1

    def summary(self) -> dict:
        return {}
