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

# Relative to the repository root, where the tests run the command.
CONFIG = "configs/digits_cnn.yaml"

# The tiny recipe at a constant learning rate, for the tests that stop, resume and
# compare runs (tests/safe_state/).
SAFE_RECIPE = [CONFIG, *TINY, "optim.scheduler.name=none"]
