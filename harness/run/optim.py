"""Loss, optimizer and learning-rate schedule from config."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from harness.errors import ConfigValueError


@dataclass
class LossConfig:
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing in [0, 1)."""

    def __post_init__(self):
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigValueError("label_smoothing", f"expected a value in [0, 1), got {self.label_smoothing}")


@dataclass
class SchedulerConfig:
    name: Literal["none", "cosine", "step", "onecycle"] = "none"
    step_size_epochs: int = 1
    """step: epochs between decays."""
    gamma: float = 0.1
    """step: factor applied at each decay."""
    min_lr: float = 0.0
    """cosine: the learning rate at the end."""
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up before the schedule: step t (from 0) runs at
    lr x (t+1)/warmup_steps, then the named schedule starts from lr (a cosine then spans
    the steps left; a warm-up as long as the schedule leaves it none). 0: none. Not with
    onecycle, which warms up itself. Counted in one process's steps: under N processes
    Accelerate's scheduler wrapper advances the schedule N times an optimizer step (the
    schedule's length, steps_per_epoch, is the unsharded loader's), so the warm-up covers
    the same samples at any world size."""

    def __post_init__(self):
        if self.warmup_steps < 0:
            raise ConfigValueError("warmup_steps", f"expected an integer >= 0, got {self.warmup_steps}")
        if self.warmup_steps and self.name == "onecycle":
            raise ConfigValueError("warmup_steps", "onecycle warms up itself (its first 30% of steps); "
                                                   "use warmup_steps with none, cosine or step")
        if self.step_size_epochs <= 0:
            raise ConfigValueError("step_size_epochs", f"expected an integer > 0, got {self.step_size_epochs}")
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigValueError("gamma", f"expected a value in (0, 1], got {self.gamma}")
        if self.min_lr < 0:
            raise ConfigValueError("min_lr", f"expected >= 0, got {self.min_lr}")


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 1e-3
    """Learning rate (> 0)."""
    weight_decay: float = 0.0
    momentum: float = 0.9
    """sgd only."""
    nesterov: bool = False
    """sgd only; needs momentum > 0."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """adam/adamw only."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    grad_clip_norm: float | None = None
    """Before each optimizer step, scale the gradients down so that their global L2 norm
    (over every parameter the optimizer steps) is at most this; null: no clipping."""

    def __post_init__(self):
        if self.grad_clip_norm is not None and not (self.grad_clip_norm > 0 and math.isfinite(self.grad_clip_norm)):
            raise ConfigValueError("grad_clip_norm", f"expected a norm > 0 or null, got {self.grad_clip_norm}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ConfigValueError("lr", f"expected a learning rate > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigValueError("weight_decay", f"expected >= 0, got {self.weight_decay}")
        if self.momentum < 0:
            raise ConfigValueError("momentum", f"expected >= 0, got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            raise ConfigValueError("nesterov", "needs momentum > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigValueError("betas", f"expected two values in [0, 1), got {self.betas}")


def build_loss(cfg: LossConfig, reduction: str = "mean") -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction=reduction)


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                              nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    else:
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        opt = cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.grad_clip_norm is not None:
        opt.register_step_pre_hook(ClipGradNorm(cfg.grad_clip_norm))
    return opt


class ClipGradNorm:
    """An optimizer step pre-hook: clip the gradients it is about to apply to ``max_norm``.

    A hook on the torch optimizer, not a call in the loop, because every path to a step
    reaches it at the one right moment: Accelerate's wrapper and the loop's direct call
    (passthrough.py) both end in this optimizer's ``step``; under DDP the gradients are
    already all-reduced (every rank clips the same); with train.grad_accum_steps K only the
    K-th micro-batch steps, so the norm is the whole group's; with an fp16 scaler,
    ``scaler.step`` unscales before it calls ``step`` and skips the call on inf/NaN, so the
    norm is of the true gradients. Under FSDP2 the parameters are DTensor shards and
    ``clip_grad_norm_`` reduces their norms across ranks.
    """

    def __init__(self, max_norm: float):
        self.max_norm = max_norm

    def __call__(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if params:
            torch.nn.utils.clip_grad_norm_(params, self.max_norm)


def build_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                    epochs: int):
    """A per-step schedule, or None.

    ``steps_per_epoch`` counts single-process steps: under DDP, Accelerate steps a
    prepared scheduler once per process per optimizer step, so the schedule is a
    function of samples seen and is the same in every mode.
    """
    s = cfg.scheduler
    total = max(1, steps_per_epoch * epochs)
    if s.warmup_steps:
        return _with_warmup(cfg, optimizer, steps_per_epoch, total)
    if s.name == "none":
        return None
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=s.min_lr)
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=s.step_size_epochs * steps_per_epoch, gamma=s.gamma)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)


def _with_warmup(cfg: OptimConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, total: int):
    """optim.scheduler.warmup_steps > 0: one LambdaLR whose factor is the warm-up, then the
    named schedule in closed form (never a ``SequentialLR`` of two schedulers stepping one
    optimizer's rates)."""
    s = cfg.scheduler
    factor = WarmupThen(s.warmup_steps, s.name, total, s.min_lr / cfg.lr, s.step_size_epochs * steps_per_epoch,
                        s.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class WarmupThen:
    """Learning-rate factor of optimizer step t: (t+1)/warmup for t < warmup, then the named
    schedule over the steps after the warm-up, t' = t - warmup: 1 (none); cosine from 1 down to
    ``floor`` (min_lr / lr) at ``total``; ``gamma`` every ``step_size`` steps (step).

    A class rather than a closure: LambdaLR saves a callable object's attributes in its
    state_dict (a checkpoint then holds the schedule it ran), a function's not at all.
    """

    def __init__(self, warmup: int, name: str, total: int, floor: float, step_size: int, gamma: float):
        self.warmup, self.name, self.total = warmup, name, total
        self.floor, self.step_size, self.gamma = floor, step_size, gamma

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return (t + 1) / self.warmup
        t -= self.warmup
        if self.name == "cosine":
            # A warm-up as long as the schedule (a recipe run on a small corpus) leaves the
            # cosine nothing: the rate rises through the run, as HF's and nanoGPT's schedules do.
            span = max(1, self.total - self.warmup)
            return self.floor + (1 - self.floor) * (1 + math.cos(math.pi * min(t, span) / span)) / 2
        if self.name == "step":
            return self.gamma ** (t // self.step_size)
        return 1.0
