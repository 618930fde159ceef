"""One local Slurm for a whole pytest session, whichever xdist worker needs it first.

`make test` keeps the Slurm tests on one worker (test_slurm.py says why), but nothing here
depends on that: a session fixture that stopped the daemons at its worker's end would stop
a Slurm another worker still submits to, had they spread. So the worker that brings Slurm
up leaves a mark, and the session's controller (the only process that ends after every
worker) brings it down at its end, where the mark says this session started it. A Slurm
that was up before the session is never stopped.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.paths import REPO

SCRIPT = REPO / "scripts" / "slurm-local.sh"
_MARK_ENV = "HARNESS_TEST_SLURM_MARK"


def is_worker() -> bool:
    return bool(os.environ.get("PYTEST_XDIST_WORKER"))


def claim_mark() -> None:
    """In the controller (or a plain pytest), before any worker starts: the workers inherit
    the mark's path from the environment."""
    if not is_worker():
        os.environ[_MARK_ENV] = str(Path(tempfile.gettempdir()) / f"harness-test-slurm-{os.getpid()}")


def _mark() -> Path:
    return Path(os.environ[_MARK_ENV])


@contextmanager
def bringing_up() -> Iterator[None]:
    """Held while a worker checks for Slurm and brings it up: two workers never both start it."""
    with open(f"{_mark()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def started() -> None:
    """This session started the daemons: its end stops them."""
    _mark().write_text("up\n")


def bring_down() -> None:
    """At the controller's session end: stop the daemons if this session started them."""
    if is_worker() or _MARK_ENV not in os.environ:
        return
    mark = _mark()
    if mark.is_file():
        subprocess.run([str(SCRIPT), "down"], timeout=60)
        mark.unlink()
    Path(f"{mark}.lock").unlink(missing_ok=True)
