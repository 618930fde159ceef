"""The train/dev/test loop: zero_grad -> forward -> loss -> backward -> step.

It knows nothing of clocks: the meter hands it batches and times them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.run.guard import StepGuard, Verdict


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
    loss_sum: float
    """Sum over this process's samples of the per-sample training loss."""
    samples: int
    steps: int
    skipped_steps: int = 0
    """Optimizer steps the fp16 gradient scaler skipped (inf/NaN gradients)."""
    stop: Verdict | None = None
    """What the guard said when the epoch ended: a signal or a diverged loss, if either."""
    finished: bool = False
    """The loader (or the step budget) ran out; false when the guard cut the epoch short."""

    @property
    def loss(self) -> float:
        return self.loss_sum / self.samples if self.samples else float("nan")


def train_epoch(parts: TrainParts, loader, meter, guard: StepGuard, max_steps: int | None = None,
                carry: EpochResult | None = None, recorder=None) -> EpochResult:
    """One pass over ``loader``; ``carry`` holds what an interrupted pass already did.

    ``recorder`` (recorder.py) is handed each step's loss; None: nothing recorded.
    """
    acc, model, opt = parts.accelerator, parts.model, parts.optimizer
    model.train()
    # Kept on the device: a .item() per step would synchronise every step.
    loss_sum = torch.full((), carry.loss_sum if carry else 0.0, device=acc.device)
    samples, steps, skipped = (carry.samples, carry.steps, carry.skipped_steps) if carry else (0, 0, 0)
    stop, finished = None, False
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
        if recorder is not None:
            recorder.add_loss(loss, n)
        samples += n
        steps += 1
        stop = guard.after_step(loss)
        if stop is not None:
            meter.end_step()  # this step counts (timed, profiled, recorded) before the loop leaves
            break
    else:
        # The last steps since the guard's previous check are checked before the epoch ends.
        stop, finished = guard.check(), True
    return EpochResult(loss_sum=loss_sum.item(), samples=samples, steps=steps, skipped_steps=skipped,
                       stop=stop, finished=finished)


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    samples: int


def evaluate(parts: TrainParts, loader, collect: list | None = None) -> EvalResult:
    """Accuracy and mean loss over ``loader``, gathered across ranks.

    ``gather_for_metrics`` drops the samples a distributed sampler duplicated to
    even out the last batch, so every sample counts exactly once. ``collect``, when
    given, receives each batch's (predictions, targets): ``harness evaluate`` builds
    its confusion matrix from them on this very pass, so its accuracy and loss are
    the run's own figures, computed the same way.
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
            if collect is not None:
                collect.append((preds.cpu(), targets.cpu()))
            correct += (preds == targets).sum()
            loss_sum += losses.sum()
            count += targets.numel()
    model.train()
    if count == 0:
        return EvalResult(float("nan"), float("nan"), 0)
    return EvalResult(accuracy=correct.item() / count, loss=loss_sum.item() / count, samples=count)
