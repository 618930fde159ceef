"""Image classification: today's workload, behind the task seam.

Each figure is computed as ``harness/run/loop.py`` computes it now: the training
loss is ``nn.CrossEntropyLoss(label_smoothing=...)``'s mean over the batch, the
evaluation loss is the same loss per sample on float32 logits, accuracy is top-1,
and one unit of throughput is one sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.task.base import move


class Classification:
    name = "classification"
    unit = "samples"

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def batch(self, batch, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return move(batch, device)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets, label_smoothing=self.label_smoothing)

    def units(self, targets: torch.Tensor, samples: int | None = None) -> int:
        n = int(targets.shape[0])
        return n if samples is None else min(samples, n)

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Top-1 classes: what ``harness evaluate`` builds its confusion matrix from."""
        return outputs.argmax(dim=1)

    def eval_stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        # float32 logits: a bf16 run's loss is summed in float32, as in the loop today.
        losses = F.cross_entropy(outputs.float(), targets, label_smoothing=self.label_smoothing,
                                 reduction="none")
        return {"loss": losses, "correct": self.predictions(outputs) == targets,
                "samples": torch.ones_like(targets, dtype=torch.long)}

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = int(sums.get("samples", 0))
        if n == 0:
            return {"accuracy": math.nan, "loss": math.nan, "samples": 0}
        return {"accuracy": sums["correct"] / n, "loss": sums["loss"] / n, "samples": n}
