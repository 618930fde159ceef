"""A model a test can signal mid-pass (model.name: signal_models:MarksEval)."""

import os
import time
from pathlib import Path

from custom_models import TinyNet


class MarksEval(TinyNet):
    """TinyNet whose eval-mode forward touches ``$HARNESS_TEST_EVAL_MARKER`` and then sleeps
    ``$HARNESS_TEST_EVAL_SLEEP_MS``: once the marker is there the command is inside its pass,
    and stays there long enough for a signal whatever the machine's speed. Training forwards
    neither mark nor sleep."""

    def forward(self, x):
        marker = os.environ.get("HARNESS_TEST_EVAL_MARKER")
        if not self.training and marker:
            Path(marker).touch()
            time.sleep(float(os.environ.get("HARNESS_TEST_EVAL_SLEEP_MS", "0")) / 1000.0)
        return super().forward(x)
