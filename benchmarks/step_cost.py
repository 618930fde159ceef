"""The harness's host cost per optimizer step: its real loop against a hand loop.

The model is next to nothing (``Linear(4, 2)`` on 8 samples) and the batches already sit
on the device, so a step is almost only host work: what the harness adds to it is what
each side's time differs by. Both sides run the same model, optimizer (SGD with momentum)
and schedule (cosine) from the same seed, and take their batches from the same list.

The harness side is ``harness/run/loop.py``'s ``train_epoch`` through a prepared
``Accelerator`` with the real meter (``Meter``, every step timed), guard (``StepGuard``)
and recorder (``Recorder``, metrics.jsonl every 10 steps), the meter's step listeners
being those of ``harness run`` (runner.py, fit.py): the recorder, the setup clock and the
progress lines (``StepLines``, what a run whose stderr is not a terminal shows). Where
its time goes is measured by removing one part at a time (``VARIANTS``): each variant's
cost is the full side's time minus the variant's. Accelerate's wrappers are no part to
remove: where nothing needs their logic the loop calls torch around them (passthrough.py),
so their variant adds them back, and its figure is the variant's time minus the full
side's (``ADDED``). What the loop does with each step's loss cannot be removed from it; it
is timed on its own, both ways (``loss_handling_us``).

A figure is a marginal cost per step: each side runs an epoch of ``WARM_STEPS`` (first-step
costs: the optimizer's state), then one of ``STEPS`` and one of ``2 * STEPS`` on the same
objects, and the figure is their difference over ``STEPS``. What an epoch costs once (the
meter's memory readings at the timed window's edges, ~10 ms of smaps_rollup on a torch
process) cancels: it is no cost per step.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path
from unittest import mock

import torch
from torch import nn
from torch.nn import functional as F

STEPS = 1000
"""The step count that one side's figure is the marginal cost of (see ``_marginal``)."""

WARM_STEPS = 10

VARIANTS = ("full", "wrapped calls", "no meter", "no guard", "no recorder")
"""The harness side as the loop runs it; then with every call through Accelerate's wrappers
(``AcceleratedOptimizer.zero_grad`` and ``step``, ``Accelerator.backward``,
``optimizer_step_was_skipped``, ``AcceleratedScheduler.step``: what ``StepCalls`` calls
where their logic is needed); then with one part removed: the meter (``NullMeter``), the guard (one that
never stops) and the recorder (none)."""

ADDED = frozenset({"wrapped calls"})
"""Variants that add work to the full side instead of removing a part: their figure is the
variant's time minus the full side's, what the loop would cost if it made those calls."""


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)


def _recipe(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10 * STEPS)
    return model, opt, sched


def _marginal(epoch) -> tuple[float, float]:
    """µs per step of ``epoch(n)`` (which runs n steps) beyond what an epoch costs once:
    wall time, and the CPU time of the thread that trains (time.thread_time: what the
    step itself runs, without the waits for a CPU that other processes hold, and without
    the harness's background threads, the memory sampler and the recorder's writer)."""
    epoch(WARM_STEPS)
    t0, c0 = time.perf_counter(), time.thread_time()
    epoch(STEPS)
    t1, c1 = time.perf_counter(), time.thread_time()
    epoch(2 * STEPS)
    t2, c2 = time.perf_counter(), time.thread_time()
    return ((t2 - t1) - (t1 - t0)) / STEPS * 1e6, ((c2 - c1) - (c1 - c0)) / STEPS * 1e6


def hand_side() -> tuple[tuple[float, float], torch.Tensor]:
    """µs per step of the hand loop (wall, thread CPU), and the weights it ends with."""
    model, opt, sched = _recipe()
    batch = _data()
    model.train()

    def epoch(n: int) -> None:
        for x, y in [batch] * n:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sched.step()

    return _marginal(epoch), model.weight.detach().clone()


class _NoGuard:
    def after_step(self, loss):
        return None

    def check(self):
        return None


def harness_side(variant: str, folder: Path) -> tuple[tuple[float, float], torch.Tensor]:
    """µs per step of ``train_epoch`` as ``variant`` runs it (wall, thread CPU), and the weights it ends with."""
    from benchmarks.conftest import reset_accelerate
    from harness.measure.config import MeasureConfig
    from harness.measure.listeners import FirstStep
    from harness.measure.meter import Meter, NullMeter
    from harness.measure.startup import SetupClock
    from harness.observe.progress import StepLines
    from harness.observe.recorder import Recorder
    from harness.observe.tracking import TrackingConfig
    from harness.run.accel import RuntimeConfig, build_accelerator
    from harness.run.guard import StepGuard, StopSignals
    from harness.run.loop import TrainParts, train_epoch

    reset_accelerate()
    acc, _ = build_accelerator(RuntimeConfig(device="cpu"))
    model, opt, sched = _recipe()
    model, opt, sched = acc.prepare(model, opt, sched)
    parts = TrainParts(acc, model, opt, sched, nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="none"))
    cfg = MeasureConfig(warmup_steps=0, count_flops=False, measure_peak=False)
    meter = (NullMeter if variant == "no meter" else Meter)(cfg, acc.device)
    guard = _NoGuard() if variant == "no guard" else StepGuard(acc, StopSignals())
    recorder = None
    if variant != "no recorder":
        folder.mkdir(parents=True, exist_ok=True)
        recorder = Recorder(acc, opt, folder, TrackingConfig(), 0, 0, False, memory=meter.memory)
    # The listeners a run's meter has, in its order: the recorder, the setup clock, the progress lines.
    shown = StepLines("bench", 1, acc.num_processes, recorder, interval_s=10.0, out=io.StringIO())
    meter.listeners += [recorder] if recorder is not None else []
    meter.listeners += [FirstStep(SetupClock()), shown]
    batch = _data()

    def epoch(n: int) -> None:
        shown.epoch_started(1, n)
        result = train_epoch(parts, [batch] * n, meter, guard, recorder=recorder)
        assert result.steps == n and result.stop is None, result

    # The loop builds its StepCalls each epoch: told here that the wrappers' logic is needed.
    wrapped = mock.patch("harness.run.passthrough._direct", return_value=False) \
        if variant == "wrapped calls" else contextlib.nullcontext()
    try:
        with wrapped:
            us = _marginal(epoch)
    finally:
        meter.memory.stop()
        if recorder is not None:
            recorder._lines.put_now(None)
            recorder._writer.join()
            recorder.stream.close()
    return us, acc.unwrap_model(model).weight.detach().clone()


def loss_handling_us(folder: Path) -> dict[str, float]:
    """µs per step (training-thread CPU, best of 5 runs of ``STEPS`` steps) of what the loop
    does with a step's loss, through the real recorder and guard: its own sum,
    ``Recorder.add_loss``, the recorder told of the steps at each interval's end (as the meter
    tells it) with its interval line every 10 steps, and ``StepGuard.after_step`` with its
    check every 10. "host": the CPU's path
    (``loop.losses_on_host``: the loss read as a float); "device": an accelerator's (the
    loss kept on the device: a detach, two in-place adds, the guard's stacked check and the
    recorder's host read once an interval), here on CPU tensors."""
    import math

    from harness.measure.listeners import Ended
    from harness.observe.recorder import Recorder
    from harness.observe.tracking import TrackingConfig
    from harness.run.accel import RuntimeConfig, build_accelerator
    from harness.run.guard import StepGuard, StopSignals

    acc, _ = build_accelerator(RuntimeConfig(device="cpu"))
    model, opt, _ = _recipe()
    x, y = _data()
    loss, n = F.cross_entropy(model(x), y), 8
    out = {}
    for path in ("host", "device"):
        folder.mkdir(parents=True, exist_ok=True)
        recorder = Recorder(acc, opt, folder / path, TrackingConfig(), 0, 0, False)
        guard = StepGuard(acc, StopSignals())
        every = recorder.cfg.every_n_steps
        interval = Ended(every - 1, (1e-4,) * every, (2e-4,) * every, (n,) * every, 0.0)

        def steps() -> None:
            total = 0.0 if path == "host" else torch.zeros(())
            for step in range(STEPS):
                if path == "host":
                    value = loss.item()
                    total += value * n
                else:
                    value = loss.detach()
                    total.add_(value, alpha=n)
                recorder.add_loss(value, n)
                if (step + 1) % every == 0:
                    recorder.steps_ended(interval)
                guard.after_step(value)

        best = math.inf
        try:
            for _ in range(5):
                c0 = time.thread_time()
                steps()
                best = min(best, time.thread_time() - c0)
        finally:
            recorder.finish({"status": "completed"})
        out[path] = best / STEPS * 1e6
    return out
