"""The training schedule's config (the loop in loop.py reads it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.errors import ConfigValueError


@dataclass
class TrainConfig:
    epochs: int = 10
    """Passes over the train split."""
    max_steps: int | None = None
    """Stop after this many optimizer steps in total (a budget for quick runs)."""
    grad_accum_steps: int = 1
    """Micro-batches (of loader.batch_size each) whose gradients one optimizer step sums:
    the global batch is loader.batch_size x grad_accum_steps x world size. Steps, the
    scheduler, max_steps, measure.warmup_steps/window_steps and checkpoints count
    optimizer steps."""
    target_accuracy: float | None = None
    """Dev accuracy whose first crossing is timed (time_to_target_s)."""
    target_loss: float | None = None
    """Dev loss (nats per token for a language model) whose first reach, at or below,
    is timed (time_to_target_s) instead of an accuracy."""
    stop_at_target: bool = False
    """End training once target_accuracy (or target_loss) is reached."""
    on_nonfinite: Literal["stop", "record"] = "stop"
    """A NaN or infinite training loss: stop the run (status diverged, exit 3), or only
    count such steps in the report's nonfinite block."""

    def __post_init__(self):
        if self.epochs <= 0:
            raise ConfigValueError("epochs", f"expected an integer > 0, got {self.epochs}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigValueError("max_steps", f"expected an integer > 0 or null, got {self.max_steps}")
        if self.grad_accum_steps < 1:
            raise ConfigValueError("grad_accum_steps", f"expected an integer >= 1, got {self.grad_accum_steps}")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ConfigValueError(
                "target_accuracy", f"expected a fraction in (0, 1], got {self.target_accuracy}")
        if self.target_loss is not None and self.target_loss <= 0:
            raise ConfigValueError("target_loss", f"expected a loss > 0, got {self.target_loss}")
        if self.target_loss is not None and self.target_accuracy is not None:
            raise ConfigValueError("target_loss", "one target is timed: set train.target_accuracy or "
                                                  "train.target_loss, not both")
        if self.stop_at_target and self.target_accuracy is None and self.target_loss is None:
            raise ConfigValueError("stop_at_target", "needs train.target_accuracy or train.target_loss")
