"""The tiny GPT recipe as a hand-written nanoGPT-style loop: the yardstick for the harness's overhead on text.

The data is the harness's own (``recipe_data`` and ``build_loaders``: the same corpus
windows in the same seeded order, re-seeded each epoch as fit.py does), because the data
path is not what the benchmark measures; the step is written by hand: the same GPT
class built under the same seed, a plain AdamW with the recipe's settings and a cosine
schedule over the epochs' batches (as the harness sizes it; after the recipe's linear
warm-up, if any), and ``zero_grad -> forward -> loss -> backward -> (clip) -> step``
until ``max_steps``, then the dev loss under ``model.eval()`` and
``torch.inference_mode()`` as the recipe does. No Accelerate, no
meter, no guard, no checkpoints. Its clock (benchmarks/hand_clock.py) reads what the
harness's window reads: from the end of warm-up to the last step, data loading
included, evaluation excluded. From the same seed it reaches the same per-step
training losses as ``harness run`` (tests/test_plain_loops.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from benchmarks.hand_clock import StepClock
from harness.data.batches import epoch_seed
from harness.data.loaders import build_loaders
from harness.data.preprocess import recipe_data
from harness.models.gpt import GPT


@dataclass
class PlainLMResult:
    tokens_per_s: float
    measured_steps: int
    measured_tokens: int
    window_s: float
    wait_ms: list[float]
    """Each measured step's wait for its batch."""
    step_ms: list[float]
    """Each measured step, from the batch in hand to the scheduler's step."""
    dev_loss: float
    losses: list[float] = field(default_factory=list)
    """Every step's training loss, warm-up included (only with ``keep_losses``)."""


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction)


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    total = tokens = 0.0
    with torch.inference_mode():
        for inputs, targets in loader:
            total += lm_loss(model(inputs), targets, reduction="sum").item()
            tokens += targets.numel()
    return total / tokens


def check_recipe(cfg) -> None:
    """The loop below writes out the tiny GPT recipe's choices; a recipe that differs is refused,
    not silently run as something else."""
    expected = {
        "model.name": (cfg.model.name, "gpt"),
        "optim.name": (cfg.optim.name, "adamw"),
        "optim.scheduler.name": (cfg.optim.scheduler.name, "cosine"),
        "loader.kind": (cfg.loader.kind, "dataloader"),
        "train.grad_accum_steps": (cfg.train.grad_accum_steps, 1),
        "runtime.precision": (cfg.runtime.precision, "no"),
        "runtime.compile.enabled": (cfg.runtime.compile.enabled, False),
        "runtime.activation_checkpointing": (cfg.runtime.activation_checkpointing, False),
        # A CPU loop: the harness side must run on the CPU too (a GPU would be another workload).
        "runtime.device": (cfg.runtime.device if torch.cuda.is_available() else "cpu", "cpu"),
    }
    for key, (got, want) in expected.items():
        if got != want:
            raise ValueError(f"plain_lm_loop writes out the tiny GPT recipe: {key} is {got!r}, expected {want!r}")


def plain_lm_loop(cfg, max_steps: int | None = None, keep_losses: bool = False) -> PlainLMResult:
    """The recipe ``cfg`` (a loaded harness Config of configs/tiny_gpt.yaml) trained by hand.

    ``max_steps``: stop after this many steps (cfg.train.max_steps when None).
    ``keep_losses``: keep each step's loss (a detached tensor per step, read at the end).
    """
    check_recipe(cfg)
    epochs, seed = cfg.train.epochs, cfg.seed
    max_steps = cfg.train.max_steps if max_steps is None else max_steps
    torch.manual_seed(seed)
    data = recipe_data(cfg)
    # The harness's loaders: a DataLoader built with shuffle=True and one generator draws its
    # iterator's base seed from that generator before the order, so its batches differ.
    loaders = build_loaders(data.train, data.dev, data.test, cfg.loader, seed)
    loader = loaders.train

    torch.manual_seed(seed)  # as the harness: initial weights do not depend on what the data code drew
    kwargs = dict(cfg.model.kwargs)
    kwargs["seq_len"] = kwargs.get("seq_len") or data.seq_len
    model = GPT(vocab_size=data.vocab_size, **kwargs)
    o = cfg.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    # The harness sizes the schedule by the epochs' batches, not by max_steps.
    total = max(1, epochs * len(loader))
    warmup = o.scheduler.warmup_steps
    if warmup:  # linear warm-up, then a cosine over the steps left (harness/run/optim.py's WarmupThen)
        floor, span = o.scheduler.min_lr / o.lr, max(1, total - warmup)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: (t + 1) / warmup if t < warmup else (
            floor + (1 - floor) * (1 + math.cos(math.pi * min(t - warmup, span) / span)) / 2))
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=o.scheduler.min_lr)

    clock = StepClock(cfg.measure.warmup_steps)
    losses: list[torch.Tensor] = []
    for epoch in range(epochs):
        if max_steps is not None and clock.steps >= max_steps:
            break
        loaders.reseed(seed, epoch)  # the epoch's order, as fit.py seeds it
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
            loss = lm_loss(model(inputs), targets)
            loss.backward()
            if o.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            if keep_losses:
                losses.append(loss.detach())
            clock.stepped(targets.numel())
        clock.close()
    dev_loss = evaluate(model, loaders.dev) if loaders.dev is not None else float("nan")
    return PlainLMResult(clock.per_s, clock.measured_steps, clock.counted, clock.window_s, clock.wait_ms,
                         clock.step_ms, dev_loss, [float(v) for v in losses])
