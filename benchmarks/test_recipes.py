"""The shipped recipes as a pytest-benchmark regression suite.

pytest-benchmark times each whole run (setup, training, evaluation); the
harness's own figures for the same runs go into ``extra_info``, so a saved
benchmark carries samples/s, step time, memory and accuracy beside the wall time:

    pytest benchmarks --benchmark-autosave
    pytest benchmarks --benchmark-compare --benchmark-compare-fail=mean:10%

Budgets are small (the suite takes well under a minute on two idle CPU cores), so these
numbers track the harness's overhead and the recipes' speed, not accuracy at
convergence. Each recipe also has a time budget (benchmarks/budget.py): a first,
probing run says how long a round takes, and as many rounds as fit (1 to ROUNDS)
follow; ``extra_info`` records how many.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from benchmarks.budget import Budget
from benchmarks.conftest import reset_accelerate
from harness.report.figures import figure

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

ROUNDS = 3
BUDGET_S = 90.0
# extra_info name -> harness.report.figures.FIGURES name
FIGURES = {"samples_per_s": "samples_per_s", "step_time_ms_p50": "step_time_p50_ms",
           "peak_rss_mb": "peak_rss_mb", "test_accuracy": "test_accuracy"}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe(benchmark, recipe, tmp_path):
    from harness.config.run import load_config
    from harness.run.runner import execute

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

    budget = Budget(BUDGET_S, max_rounds=ROUNDS)
    t0 = time.perf_counter()
    run(*setup()[0])  # the probe: how long a round takes here, now
    probe_s = time.perf_counter() - t0
    rounds = budget.rounds_for(probe_s)
    benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1)
    budget.record(benchmark.extra_info, rounds, "max_rounds" if rounds == ROUNDS else "budget")
    benchmark.extra_info["probe_s"] = probe_s

    reports = reports[1:]  # the probe's figures stay out, as its time does
    benchmark.extra_info["config_hash"] = reports[0]["config_hash"]
    benchmark.extra_info["recipe_hash"] = reports[0].get("recipe_hash")
    for name, key in FIGURES.items():
        values = [figure(r, key) for r in reports]
        benchmark.extra_info[name] = values  # one per round
        numbers = [v for v in values if isinstance(v, (int, float))]
        benchmark.extra_info[f"{name}_median"] = statistics.median(numbers) if numbers else None
