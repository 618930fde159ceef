"""Recipe overrides shared by the tests that train."""

from __future__ import annotations

# Small, fast recipe settings for tests that train: a few hundred digits, two epochs.
TINY = [
    "data.subset=360",
    "train.epochs=2",
    "measure.warmup_steps=1",
    "loader.batch_size=32",
    "output.progress=false",
]
