"""The train/dev/test loop: zero_grad -> forward -> loss -> backward -> step.

It knows nothing of clocks: the meter hands it batches and times them. What differs
between workloads (the loss, what a unit of throughput counts, the evaluation
figures) comes from the task (harness/task/): samples for image classification,
tokens for a language model. With train.grad_accum_steps K > 1 a step is one optimizer
step over K micro-batches: the meter hands over the group, and ``accumulate`` runs the
forward, loss and backward of each inside Accelerate's ``accumulate()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.run.guard import StepGuard, Verdict
from harness.run.passthrough import StepCalls
from harness.task import Classification, Evaluation, Task


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
    task: Task | None = None
    """The workload's loss, units and evaluation; None: image classification with
    ``loss_fn``'s label smoothing (what callers that predate the task seam mean)."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step (train.grad_accum_steps); the Accelerator was built with it."""

    def __post_init__(self):
        if self.task is None:
            self.task = Classification(getattr(self.loss_fn, "label_smoothing", 0.0))


@dataclass
class EpochResult:
    loss_sum: float
    """Sum over this process's units (samples, or tokens) of the per-unit training loss."""
    samples: int
    """Units of throughput this process trained on: samples, or tokens (the task's ``unit``)."""
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


def losses_on_host(device: torch.device) -> bool:
    """Whether the loop reads each step's loss as a float, to be summed on the host (here,
    by the recorder) and checked there (the guard): no tensor op a step. On the CPU, where
    a tensor is ready when its op returns, so reading it never waits (the sums are then
    kept in double precision, where the device's are float32). Elsewhere the loss stays on
    the device: a .item() per step would synchronise every step."""
    return device.type == "cpu"


def train_epoch(parts: TrainParts, loader, meter, guard: StepGuard, max_steps: int | None = None,
                carry: EpochResult | None = None, recorder=None) -> EpochResult:
    """One pass over ``loader``; ``carry`` holds what an interrupted pass already did.

    ``recorder`` (recorder.py) is handed each step's loss; None: nothing recorded.
    """
    acc, model = parts.accelerator, parts.model
    # Accelerate's wrappers where their logic is needed, torch's calls where it is not (passthrough.py).
    calls = StepCalls(acc, parts.optimizer, parts.scheduler, parts.grad_accum_steps)
    model.train()
    host = losses_on_host(acc.device)
    if host:
        loss_sum = carry.loss_sum if carry else 0.0
    else:
        loss_sum = torch.full((), carry.loss_sum if carry else 0.0, device=acc.device)
    samples, steps, skipped = (carry.samples, carry.steps, carry.skipped_steps) if carry else (0, 0, 0)
    stop, finished = None, False
    k = parts.grad_accum_steps
    if k == 1:
        acc.step = 0  # what ``accumulate`` sets for a group of one; nothing changes it while k is 1
    task, backward = parts.task, calls.backward
    # Bound once: a step looks up no attribute of these objects.
    units, loss_of, after_step = task.units, task.loss, guard.after_step
    add_loss = recorder.add_loss if recorder is not None else None
    for batch in meter.steps(loader, limit=max_steps, micro_batches=k):
        calls.zero_grad()
        if k == 1:
            # ``accumulate`` of a group of one, without its per-group bookkeeping (~3 µs a step).
            inputs, targets = batch
            n = units(targets)  # from the shape: counting never synchronises the device
            loss = loss_of(model(inputs), targets)
            backward(loss)
        else:  # forward -> loss -> backward of each micro-batch
            loss, n = accumulate(parts, batch, backward)
        skipped += calls.update()  # the optimizer's step, then the scheduler's
        if host:
            loss = loss.item()  # once, for the sum, the recorder and the guard
            loss_sum += loss * n
        else:
            loss = loss.detach()  # once, for the sum, the recorder and the guard
            loss_sum.add_(loss, alpha=n)  # one device op: loss_sum += loss * n
        if add_loss is not None:
            add_loss(loss, n)
        samples += n
        steps += 1
        stop = after_step(loss)
        if stop is not None:
            meter.end_step()  # this step counts (timed, profiled, recorded) before the loop leaves
            break
    else:
        # The last steps since the guard's previous check are checked before the epoch ends.
        stop, finished = guard.check(), True
    return EpochResult(loss_sum=loss_sum if host else loss_sum.item(), samples=samples, steps=steps,
                       skipped_steps=skipped, stop=stop, finished=finished)


def accumulate(parts: TrainParts, group: list, backward=None) -> tuple[torch.Tensor, int]:
    """Forward, loss and backward of each micro-batch of ``group``, inside Accelerate's
    ``accumulate()``; returns the group's loss (a mean over its units) and its units.

    Each micro-batch's loss is a mean over its units (samples, or tokens); weighted by its
    share of the group's units, the summed gradient is that of one batch of the whole group,
    a short last group and a short last micro-batch included. ``backward`` divides by
    ``grad_accum_steps`` K, so the weight handed to it is K times the share: exactly 1 in a
    full group of equal micro-batches. ``backward``: the loop's (``StepCalls.backward``);
    None: ``accelerator.backward``. Accelerate's micro-batch count is set so the group's
    last micro-batch is the K-th: it alone all-reduces (DDP's ``no_sync`` skips the others)
    and lets ``optimizer.step`` and the scheduler act. Only K > 1 comes here: the loop runs K = 1 itself.
    """
    acc, model, task, k = parts.accelerator, parts.model, parts.task, parts.grad_accum_steps
    backward = backward or acc.backward  # ``StepCalls.backward`` from the loop
    # From shapes: counting never synchronises the device.
    units = [task.units(targets) for _, targets in group]
    # A model the harness sharded itself (FSDP2 on the CPU) is unknown to Accelerate, whose
    # no_sync then does nothing: the model is told whether this micro-batch reduces its gradients.
    own_sync = hasattr(model, "set_requires_gradient_sync") and not acc.is_fsdp2
    total = sum(units)
    acc.step = k - len(group)
    group_loss = None
    for (inputs, targets), n in zip(group, units):
        with acc.accumulate(model):
            if own_sync:
                model.set_requires_gradient_sync(acc.sync_gradients)
            outputs = model(inputs)
            loss = task.loss(outputs, targets)
            backward(loss if k * n == total else loss * (k * n / total))
        if len(group) == 1:  # a last group of one: the loss itself
            return loss, total
        part = loss.detach().float() * (n / total)
        group_loss = part if group_loss is None else group_loss + part
    return group_loss, total


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    samples: int
    """Units evaluated: samples, or tokens (the task's ``unit``)."""
    figures: dict | None = None
    """Every figure the task's ``metrics`` gave (a language model's perplexity, bits per byte)."""


def evaluate(parts: TrainParts, loader, collect: list | None = None) -> EvalResult:
    """The task's figures over ``loader`` (accuracy, mean loss), gathered across ranks.

    ``gather_for_metrics`` drops the samples a distributed sampler duplicated to
    even out the last batch, so every sample counts exactly once. ``collect``, when
    given, receives each batch's (predictions, targets) of a classification task:
    ``harness evaluate`` builds its confusion matrix from them on this very pass, so
    its accuracy and loss are the run's own figures, computed the same way.
    """
    acc, model, task = parts.accelerator, parts.model, parts.task
    model.eval()
    ev = Evaluation(task, acc.device, gather=acc.gather_for_metrics)
    with torch.inference_mode():
        for inputs, targets in loader:
            outputs = model(inputs)
            ev.add(outputs, targets)
            if collect is not None:
                preds, targets = acc.gather_for_metrics((task.predictions(outputs), targets))
                collect.append((preds.cpu(), targets.cpu()))
    model.train()
    figures = ev.result()
    count = figures.get(task.unit, 0)
    return EvalResult(accuracy=figures["accuracy"], loss=figures["loss"], samples=count, figures=figures)
