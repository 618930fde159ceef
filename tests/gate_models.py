"""Models for the regression-gate tests (model.name: gate_models:Sleepy).

The config is the same whatever the environment says, so every run is one recipe
(one recipe_hash); only the speed, or whether it finishes, changes: a commit that
made every step slower, or broke training.
"""

import os
import time

from custom_models import TinyNet


class Sleepy(TinyNet):
    """TinyNet whose training forward sleeps ``$HARNESS_TEST_STEP_SLEEP_MS`` and raises at
    training forward ``$HARNESS_TEST_FAIL_AT`` (1-based; unset: never)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__(in_channels, num_classes, width)
        self.forwards = 0

    def forward(self, x):
        if self.training:
            self.forwards += 1
            if self.forwards == int(os.environ.get("HARNESS_TEST_FAIL_AT", "0")):
                raise RuntimeError(f"broken candidate: training forward {self.forwards} fails")
            time.sleep(float(os.environ.get("HARNESS_TEST_STEP_SLEEP_MS", "0")) / 1000.0)
        return super().forward(x)
