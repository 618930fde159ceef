"""Causal language modelling: predict each next token; throughput counts tokens.

A batch is (inputs, targets) of shape (batch, time), the targets the inputs shifted
by one (harness/data/text.py); the model returns logits (batch, time, vocab). A
target of ``ignore_index`` is padding: no loss, no metric, no throughput. The
windows the text corpus makes hold none, so ``units`` reads shapes alone and never
synchronises the device; a user's task that pads counts its own.

Evaluation reports the loss in nats per token, its perplexity, bits per byte (the
loss over the bytes the tokens stand for, comparable across tokenizers) and the
top-1 next-token accuracy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.task.base import move

IGNORE_INDEX = -100


class CausalLM:
    name = "causal_lm"
    unit = "tokens"

    def __init__(self, bytes_per_token: float = 1.0, ignore_index: int = IGNORE_INDEX):
        self.bytes_per_token = bytes_per_token
        """Corpus bytes per token (1 for the byte tokenizer): nats per token to bits per byte."""
        self.ignore_index = ignore_index

    def batch(self, batch, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return move(batch, device)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.flatten(0, -2), targets.flatten(), ignore_index=self.ignore_index)

    def units(self, targets: torch.Tensor, samples: int | None = None) -> int:
        n = int(targets.shape[0])
        per_sample = targets[0].numel() if n else 0
        return (n if samples is None else min(samples, n)) * per_sample

    def eval_stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        b = targets.shape[0]
        # float32 logits, as classification does: a bf16 run's loss is summed in float32.
        losses = F.cross_entropy(outputs.float().flatten(0, -2), targets.flatten(),
                                 ignore_index=self.ignore_index, reduction="none").view(b, -1)
        real = (targets != self.ignore_index).view(b, -1)
        correct = (outputs.argmax(dim=-1) == targets).view(b, -1) & real
        # Per sample, so gather_for_metrics can drop a distributed sampler's repeats.
        return {"loss": losses.sum(dim=1), "correct": correct.sum(dim=1), "tokens": real.sum(dim=1)}

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        tokens = int(sums.get("tokens", 0))
        if tokens == 0:
            return {"loss": math.nan, "perplexity": math.nan, "bits_per_byte": math.nan,
                    "accuracy": math.nan, "tokens": 0}
        loss = sums["loss"] / tokens
        return {"loss": loss, "perplexity": math.exp(loss),
                "bits_per_byte": loss / (math.log(2) * self.bytes_per_token),
                "accuracy": sums["correct"] / tokens, "tokens": tokens}
