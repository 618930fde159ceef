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

    def __post_init__(self):
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

    def __post_init__(self):
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
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def build_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                    epochs: int):
    """A per-step schedule, or None.

    ``steps_per_epoch`` counts single-process steps: under DDP, Accelerate steps a
    prepared scheduler once per process per optimizer step, so the schedule is a
    function of samples seen and is the same in every mode.
    """
    s = cfg.scheduler
    total = max(1, steps_per_epoch * epochs)
    if s.name == "none":
        return None
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=s.min_lr)
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=s.step_size_epochs * steps_per_epoch, gamma=s.gamma)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)
