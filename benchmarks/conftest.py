"""Fixtures for the benchmark suite: a primed data cache and a clean Accelerate state per round."""

from __future__ import annotations

import os

import pytest

# `pytest benchmarks --history-store DIR` (docs/history.md); installed as a pytest11 entry
# point too, for a team's own suite.
pytest_plugins = ["harness.history.pytest_plugin"]


@pytest.fixture(scope="session", autouse=True)
def primed_cache(tmp_path_factory):
    """Digits are written as PNGs on first use; do it once here so no round pays for it.

    ``HARNESS_CACHE`` is kept when set, so repeated benchmark sessions share one cache.
    """
    os.environ.setdefault("HARNESS_CACHE", str(tmp_path_factory.mktemp("harness-cache")))
    from harness.config.run import load_config
    from harness.data import build_data

    cfg = load_config("configs/digits_cnn.yaml", [])
    build_data(cfg.data, cfg.seed)


def reset_accelerate() -> None:
    """Accelerate keeps process-wide singletons; every round must build its own."""
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(True)
    PartialState._reset_state()
