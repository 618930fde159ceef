"""The tiny GPT recipe as a hand-written nanoGPT-style loop: the yardstick for the harness's overhead on text.

Everything a user would write without the harness, and nothing more: the same corpus
windows (harness.data.text, so both sides read the same tokens), the same GPT class
built under the same seed, AdamW with the recipe's learning rate and a cosine
schedule over the epoch's batches (as the harness sizes it), the same batch size,
and ``zero_grad -> forward -> loss -> backward -> step`` until ``max_steps``, then
the dev loss under ``model.eval()`` and ``torch.inference_mode()`` as the recipe
does. No Accelerate, no meter, no guard, no checkpoints. Its clock reads what the
harness's window reads: from the end of warm-up to the last step, data loading
included, evaluation excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from benchmarks.hand_clock import StepClock
from harness.data.text import build_text_data
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


def plain_lm_loop(split, model_kwargs: dict, seq_len: int, max_steps: int = 120, batch_size: int = 16,
                  warmup_steps: int = 10, seed: int = 0, lr: float = 0.003,
                  betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0) -> PlainLMResult:
    """``split``: the recipe's data.split (fractions train/dev/test); the default corpus, bytes as tokens."""
    torch.manual_seed(seed)
    data = build_text_data(None, seq_len, split)
    loader = DataLoader(data.train, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    dev_loader = DataLoader(data.dev, batch_size=batch_size)

    torch.manual_seed(seed)  # as the harness: initial weights do not depend on what the data code drew
    model = GPT(vocab_size=data.vocab_size, **model_kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
    # The harness sizes the schedule by the epoch's batches, not by max_steps.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=len(loader))

    clock = StepClock(warmup_steps)
    model.train()
    it = iter(loader)
    clock.open()
    while clock.steps < max_steps:
        clock.fetching()
        try:
            inputs, targets = next(it)
        except StopIteration:
            break
        clock.fetched()
        optimizer.zero_grad(set_to_none=True)
        loss = lm_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
        scheduler.step()
        clock.stepped(targets.numel())
    clock.close()
    dev_loss = evaluate(model, dev_loader)
    return PlainLMResult(clock.per_s, clock.measured_steps, clock.counted, clock.window_s, clock.wait_ms,
                         clock.step_ms, dev_loss)
