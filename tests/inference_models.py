"""A model whose inference cost is known (model.name: inference_models:SleepyEval)."""

import os
import time

from custom_models import TinyNet


class SleepyEval(TinyNet):
    """TinyNet whose eval-mode forward sleeps ``$HARNESS_TEST_EVAL_SLEEP_MS`` (the physical truth
    the inference latency is checked against); training forwards do not sleep."""

    def forward(self, x):
        if not self.training:
            time.sleep(float(os.environ.get("HARNESS_TEST_EVAL_SLEEP_MS", "0")) / 1000.0)
        return super().forward(x)
