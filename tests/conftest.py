"""Shared fixtures: a session-wide digits cache and a fresh Accelerate state per test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# CI must not fail on an example it happened to draw today: the default profile
# replays the same examples every run; `--hypothesis-profile=explore` searches anew.
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("deterministic")

REPO = Path(__file__).resolve().parent.parent

# Small, fast recipe settings for tests that train: a few hundred digits, two epochs.
TINY = [
    "data.subset=360",
    "train.epochs=2",
    "measure.warmup_steps=1",
    "loader.batch_size=32",
    "output.progress=false",
]


@pytest.fixture(scope="session", autouse=True)
def harness_cache(tmp_path_factory):
    """One digits PNG cache for the whole session, outside the user's home."""
    cache = os.environ.get("HARNESS_TEST_CACHE") or str(tmp_path_factory.mktemp("harness-cache"))
    os.environ["HARNESS_CACHE"] = cache
    yield Path(cache)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps process-wide singletons; each in-process run starts clean."""
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m harness ARGS`` in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=full_env)
