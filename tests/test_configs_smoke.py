"""Every shipped config validates and runs with a tiny budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.report.io import load_report

CONFIGS = sorted(p for p in (Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))
SMOKE = ["data.subset=64", "data.fake.size=64", "train.epochs=1", "train.max_steps=2",
         "measure.warmup_steps=1", "loader.batch_size=8", "output.progress=false"]


def test_there_are_configs():
    assert any(p.name == "digits_cnn.yaml" for p in CONFIGS)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_smoke_run(config, tmp_path):
    assert main(["run", str(config), *SMOKE, "--output", str(tmp_path)]) == 0
    report = load_report(tmp_path)
    assert report["status"] == "completed"
    assert report["throughput"]["measured_steps"] == 1
