"""The meter: the loop hands it the train loader and gets batches back.

The meter times the wait for each batch and the step that follows, decides which
steps fall inside the timed windows (after warm-up), and owns the clocks, the
memory sampler and the barriers. The loop holds no timing code. ``NullMeter`` is
the do-nothing variant.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import torch

from harness.measure import contention
from harness.measure.config import MeasureConfig
from harness.measure.listeners import NEVER, Ended, StepListener
from harness.measure.memory import MB, MemorySampler
from harness.measure.samples import pads, real_batch_size


def process_identity() -> dict:
    """Which OS process on which host measured: tells real ranks apart in per_rank."""
    # torchrun names each node's agent GROUP_RANK: on one host, two "nodes" differ only there.
    node = os.environ.get("GROUP_RANK")
    return {"pid": os.getpid(), "hostname": socket.gethostname(),
            "node_rank": int(node) if node and node.isdigit() else 0}


def sampler_for(cfg: MeasureConfig, device: torch.device) -> MemorySampler:
    """The memory sampler a run's meter and recorder share."""
    return MemorySampler(interval_s=cfg.rss_interval_ms / 1000.0, cuda_device=device if device.type == "cuda" else None)


@dataclass
class Window:
    """One timed window on this process."""

    data_wait_s: list[float] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)
    samples: int = 0
    tokens: int | None = None
    """Tokens of the window's real samples, when the meter counts them (a language model)."""
    wall_s: float = 0.0
    """Sum of the window's segments (a window spans epochs; evaluation is outside it)."""
    contention: contention.Tally | None = None
    """What other processes took of the run's CPUs over the same segments."""

    def as_dict(self) -> dict:
        out = {"steps": len(self.step_s), "samples": self.samples, "wall_s": self.wall_s,
               "data_wait_s": sum(self.data_wait_s)}
        if self.tokens is not None:
            out["tokens"] = self.tokens
        return out


class WindowHook(Protocol):
    """Told when a timed window's segment opens and closes (e.g. the compile tracker)."""

    def window_opened(self) -> None: ...

    def window_closed(self) -> None: ...


class Meter:
    def __init__(self, cfg: MeasureConfig, device: torch.device,
                 barrier: Callable[[], None] | None = None, hooks: Sequence[WindowHook] = (),
                 listeners: Sequence[StepListener] = (), memory: MemorySampler | None = None,
                 tokens: Callable[[object, int], int] | None = None):
        """``memory``: the sampler whose peaks the meter keeps per phase (the recorder reads the
        same one); None: a sampler of its own at ``cfg.rss_interval_ms``. ``tokens``: (batch,
        real samples) -> the tokens those samples hold (the task's ``units``), for a workload
        measured in tokens; None: samples alone."""
        self.cfg = cfg
        self.hooks = list(hooks)
        self.listeners = list(listeners)
        self.untimed: range = range(0)
        """Steps no window may time (the profiled ones): they split a window into segments."""
        self.cuda = device.type == "cuda"
        self.device = device
        self.barrier = barrier or (lambda: None)
        self.step = 0
        """Train steps seen by this process, warm-up included."""
        self.probe = contention.Probe()
        self.tokens = tokens
        self.windows = [Window(contention=contention.Tally(self.probe.capacity), tokens=0 if tokens else None)
                        for _ in range(cfg.repeats)]
        self._reading: contention.Reading | None = None
        self.memory = memory if memory is not None else sampler_for(cfg, device)
        self._events: list[tuple[int, torch.cuda.Event, torch.cuda.Event]] = []
        self._pending: tuple | None = None
        """(loader, batch, window, t0, t1, CUDA events) of the step under way, until it ends."""
        self._log: list[tuple[float, float, int]] = []
        """(wait, step time, real samples) of each step ended since the listeners were told."""
        self._log_k: int | None = None  # the logged steps' window: settled before the window changes
        self._log_end = 0.0
        self._before_at, self._after_at, self._after_s = NEVER, NEVER, math.inf
        """When a listener is next due (``_plan``): before step, after step, from the time."""

    def phase(self, name: str):
        """Context for a phase outside the train window ("eval", "checkpoint"): its own memory peaks."""
        return self.memory.phase(name)

    # -- the windows --------------------------------------------------------------

    def window_of(self, step: int) -> int | None:
        """Index of the window ``step`` falls in, or None (warm-up, or after the last)."""
        if step < self.cfg.warmup_steps or step in self.untimed:
            return None
        if self.cfg.window_steps is None:
            return 0
        k = (step - self.cfg.warmup_steps) // self.cfg.window_steps
        return k if k < self.cfg.repeats else None

    def _next_edge(self, step: int) -> int:
        """The first step after ``step`` whose window may differ from ``step``'s: the loop reads
        ``window_of`` only there (warm-up's end, a window's end, the untimed steps' edges)."""
        c = self.cfg
        edges = [c.warmup_steps, self.untimed.start, self.untimed.stop]
        if c.window_steps is not None and step >= c.warmup_steps:
            edges.append(c.warmup_steps + ((step - c.warmup_steps) // c.window_steps + 1) * c.window_steps)
        return min((e for e in edges if e > step), default=NEVER)

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def _open(self) -> float:
        # Every rank reaches the same step numbers (sharded loaders are evened out),
        # so the barrier lines the ranks up at the window's edge.
        self._sync()
        self.barrier()
        # Each segment of the window is the train phase; its peaks start here (host
        # and CUDA), so evaluation and checkpoints between segments stay out of them.
        self.memory.enter("train")
        for hook in self.hooks:
            hook.window_opened()
        self._reading = self.probe.read()
        return time.perf_counter()

    def _close(self, k: int, start: float, barrier: bool = True) -> None:
        self._sync()
        self.windows[k].wall_s += time.perf_counter() - start
        if self._reading is not None:
            self.windows[k].contention.add(self._reading, self.probe.read())
            self._reading = None
        self.memory.leave()
        for hook in self.hooks:
            hook.window_closed()
        if barrier:
            self.barrier()

    # -- the hook the loop calls --------------------------------------------------

    def steps(self, loader: Iterable, limit: int | None = None, micro_batches: int = 1) -> Iterator:
        """Yield up to ``limit`` batches of ``loader``, timing each wait and step.

        Clock reads at a segment's edges are preceded by a device sync, so queued
        GPU work lands inside the window; between them, per-step GPU time comes
        from CUDA events, which do not stall the host. A step ends when the loop asks
        for the next batch, or at ``end_step()`` when the loop leaves after it.

        ``micro_batches`` K > 1 (train.grad_accum_steps): a step is one optimizer step, and
        each item is a list of the next K batches (fewer at the loader's end), all fetched
        before the step: the wait is theirs together, the samples and tokens are theirs summed.
        """
        it = iter(loader)
        loader = pads(loader)  # what the sample counts need of it
        taken = 0
        open_k, start = None, 0.0
        ended = False
        k, edge = None, self.step  # the window is read at the first step, then at its edges
        t0 = None
        self._log_k = None  # the log is empty: the last pass settled it
        self._plan()
        try:
            while limit is None or taken < limit:
                step = self.step
                if step >= edge:
                    t0 = None
                    k = self.window_of(step)
                    if k != open_k:
                        self._settle()  # the steps logged so far are the closing window's
                        if open_k is not None:
                            self._close(open_k, start)
                        open_k = self._log_k = k
                        if k is not None:
                            start = self._open()
                    edge = self._next_edge(step)
                if step == self._before_at:
                    t0 = None
                    self._settle()
                    for listener in self.listeners:
                        listener.before_step(step)
                    self._plan()
                if t0 is None:
                    t0 = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    ended = True
                    return
                real = None
                if micro_batches > 1:
                    batch, real = _group(it, loader, batch, micro_batches)
                t1 = time.perf_counter()
                ev = None
                if k is not None and self.cuda:
                    ev = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                    ev[0].record()
                self._pending = (loader, batch, k, t0, t1, ev, real)
                yield batch
                # The step's end is the next fetch's start: one clock read for both, unless
                # listeners or the window's edge come between them.
                t0 = self._end() if self._pending is not None else None
                taken += 1
            ended = True
        finally:
            self._pending = None
            self._settle()  # every step that ended is told, the last ones' listeners included
            if open_k is not None:
                # The ranks meet at the window's edge only when the epoch ran out as
                # planned. A loop that stopped early (the guard, an error on this rank)
                # must not wait in a barrier the other ranks may never reach.
                self._close(open_k, start, barrier=ended)

    def end_step(self) -> None:
        """The step whose batch ``steps`` handed out last has ended: time it and log it.

        The loop calls this before it leaves (the guard's ``break``): leaving closes the
        generator at its ``yield``, which cannot tell a finished step from a failed one, so
        the step's time and its listeners (the profiler's step, the recorder's count) would
        be lost. Called again for the same step, it does nothing.
        """
        if self._pending is not None:
            self._end()

    def _end(self) -> float | None:
        """``end_step`` of a step under way; returns the clock reading it ended at, or None
        where listeners were told after it."""
        t2 = time.perf_counter()
        loader, batch, k, t0, t1, ev, real = self._pending
        self._pending = None
        # A group of micro-batches was counted as it was fetched.
        n = real_batch_size(loader, batch) if real is None else sum(real)
        if k is not None:
            if ev is not None:
                ev[1].record()
                self._events.append((k, *ev))
            if self.tokens is not None:
                # Of the real samples only: a distributed sampler's padding is never throughput.
                parts = [(batch, n)] if real is None else zip(batch, real)
                self.windows[k].tokens += sum(self.tokens(b, m) for b, m in parts)
        self._log.append((t1 - t0, t2 - t1, n))
        self._log_end = t2
        self.step += 1
        if self.step > self._after_at or t2 >= self._after_s:
            self._settle()
            return None  # the listeners' time is no step's: the next wait starts after it
        return t2

    def _settle(self) -> None:
        """The logged steps to their window (when timed) and to every listener."""
        if not self._log:
            return
        waits, times, counts = zip(*self._log)
        self._log = []
        if self._log_k is not None:
            w = self.windows[self._log_k]
            w.data_wait_s += waits
            w.step_s += times
            w.samples += sum(counts)
        ended = Ended(self.step - 1, waits, times, counts, self._log_end)
        for listener in self.listeners:
            listener.steps_ended(ended)
        self._plan()

    def _plan(self) -> None:
        """When a listener is next due, asked from the next step on (``StepListener.due``)."""
        step = self.step
        before, after, after_s = NEVER, NEVER, math.inf
        for listener in self.listeners:
            b, a, t = listener.due(step)
            if step <= b < before:  # a step already passed is never reached again
                before = b
            if a < after:
                after = a
            if t < after_s:
                after_s = t
        self._before_at, self._after_at, self._after_s = before, after, after_s

    # -- results ------------------------------------------------------------------

    def step_times_s(self) -> list[float]:
        """Per-step times of every window: CUDA event time on a GPU, host time on the CPU."""
        if self.cuda and self._events:
            self._sync()
            return [s.elapsed_time(e) / 1000.0 for _, s, e in self._events]
        return [t for w in self.windows for t in w.step_s]

    def memory_figures(self) -> dict:
        """The train window's peaks at the top level (as before phases), and every phase's."""
        self.memory.stop()
        phases = self.memory.summary()
        train = phases.get("train") or {}
        base = self.memory.baseline
        stats = torch.cuda.memory_stats(self.device) if self.cuda else {}
        return {
            "peak_rss_mb": train.get("peak_rss_mb"),
            "peak_pss_mb": train.get("peak_pss_mb"),
            "peak_uss_mb": train.get("peak_uss_mb"),
            "baseline_rss_mb": base.rss / MB if base else None,
            "baseline_pss_mb": base.pss / MB if base and base.pss else None,
            "device_peak_allocated_mb": train.get("device_peak_allocated_mb"),
            "device_peak_reserved_mb": train.get("device_peak_reserved_mb"),
            "alloc_retries": int(stats.get("num_alloc_retries", 0)) if self.cuda else None,
            "phases": phases,
        }

    def summary(self) -> dict:
        """This process's figures; ``aggregate`` combines the ranks'."""
        steps = self.step_times_s()
        waits = [t for w in self.windows for t in w.data_wait_s]
        measured = [w for w in self.windows if w.step_s]
        return {
            **process_identity(),
            "warmup_steps": self.cfg.warmup_steps,
            "counts_tokens": self.tokens is not None,
            "windows": [w.as_dict() for w in measured],
            "step_times_ms": [s * 1000 for s in steps],
            "data_wait_ms": [s * 1000 for s in waits],
            **self.contention_figures(measured),
            **self.memory_figures(),
        }

    def contention_figures(self, measured: list[Window]) -> dict:
        """Each window's contention block and the block of all windows together (the
        conditions of the throughput figure, which is every window's samples over their time)."""
        if not measured:
            return {"contention": None, "window_contention": []}
        total = contention.Tally(self.probe.capacity)
        for w in measured:
            total.merge(w.contention)
        return {"contention": total.block(), "window_contention": [w.contention.block() for w in measured]}


def _group(it: Iterator, loader, first, size: int) -> tuple[list, list[int]]:
    """``first`` and up to ``size - 1`` more batches of ``it``, with each one's real samples,
    read as it is fetched: a prepared loader knows its end only while the last batch is out."""
    group, real = [first], [real_batch_size(loader, first)]
    for batch in itertools.islice(it, size - 1):
        group.append(batch)
        real.append(real_batch_size(loader, batch))
    return group, real


class NullMeter(Meter):
    """Measures nothing: the loop runs exactly as without a meter."""

    def steps(self, loader: Iterable, limit: int | None = None, micro_batches: int = 1) -> Iterator:
        it = iter(loader)
        for taken, batch in enumerate(it):
            if limit is not None and taken >= limit:
                return
            yield batch if micro_batches == 1 else _group(it, pads(loader), batch, micro_batches)[0]
            self.step += 1

    def phase(self, name: str):
        from contextlib import nullcontext

        return nullcontext()

    def summary(self) -> dict:
        return {**process_identity(), "warmup_steps": 0, "windows": [], "step_times_ms": [], "data_wait_ms": [],
                "contention": None, "window_contention": [],
                **self.memory_figures()}
