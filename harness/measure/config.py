"""What the meter measures, and over which steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.errors import ConfigValueError


@dataclass
class ProfileConfig:
    """torch.profiler over a few training steps; profile.py runs it, writing <run folder>/profile/."""

    steps: int = 5
    """Training steps traced."""
    after: int | None = None
    """Steps of this process run before the trace starts (warm-up included). null: after the
    timed window (the last steps of the run when measure.window_steps is null). Traced steps
    are never timed: the meter leaves them out of every window."""
    record_shapes: bool = False
    """Record each op's input shapes (groups the top ops by shape in the trace)."""
    profile_memory: bool = False
    """Record tensor allocations and frees."""

    def __post_init__(self):
        if self.steps <= 0:
            raise ConfigValueError("steps", f"expected an integer > 0, got {self.steps}")
        if self.after is not None and self.after < 0:
            raise ConfigValueError("after", f"expected an integer >= 0 or null, got {self.after}")


@dataclass
class MeasureConfig:
    warmup_steps: int = 10
    """Optimizer steps run before the timed window opens; never counted."""
    window_steps: int | None = None
    """Steps in one timed window; null times every step after warm-up (one window)."""
    repeats: int = 1
    """Repeated measurements; the report gives every value, the median and a confidence
    interval of the median."""
    repeat_unit: Literal["window", "run"] = "window"
    """window: consecutive timed windows of window_steps each, in one run. run: the whole
    run again, each in a fresh process (setup, warm-up and caches included), so the
    spread covers what differs between runs and not only between windows."""
    count_flops: bool = True
    """Count forward+backward FLOPs once, on one batch, for achieved FLOP/s and MFU."""
    measure_peak: bool = True
    """Measure this machine's dense matmul peak once (cached) as an MFU reference."""
    rss_interval_ms: float = 50.0
    """How often the background thread samples resident memory."""
    profile: ProfileConfig | None = None
    """Trace some training steps with torch.profiler (null: no trace)."""

    def __post_init__(self):
        if self.warmup_steps < 0:
            raise ConfigValueError("warmup_steps", f"expected an integer >= 0, got {self.warmup_steps}")
        if self.window_steps is not None and self.window_steps <= 0:
            raise ConfigValueError("window_steps", f"expected an integer > 0 or null, got {self.window_steps}")
        if self.repeats <= 0:
            raise ConfigValueError("repeats", f"expected an integer > 0, got {self.repeats}")
        if self.repeats > 1 and self.repeat_unit == "window" and self.window_steps is None:
            raise ConfigValueError("repeats", "needs measure.window_steps (the length of each repeat), "
                                              "or measure.repeat_unit: run")
        if self.rss_interval_ms <= 0:
            raise ConfigValueError("rss_interval_ms", f"expected > 0, got {self.rss_interval_ms}")
