"""optim.scheduler.warmup_steps (linear warm-up, then the named schedule) and
optim.grad_clip_norm (the gradients' global norm clipped before each optimizer step)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.config.run import config_hash, load_config, recipe_hash, to_dict
from harness.errors import BadInput
from harness.run.optim import OptimConfig, SchedulerConfig, build_optimizer, build_scheduler

pytestmark = pytest.mark.usefixtures("one_thread")


def _lrs(cfg: OptimConfig, steps_per_epoch: int, epochs: int, n: int) -> list[float]:
    opt = build_optimizer(cfg, nn.Linear(2, 2))
    sched = build_scheduler(cfg, opt, steps_per_epoch, epochs)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_rises_linearly_then_the_cosine_spans_the_steps_left():
    cfg = OptimConfig(name="adamw", lr=0.004, scheduler=SchedulerConfig(name="cosine", warmup_steps=4, min_lr=0.001))
    lrs = _lrs(cfg, steps_per_epoch=6, epochs=2, n=13)  # 12 steps: 4 of warm-up, a cosine over 8
    assert lrs[:4] == pytest.approx([0.001, 0.002, 0.003, 0.004])
    cosine = [0.001 + 0.003 * (1 + math.cos(math.pi * t / 8)) / 2 for t in range(9)]
    assert lrs[4:] == pytest.approx(cosine)
    assert lrs[12] == pytest.approx(0.001)  # min_lr at the schedule's end, and held there


def test_warmup_before_no_schedule_and_before_step_decays():
    none = OptimConfig(lr=0.01, scheduler=SchedulerConfig(name="none", warmup_steps=2))
    assert _lrs(none, 5, 1, 5) == pytest.approx([0.005, 0.01, 0.01, 0.01, 0.01])
    step = OptimConfig(lr=0.01, scheduler=SchedulerConfig(name="step", warmup_steps=2, step_size_epochs=1, gamma=0.5))
    # Decays every 3 steps (one epoch) counted from the warm-up's end.
    assert _lrs(step, 3, 3, 8) == pytest.approx([0.005, 0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.005])


def test_without_warmup_the_schedulers_are_torchs_own():
    """warmup_steps 0 keeps the schedules every earlier run used (bit for bit: another form
    of the cosine would round differently)."""
    opt = build_optimizer(OptimConfig(), nn.Linear(2, 2))
    sched = build_scheduler(OptimConfig(scheduler=SchedulerConfig(name="cosine")), opt, 5, 1)
    assert type(sched) is torch.optim.lr_scheduler.CosineAnnealingLR
    assert build_scheduler(OptimConfig(), opt, 5, 1) is None


def test_a_warmed_up_schedule_resumes_from_its_state_dict():
    cfg = OptimConfig(lr=0.01, scheduler=SchedulerConfig(name="cosine", warmup_steps=3))
    opt = build_optimizer(cfg, nn.Linear(2, 2))
    sched = build_scheduler(cfg, opt, 10, 1)
    for _ in range(5):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = build_optimizer(cfg, nn.Linear(2, 2))
    again = build_scheduler(cfg, opt2, 10, 1)
    again.load_state_dict(state)
    opt2.step()
    again.step()
    opt.step()
    sched.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] != 0.01


@pytest.mark.parametrize("override, words", [
    ("optim.scheduler.warmup_steps=-1", ("optim.scheduler.warmup_steps", ">= 0")),
    ("optim.grad_clip_norm=0", ("optim.grad_clip_norm", "> 0")),
    ("optim.grad_clip_norm=.nan", ("optim.grad_clip_norm", "nan")),
    ("optim.grad_clip_norm=.inf", ("optim.grad_clip_norm", "inf")),
    ("optim.grad_clip_norm=-1.0", ("optim.grad_clip_norm", "> 0")),
])
def test_bad_values_are_refused_by_key(override, words):
    with pytest.raises(BadInput) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value) and all(w in str(info.value) for w in words), str(info.value)


def test_onecycle_refuses_a_warmup_of_its_own():
    with pytest.raises(BadInput) as info:
        load_config(None, ["optim.scheduler.name=onecycle", "optim.scheduler.warmup_steps=5"])
    assert "optim.scheduler.warmup_steps" in str(info.value) and "onecycle" in str(info.value)


def test_a_warmup_longer_than_the_schedule_only_rises():
    """The recipe on a small corpus: 10 steps of warm-up over a schedule of 8."""
    cfg = OptimConfig(lr=0.01, scheduler=SchedulerConfig(name="cosine", warmup_steps=10))
    assert _lrs(cfg, 4, 2, 8) == pytest.approx([0.001 * (t + 1) for t in range(8)])


def test_the_new_keys_at_their_defaults_keep_earlier_hashes():
    cfg = load_config("configs/digits_cnn.yaml")
    before = to_dict(cfg)
    before["optim"].pop("grad_clip_norm")  # a config written before the keys existed
    before["optim"]["scheduler"].pop("warmup_steps")
    from harness.config.recipe import differing_keys

    assert differing_keys(before, to_dict(cfg)) == []
    for override in ("optim.scheduler.warmup_steps=3", "optim.grad_clip_norm=1.0"):
        other = load_config("configs/digits_cnn.yaml", [override])
        assert differing_keys(to_dict(cfg), to_dict(other)) == [override.split("=")[0]]
        assert recipe_hash(other) != recipe_hash(cfg) and config_hash(other) != config_hash(cfg)


def test_clipping_steps_on_the_clipped_gradient():
    torch.manual_seed(0)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    ref = nn.Linear(6, 3)
    clipped = nn.Linear(6, 3)
    clipped.load_state_dict(ref.state_dict())
    plain = nn.Linear(6, 3)
    plain.load_state_dict(ref.state_dict())
    max_norm = 0.05
    for model, clip in ((ref, None), (clipped, max_norm), (plain, None)):
        opt = build_optimizer(OptimConfig(name="sgd", lr=0.5, momentum=0.0, grad_clip_norm=clip), model)
        nn.functional.cross_entropy(model(x), y).backward()
        if model is ref:  # by hand, what the hook must do
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            assert norm > 4 * max_norm, "the test needs a gradient the clipping changes"
        opt.step()
    for p, q in zip(clipped.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    # It can fail: the unclipped step lands elsewhere.
    assert (plain.weight - ref.weight).abs().max() > 1e-2
