"""The loop's direct calls (run/passthrough.py) and the guard's batched loss check (run/guard.py)."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch
from torch import nn

from benchmarks.step_counts import OpCount
from harness.run.accel import RuntimeConfig, build_accelerator
from harness.run.guard import CHECK_EVERY, StepGuard, StopSignals
from harness.run.passthrough import StepCalls

pytestmark = pytest.mark.usefixtures("one_thread")


def _prepared(acc, schedule: str = "cosine"):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7) if schedule == "cosine" else
             torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=5))
    return acc.prepare(model, opt, sched)


def _train(calls: StepCalls, model, steps: int) -> list[float]:
    g = torch.Generator().manual_seed(1)
    lrs = []
    for _ in range(steps):
        x, y = torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)
        calls.zero_grad()
        calls.backward(nn.functional.cross_entropy(model(x), y))
        assert calls.update() is False  # no scaler: no step skipped
        lrs.append(calls._opt.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_direct_calls_train_exactly_as_the_wrappers_do(schedule):
    """Without a scaler or accumulation the loop calls torch; weights and learning rates are
    bit for bit those of Accelerate's wrappers (OneCycle past its total steps included)."""
    results = []
    for direct in (True, False):
        acc, _ = build_accelerator(RuntimeConfig(device="cpu"))
        model, opt, sched = _prepared(acc, schedule)
        calls = StepCalls(acc, opt, sched)
        assert calls.direct
        if not direct:  # told of accumulation it keeps the wrappers: the loop's calls before
            calls = StepCalls(acc, opt, sched, grad_accum_steps=2)
            assert not calls.direct
        lrs = _train(calls, model, 9)
        results.append((model.weight.detach().clone(), lrs, sched.scheduler._step_count))
    (w1, lr1, n1), (w2, lr2, n2) = results
    assert torch.equal(w1, w2) and lr1 == lr2 and n1 == n2


def test_direct_zero_grad_is_torchs_own_and_follows_sync_gradients():
    """The direct loop's zero_grad is torch's call itself; with sync_gradients unset (as inside
    an accumulation group) the direct calls zero, step and schedule nothing, as the wrappers."""
    acc, _ = build_accelerator(RuntimeConfig(device="cpu"))
    model, opt, sched = _prepared(acc)
    assert StepCalls(acc, opt, sched).zero_grad == opt.optimizer.zero_grad
    results = []
    for direct in (True, False):
        acc, _ = build_accelerator(RuntimeConfig(device="cpu"))
        model, opt, sched = _prepared(acc)
        opt.gradient_state._set_sync_gradients(False)
        try:
            calls = StepCalls(acc, opt, sched, grad_accum_steps=1 if direct else 2)
            assert calls.direct == direct
            _train(calls, model, 3)
        finally:
            opt.gradient_state._set_sync_gradients(True)
        results.append((model.weight.detach().clone(), model.weight.grad.clone(), sched.scheduler._step_count))
    (w1, g1, n1), (w2, g2, n2) = results
    assert torch.equal(w1, w2) and torch.equal(g1, g2) and n1 == n2


def test_accumulation_keeps_the_wrappers():
    acc, _ = build_accelerator(RuntimeConfig(device="cpu"), grad_accum_steps=3)
    model, opt, sched = _prepared(acc)
    stepped = []
    opt.step = lambda: stepped.append("optimizer")  # the wrappers themselves, in order
    sched.step = lambda: stepped.append("scheduler")
    calls = StepCalls(acc, opt, sched, grad_accum_steps=3)
    assert not calls.direct and calls.backward == acc.backward
    calls.update()
    assert stepped == ["optimizer", "scheduler"]


def test_guard_finds_the_first_bad_loss_among_those_kept():
    acc, _ = build_accelerator(RuntimeConfig(device="cpu"))
    guard = StepGuard(acc, StopSignals(), on_nonfinite="record")
    bad = {13: math.inf, 17: math.nan, 26: -math.inf}
    verdicts = [guard.after_step(torch.tensor(bad.get(step, 0.5), requires_grad=True) * 1)
                for step in range(1, 29)]
    assert verdicts == [None] * 28  # "record": counted, never a stop
    assert guard._losses and len(guard._losses) == 28 % CHECK_EVERY  # the last ones not folded yet
    assert guard.record() == {"nonfinite_loss_steps": 3, "first_nonfinite_step": 13}
    assert not guard._losses


def test_guard_stops_at_its_check_with_the_first_bad_step_and_value():
    acc, _ = build_accelerator(RuntimeConfig(device="cpu"))
    guard = StepGuard(acc, StopSignals())
    guard.step = 100  # a resumed run: step numbers go on from its checkpoint
    losses = [0.5, 0.4, 7.0, math.inf, 0.3, math.nan, 0.2, 0.1, 0.1, 0.1]
    verdicts = [guard.after_step(torch.tensor(v)) for v in losses]
    assert verdicts[:-1] == [None] * 9
    stop = verdicts[-1]
    assert stop.reason == "diverged" and stop.step == 104 and stop.loss == math.inf


# -- the CPU's host path for each step's loss (loop.losses_on_host) ----------------------


@pytest.mark.parametrize("as_float", [False, True])
def test_guard_keeps_the_same_record_from_floats_and_from_tensors(as_float):
    """The CPU loop hands the guard floats: the same verdicts and record as tensors, with no op."""
    acc, _ = build_accelerator(RuntimeConfig(device="cpu"))
    values = {13: math.inf, 17: math.nan, 26: -math.inf}
    losses = [values.get(step, 0.5) for step in range(1, 29)]
    recording = StepGuard(acc, StopSignals(), on_nonfinite="record")
    with OpCount() as ops:
        verdicts = [recording.after_step(v if as_float else torch.tensor(v)) for v in losses]
        record = recording.record()
    assert verdicts == [None] * 28
    assert record == {"nonfinite_loss_steps": 3, "first_nonfinite_step": 13}
    assert (ops.n == 0) if as_float else ops.n > 0

    stopping = StepGuard(acc, StopSignals())
    stopping.step = 100
    losses = [0.5, 0.4, 7.0, math.inf, 0.3, math.nan, 0.2, 0.1, 0.1, 0.1]
    verdicts = [stopping.after_step(v if as_float else torch.tensor(v)) for v in losses]
    assert verdicts[:-1] == [None] * 9
    stop = verdicts[-1]
    assert stop.reason == "diverged" and stop.step == 104 and stop.loss == math.inf
    assert stopping.record() == {"nonfinite_loss_steps": 2, "first_nonfinite_step": 104}


def test_guard_given_floats_and_tensors_keeps_one_record():
    acc, _ = build_accelerator(RuntimeConfig(device="cpu"))
    guard = StepGuard(acc, StopSignals(), on_nonfinite="record")
    for step in range(1, 31):
        bad = step in (7, 12, 25)
        value = math.nan if bad else 0.5
        guard.after_step(torch.tensor(value) if step > 10 else value)  # floats first, then tensors
    assert guard.record() == {"nonfinite_loss_steps": 3, "first_nonfinite_step": 7}
    late = StepGuard(acc, StopSignals())
    verdicts = [late.after_step(torch.tensor(math.inf) if s == 3 else (math.nan if s == 5 else 0.5))
                for s in range(1, 11)]
    assert verdicts[-1].step == 3 and verdicts[-1].loss == math.inf  # the tensor's step came first


def test_recorder_sums_float_losses_on_the_host(tmp_path):
    from harness.measure.listeners import Ended
    from harness.observe.recorder import Recorder
    from harness.observe.tracking import TrackingConfig

    acc, _ = build_accelerator(RuntimeConfig(device="cpu"))
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    recorder = Recorder(acc, opt, tmp_path, TrackingConfig(every_n_steps=4), 0, 0, False)
    losses = [0.25, 0.5, 1.0, 2.0, 0.125, 0.375, 0.5, 1.5]
    with OpCount() as ops:
        for i, value in enumerate(losses):
            recorder.add_loss(value, 8 if i % 2 else 4)
            recorder.steps_ended(Ended(i, (0.001,), (0.002,), (8 if i % 2 else 4,), 0.0))
    assert ops.n == 0
    recorder.finish({"status": "completed"})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    means = [r["train_loss"] for r in rows if r["kind"] == "interval"]
    assert means == [(0.25 * 4 + 0.5 * 8 + 1.0 * 4 + 2.0 * 8) / 24, (0.125 * 4 + 0.375 * 8 + 0.5 * 4 + 1.5 * 8) / 24]


def test_rss_reader_reads_what_psutil_reads():
    import psutil

    from harness.observe.recorder import RssReader

    read = RssReader()
    before, ours, after = psutil.Process().memory_info().rss, read(), psutil.Process().memory_info().rss
    assert min(before, after) - 2**20 <= ours <= max(before, after) + 2**20


def _epoch_figures(tmp_path, on_host: bool, monkeypatch) -> tuple:
    """25 steps of train_epoch on the CPU through the host path or the device path: the
    loss sum, the per-step losses (metrics.jsonl every step), the guard's record, the weights."""
    from harness.measure.config import MeasureConfig
    from harness.measure.meter import Meter
    from harness.observe.recorder import Recorder
    from harness.observe.tracking import TrackingConfig
    from harness.run import loop

    monkeypatch.setattr(loop, "losses_on_host", lambda device: on_host)
    acc, _ = build_accelerator(RuntimeConfig(device="cpu"))
    model, opt, sched = _prepared(acc)
    parts = loop.TrainParts(acc, model, opt, sched, nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="none"))
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(6 if i % 3 else 8, 4, generator=g), torch.randint(0, 2, (6 if i % 3 else 8,), generator=g))
               for i in range(25)]
    folder = tmp_path / ("host" if on_host else "device")
    folder.mkdir()
    recorder = Recorder(acc, opt, folder, TrackingConfig(every_n_steps=1), 0, 0, False)
    meter = Meter(MeasureConfig(warmup_steps=0, count_flops=False, measure_peak=False), acc.device,
                  listeners=[recorder], memory=None)
    guard = StepGuard(acc, StopSignals(), on_nonfinite="record")
    first = loop.train_epoch(parts, batches, meter, guard, max_steps=11, recorder=recorder)
    result = loop.train_epoch(parts, batches[11:], meter, guard, carry=first, recorder=recorder)
    meter.memory.stop()
    recorder.finish({"status": "completed"})
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in rows if r["kind"] == "interval"]
    return result, losses, guard.record(), model.weight.detach().clone()


def test_the_cpu_host_path_gives_the_device_paths_figures(tmp_path, monkeypatch):
    """Same weights bit for bit, same per-step losses, same guard record; the epoch's loss sum
    equal to float32 rounding (the host sums in double, the device in float32), and exactly
    the double-precision sum of the per-step losses, across a carried (resumed) epoch."""
    host, host_losses, host_record, host_w = _epoch_figures(tmp_path, True, monkeypatch)
    dev, dev_losses, dev_record, dev_w = _epoch_figures(tmp_path, False, monkeypatch)
    assert torch.equal(host_w, dev_w)
    assert host_record == dev_record == {"nonfinite_loss_steps": 0, "first_nonfinite_step": None}
    assert len(host_losses) == 25 and len(set(host_losses)) == 25
    assert host_losses == pytest.approx(dev_losses, rel=1e-6, abs=0)
    assert (host.samples, host.steps, host.finished) == (dev.samples, dev.steps, dev.finished) == (168, 25, True)
    sizes = [6 if i % 3 else 8 for i in range(25)]
    total = 0.0
    for value, n in zip(host_losses, sizes):
        total += value * n
    assert host.loss_sum == total
    assert host.loss_sum == pytest.approx(dev.loss_sum, rel=1e-6, abs=0)


@pytest.mark.parametrize("variant,through", [("full", 0), ("wrapped calls", 5)])
def test_the_step_cost_benchmarks_wrapped_variant_calls_every_wrapper_and_the_loop_none(variant, through, tmp_path,
                                                                                     monkeypatch):
    """benchmarks/step_cost.py measures Accelerate's wrappers by adding them back: its
    ``wrapped calls`` side must go through each of them at every step, its full side (the
    loop as it runs) through none. Its variants that removed them had come to measure the
    opposite of their names once the loop stopped calling the wrappers."""
    from unittest import mock

    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer
    from accelerate.scheduler import AcceleratedScheduler

    from benchmarks import step_cost

    monkeypatch.setattr(step_cost, "_marginal", lambda epoch: (epoch(5), (0.0, 0.0))[1])
    wrappers = [(AcceleratedOptimizer, "zero_grad"), (AcceleratedOptimizer, "step"), (Accelerator, "backward"),
                (AcceleratedScheduler, "step")]
    with contextlib.ExitStack() as stack:
        counted = [stack.enter_context(mock.patch.object(cls, name, autospec=True, side_effect=getattr(cls, name)))
                   for cls, name in wrappers]
        step_cost.harness_side(variant, tmp_path / "run")
    assert [c.call_count for c in counted] == [through] * len(wrappers)
