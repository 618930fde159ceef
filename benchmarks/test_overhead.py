"""The harness's cost: its samples/s against a hand-written loop on the same recipe.

Each round runs the plain loop (benchmarks/plain_loop.py) and ``harness run`` of the
default recipe with the same settings, back to back, alternating which goes first
so a drift of the machine's speed does not favour one side. The harness figure is
its report's ``throughput.samples_per_s`` with the meter on; the plain loop times
the same window (the steps after warm-up, data loading included, evaluation out).

    pytest benchmarks/test_overhead.py -s

The goal (issue 3): the harness keeps at least 0.97 of the plain loop's throughput.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.conftest import reset_accelerate
from benchmarks.plain_loop import plain_loop

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 6
ROUNDS = 9
GOAL = 0.97
OVERRIDES = [f"train.epochs={EPOCHS}", "output.progress=false", "output.checkpoint_every_epoch=false",
             "output.save_model=false"]


def test_harness_overhead_against_a_plain_loop(benchmark, tmp_path):
    from harness.config import load_config
    from harness.data.datasets import default_cache
    from harness.runner import execute

    cfg0 = load_config(str(REPO / "configs" / "digits_cnn.yaml"), OVERRIDES)
    root = str(default_cache() / "digits")
    pairs: list[tuple[float, float]] = []

    def one_round():
        k = len(pairs)

        def harness_side() -> float:
            reset_accelerate()
            cfg = load_config(str(REPO / "configs" / "digits_cnn.yaml"), OVERRIDES)
            report, code = execute(cfg, tmp_path / f"round{k}")
            assert code == 0, report.get("error")
            return report["throughput"]["samples_per_s"]

        def plain_side() -> float:
            return plain_loop(root, epochs=EPOCHS, batch_size=cfg0.loader.batch_size,
                              warmup_steps=cfg0.measure.warmup_steps, seed=cfg0.seed, lr=cfg0.optim.lr).samples_per_s

        if k % 2:
            h = harness_side()
            p = plain_side()
        else:
            p = plain_side()
            h = harness_side()
        pairs.append((h, p))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)

    ratios = [h / p for h, p in pairs]
    median_ratio = statistics.median(ratios)
    info = benchmark.extra_info
    info["harness_samples_per_s"] = [h for h, _ in pairs]
    info["plain_samples_per_s"] = [p for _, p in pairs]
    info["ratio_per_round"] = ratios
    info["ratio_median"] = median_ratio
    info["ratio_of_medians"] = statistics.median(h for h, _ in pairs) / statistics.median(p for _, p in pairs)
    info["ratio_min"], info["ratio_max"] = min(ratios), max(ratios)
    print(f"\nharness / plain samples/s per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
          f"median {median_ratio:.3f} (goal >= {GOAL})")
    assert median_ratio >= GOAL, f"the harness keeps {median_ratio:.3f} of a plain loop's samples/s"
