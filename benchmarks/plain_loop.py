"""The default recipe as a hand-written PyTorch loop: the yardstick for the harness's overhead.

The overhead benchmark measures what the harness adds around a training step, so the
yardstick must compute exactly what ``harness run`` computes, with only the harness's
machinery taken away:

- **Data: the harness's own.** ``recipe_data`` and ``build_loaders`` (harness/data/)
  give the same decoded tensors, the same seeded split, the same batch augmentation
  (drawn per batch from the batch's seed) and the same batch order, re-seeded each
  epoch as fit.py does. The data path is not what the benchmark measures; a loop that
  decoded PNGs and rotated with PIL per sample (this file until issue 29) ran a slower
  data path, and its ratio (1.39, the harness "faster") measured that, not overhead.
- **The step: by hand.** A plain ``torch.nn.Module`` built under the same seed (the
  same initial weights), a plain ``torch.optim.Adam`` and ``CosineAnnealingLR`` sized
  as the harness sizes it (epochs x batches), and ``zero_grad -> forward -> loss ->
  backward -> step``; no Accelerate, no meter, no guard, no recorder, no checkpoints.
  Dev accuracy after each epoch under ``model.eval()`` and ``torch.inference_mode()``,
  as the recipe does, outside the window.
- **The window: the meter's** (benchmarks/hand_clock.py): the steps after warm-up,
  data loading included, evaluation excluded.

From the same seed it reaches the same per-step training losses as ``harness run``
(tests/test_plain_loops.py checks it), which is what makes its ratio a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from benchmarks.hand_clock import StepClock
from harness.data.batches import epoch_seed
from harness.data.loaders import build_loaders
from harness.data.preprocess import recipe_data
from harness.models.registry import CNN


@dataclass
class PlainResult:
    samples_per_s: float
    measured_steps: int
    measured_samples: int
    window_s: float
    wait_ms: list[float]
    """Each measured step's wait for its batch."""
    step_ms: list[float]
    """Each measured step, from the batch in hand to the scheduler's step."""
    dev_accuracy: float
    losses: list[float] = field(default_factory=list)
    """Every step's training loss, warm-up included (only with ``keep_losses``)."""


def evaluate(model: nn.Module, loader) -> float:
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for inputs, targets in loader:
            correct += (model(inputs).argmax(dim=1) == targets).sum().item()
            total += targets.shape[0]
    return correct / total


def check_recipe(cfg) -> None:
    """The loop below writes out the default recipe's choices; a recipe that differs is refused,
    not silently run as something else."""
    expected = {
        "model.name": (cfg.model.name, "cnn"),
        "model.kwargs": (dict(cfg.model.kwargs), {}),
        "optim.name": (cfg.optim.name, "adam"),
        "optim.scheduler.name": (cfg.optim.scheduler.name, "cosine"),
        "loader.kind": (cfg.loader.kind, "dataloader"),
        "train.grad_accum_steps": (cfg.train.grad_accum_steps, 1),
        "runtime.precision": (cfg.runtime.precision, "no"),
        "runtime.compile.enabled": (cfg.runtime.compile.enabled, False),
        "runtime.channels_last": (cfg.runtime.channels_last, False),
        # A CPU loop: the harness side must run on the CPU too (a GPU would be another workload).
        "runtime.device": (cfg.runtime.device if torch.cuda.is_available() else "cpu", "cpu"),
    }
    for key, (got, want) in expected.items():
        if got != want:
            raise ValueError(f"plain_loop writes out the default recipe: {key} is {got!r}, expected {want!r}")


def plain_loop(cfg, epochs: int | None = None, max_steps: int | None = None,
               keep_losses: bool = False) -> PlainResult:
    """The recipe ``cfg`` (a loaded harness Config of the default recipe) trained by hand.

    ``epochs``: cfg.train.epochs when None (it sizes the schedule, as in the harness);
    ``max_steps``: stop after this many steps (cfg.train.max_steps when None).
    ``keep_losses``: keep each step's loss (a detached tensor per step, read at the end).
    """
    check_recipe(cfg)
    epochs = cfg.train.epochs if epochs is None else epochs
    max_steps = cfg.train.max_steps if max_steps is None else max_steps
    seed = cfg.seed
    torch.manual_seed(seed)
    data = recipe_data(cfg)
    loaders = build_loaders(data.train, data.dev, data.test, cfg.loader, seed)
    loader = loaders.train

    torch.manual_seed(seed)  # as the harness: initial weights do not depend on what the data code drew
    model = CNN(in_channels=data.in_channels, image_size=tuple(data.sample_shape[1:]), num_classes=data.num_classes)
    o = cfg.optim
    optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(loader)),
                                                           eta_min=o.scheduler.min_lr)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)

    clock = StepClock(cfg.measure.warmup_steps)
    losses: list[torch.Tensor] = []
    dev_accuracy = float("nan")
    for epoch in range(epochs):
        if max_steps is not None and clock.steps >= max_steps:
            break
        # The epoch's order and augmentation seeds, and the dropout draws: as fit.py seeds them.
        loaders.reseed(seed, epoch)
        torch.manual_seed(epoch_seed(seed, epoch))
        model.train()
        it = iter(loader)
        clock.open()
        while max_steps is None or clock.steps < max_steps:
            clock.fetching()
            try:
                inputs, targets = next(it)
            except StopIteration:
                break
            clock.fetched()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if keep_losses:
                losses.append(loss.detach())
            clock.stepped(targets.shape[0])
        clock.close()
        if loaders.dev is not None:
            dev_accuracy = evaluate(model, loaders.dev)
    return PlainResult(clock.per_s, clock.measured_steps, clock.counted, clock.window_s, clock.wait_ms,
                       clock.step_ms, dev_accuracy, [float(v) for v in losses])
