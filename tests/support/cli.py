"""Running the harness command: in a subprocess as a user would, or in this process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.cli import main
from support.paths import REPO


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m harness ARGS`` in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def run_in_process(recipe: Sequence[str], out: Path, *extra: str, resume: bool = False) -> int:
    """``harness run RECIPE EXTRA --output OUT`` (``--resume OUT`` with ``resume``) in this
    process; its exit status. A test file binds its recipe once:
    ``run = partial(run_in_process, RECIPE)``."""
    target = ["--resume", str(out)] if resume else ["--output", str(out)]
    return main(["run", *recipe, *extra, *target])
