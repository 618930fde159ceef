"""The train/dev/test loop: zero_grad -> forward -> loss -> backward -> step.

It knows nothing of clocks: the meter hands it batches and times them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TrainParts:
    """Everything a train step touches, already prepared by the Accelerator."""

    accelerator: object
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    loss_fn: nn.Module
    eval_loss_fn: nn.Module
    """The same loss with reduction='none', so padded samples can be dropped."""


@dataclass
class EpochResult:
    loss: float
    samples: int
    steps: int
    skipped_steps: int = 0
    """Optimizer steps the fp16 gradient scaler skipped (inf/NaN gradients)."""


def train_epoch(parts: TrainParts, loader, meter, max_steps: int | None = None) -> EpochResult:
    acc, model, opt = parts.accelerator, parts.model, parts.optimizer
    model.train()
    # Kept on the device: a .item() per step would synchronise every step.
    loss_sum = torch.zeros((), device=acc.device)
    samples = steps = skipped = 0
    for inputs, targets in meter.steps(loader, limit=max_steps):
        opt.zero_grad(set_to_none=True)
        outputs = model(inputs)
        loss = parts.loss_fn(outputs, targets)
        acc.backward(loss)
        opt.step()
        # A host-side flag, set by the scaler's own step (which has synchronised already).
        skipped += int(acc.optimizer_step_was_skipped)
        if parts.scheduler is not None:
            parts.scheduler.step()
        n = targets.shape[0]
        loss_sum += loss.detach().float() * n
        samples += n
        steps += 1
    return EpochResult(loss=(loss_sum.item() / samples) if samples else float("nan"),
                       samples=samples, steps=steps, skipped_steps=skipped)


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    samples: int


def evaluate(parts: TrainParts, loader) -> EvalResult:
    """Accuracy and mean loss over ``loader``, gathered across ranks.

    ``gather_for_metrics`` drops the samples a distributed sampler duplicated to
    even out the last batch, so every sample counts exactly once.
    """
    acc, model = parts.accelerator, parts.model
    model.eval()
    correct = torch.zeros((), device=acc.device, dtype=torch.long)
    loss_sum = torch.zeros((), device=acc.device)
    count = 0
    with torch.inference_mode():
        for inputs, targets in loader:
            outputs = model(inputs)
            losses = parts.eval_loss_fn(outputs.float(), targets)
            preds = outputs.argmax(dim=1)
            preds, targets, losses = acc.gather_for_metrics((preds, targets, losses))
            correct += (preds == targets).sum()
            loss_sum += losses.sum()
            count += targets.numel()
    model.train()
    if count == 0:
        return EvalResult(float("nan"), float("nan"), 0)
    return EvalResult(accuracy=correct.item() / count, loss=loss_sum.item() / count, samples=count)
