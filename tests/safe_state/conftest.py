"""Fixtures of the safe-state tests: outside a Slurm job, and one completed run to copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.run.guard import SIGTERM_ONCE_ENV
from support.cli import run_in_process
from support.recipes import SAFE_RECIPE


@pytest.fixture(autouse=True)
def at_a_terminal(monkeypatch):
    """These tests send a second SIGTERM meaning "out now": not inside a Slurm job (where a
    repeated SIGTERM is one request), even when the suite itself runs in one."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv(SIGTERM_ONCE_ENV, raising=False)


# Package-wide, as it was module-wide when these tests were one file: one training run
# serves the resume and the file-mode tests alike.
@pytest.fixture(scope="package")
def done_run(tmp_path_factory) -> Path:
    """A completed two-epoch run keeping both epoch checkpoints (copied by each test that changes it)."""
    from accelerate.state import AcceleratorState, PartialState

    out = tmp_path_factory.mktemp("done") / "run"
    assert run_in_process(SAFE_RECIPE, out, "output.keep_checkpoints=2") == 0
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    return out
