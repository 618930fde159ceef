"""What the meter measures, and over which steps."""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import ConfigValueError


@dataclass
class MeasureConfig:
    warmup_steps: int = 10
    """Optimizer steps run before the timed window opens; never counted."""
    window_steps: int | None = None
    """Steps in the timed window; null times every step after warm-up."""

    def __post_init__(self):
        if self.warmup_steps < 0:
            raise ConfigValueError("warmup_steps", f"expected an integer >= 0, got {self.warmup_steps}")
        if self.window_steps is not None and self.window_steps <= 0:
            raise ConfigValueError("window_steps", f"expected an integer > 0 or null, got {self.window_steps}")
