"""Fixtures and hooks only: a session-wide digits cache and a fresh Accelerate state per test.

The helpers the test files share (paths, recipes, running the command, synthetic
reports, run folders) live in ``tests/support/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Under `pytest -n N` each worker is one of N processes sharing the machine's cores: one
# torch thread each (here and in every process a test starts), unless the caller chose.
# Threads beyond the free cores spin waiting for each other: on the busy 2-core VM a small
# digits run took 9.6 s of CPU at two threads and 4.6 s at one.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# CI must not fail on an example it happened to draw today: the default profile
# replays the same examples every run; `--hypothesis-profile=explore` searches anew.
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("deterministic")

# support/ holds assertion helpers (support.folders.one_error_line): rewritten like a
# test module's, so a failure there shows the values too.
pytest.register_assert_rewrite("support")


@pytest.fixture(scope="session", autouse=True)
def harness_cache(tmp_path_factory):
    """One digits PNG cache for the whole session, outside the user's home. Under
    ``pytest -n`` the workers share it (the folder above their own temporary folders), so
    the digits are written and decoded once; every write to it is atomic, so two workers
    filling it at once leave one complete copy."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    (shared / "harness-cache").mkdir(exist_ok=True)
    cache = os.environ.get("HARNESS_TEST_CACHE") or str(shared / "harness-cache")
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



@pytest.fixture
def one_thread():
    """One torch thread for tests of small tensors (support/threads.py). Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    from support.threads import one_torch_thread

    with one_torch_thread():
        yield


def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n`` the tests marked slow go out first: the workers then finish
    together rather than one of them starting a minutes-long test at the end. The Slurm
    tests, one worker's chain of waits (test_slurm.py), go out before all of them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: (item.get_closest_marker("slow") is None,
                                     item.get_closest_marker("slurm") is None))


def pytest_configure(config):
    from support import slurm_session  # here: after register_assert_rewrite("support")

    slurm_session.claim_mark()


def pytest_sessionfinish(session, exitstatus):
    """The controller's end comes after every worker's: the one place to stop a Slurm the
    session's Slurm tests brought up, wherever they ran (support/slurm_session.py)."""
    from support import slurm_session

    slurm_session.bring_down()
