"""The loop's direct calls (run/passthrough.py) and the guard's batched loss check (run/guard.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

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
        calls.step()
        calls.scheduler_step()
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
        assert not calls.skipped()
        results.append((model.weight.detach().clone(), lrs, sched.scheduler._step_count))
    (w1, lr1, n1), (w2, lr2, n2) = results
    assert torch.equal(w1, w2) and lr1 == lr2 and n1 == n2


def test_accumulation_keeps_the_wrappers():
    acc, _ = build_accelerator(RuntimeConfig(device="cpu"), grad_accum_steps=3)
    model, opt, sched = _prepared(acc)
    calls = StepCalls(acc, opt, sched, grad_accum_steps=3)
    assert not calls.direct and calls.backward == acc.backward and calls.step == opt.step


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
