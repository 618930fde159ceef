"""Every shipped config validates and runs with a tiny budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.report.io import load_report

ROOT = Path(__file__).resolve().parent.parent / "configs"
CONFIGS = sorted(p for p in ROOT.glob("*.yaml")) + [ROOT / "hardware" / "gpt_small.yaml"]
"""The shipped recipes, and the hardware suite's language model at its own shape (the suite's
image workloads are smoke-run at 32x32 by tests/test_zoo.py)."""
SMOKE = ["data.subset=64", "data.fake.size=64", "train.epochs=1", "train.max_steps=2",
         "measure.warmup_steps=1", "loader.batch_size=8", "output.progress=false"]
SMALLER = {"gpt_small": ["loader.batch_size=2", "data.split={train: 0.99, dev: 0.005, test: 0.005}"]}
"""Per config: its windows of 256 tokens at batch 2, and dev and test spans of a few windows each,
so the smoke run takes seconds (the evaluation of the shipped 2% spans would take most of it)."""


# One torch thread for the smoke runs in this process: two steps of small tensors, which two
# threads on a busy 2-core machine only spin over.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_there_are_configs():
    assert any(p.name == "digits_cnn.yaml" for p in CONFIGS)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_smoke_run(config, tmp_path):
    assert main(["run", str(config), *SMOKE, *SMALLER.get(config.stem, []), "--output", str(tmp_path)]) == 0
    report = load_report(tmp_path)
    assert report["status"] == "completed"
    assert report["throughput"]["measured_steps"] == 1
