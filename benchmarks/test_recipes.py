"""The shipped recipes as a pytest-benchmark regression suite.

pytest-benchmark times each whole run (setup, training, evaluation); the
harness's own figures for the same runs go into ``extra_info``, so a saved
benchmark carries samples/s, step time, memory and accuracy beside the wall time:

    pytest benchmarks --benchmark-autosave
    pytest benchmarks --benchmark-compare --benchmark-compare-fail=mean:10%

Budgets are small (the suite takes well under a minute on two idle CPU cores), so these
numbers track the harness's overhead and the recipes' speed, not accuracy at
convergence.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from benchmarks.conftest import reset_accelerate

REPO = Path(__file__).resolve().parent.parent
COMMON = ["output.progress=false", "output.checkpoint_every_epoch=false", "output.save_model=false"]

# recipe -> overrides that keep one run to a few seconds on a CPU.
RECIPES = {
    "digits_cnn": ["data.subset=900", "train.epochs=2", "measure.warmup_steps=3"],
    "digits_mlp": ["data.subset=900", "train.epochs=2", "measure.warmup_steps=3"],
    "fake_resnet18": ["data.fake.size=96", "data.fake.image_shape=[3,32,32]", "loader.num_workers=0",
                      "loader.persistent_workers=false", "loader.batch_size=16", "train.max_steps=3",
                      "measure.warmup_steps=1"],
}

FIGURES = {
    "samples_per_s": ("throughput.samples_per_s", "throughput.train_samples_per_s"),
    "step_time_ms_p50": ("step_time_ms.p50",),
    "peak_rss_mb": ("memory.peak_rss_mb",),
    "test_accuracy": ("accuracy.test_accuracy",),
}


def figure(report: dict, keys: tuple[str, ...]):
    from harness.compare import dig

    return next((v for v in (dig(report, k) for k in keys) if v is not None), None)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe(benchmark, recipe, tmp_path):
    from harness.config import load_config
    from harness.runner import execute

    reports = []

    def setup():
        reset_accelerate()
        output = tmp_path / f"round{len(reports)}"
        cfg = load_config(str(REPO / "configs" / f"{recipe}.yaml"), RECIPES[recipe] + COMMON)
        cfg.output.dir = str(output)
        return (cfg, output), {}

    def run(cfg, output):
        report, code = execute(cfg, output)
        assert code == 0, report.get("error")
        reports.append(report)

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)

    benchmark.extra_info["config_hash"] = reports[0]["config_hash"]
    for name, keys in FIGURES.items():
        values = [figure(r, keys) for r in reports]
        benchmark.extra_info[name] = values  # one per round
        numbers = [v for v in values if isinstance(v, (int, float))]
        benchmark.extra_info[f"{name}_median"] = statistics.median(numbers) if numbers else None
