"""The inference scenario's config: what ``scenario: inference`` measures (inference.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import ConfigValueError


@dataclass
class InferenceConfig:
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 64])
    """Batch sizes measured one after the other, each with its own warm-up."""
    warmup_batches: int = 5
    """Forward passes per batch size run before timing starts (compile, caches); never counted."""
    batches: int = 50
    """Timed forward passes per batch size."""
    weights: str | None = None
    """A model.pt (plain state_dict) to measure; null: the recipe's seeded random weights.
    ``harness bench-inference RUN_DIR`` sets it to the run's model.pt."""

    def __post_init__(self):
        if not self.batch_sizes or any(b <= 0 for b in self.batch_sizes):
            raise ConfigValueError("batch_sizes", f"expected a list of integers > 0, got {self.batch_sizes}")
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise ConfigValueError("batch_sizes", f"expected each batch size once, got {self.batch_sizes}")
        if self.warmup_batches < 0:
            raise ConfigValueError("warmup_batches", f"expected an integer >= 0, got {self.warmup_batches}")
        if self.batches <= 0:
            raise ConfigValueError("batches", f"expected an integer > 0, got {self.batches}")
