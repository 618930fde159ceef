"""A child process in its own session, with our SIGINT/SIGTERM passed on to its group.

Its own session, so a terminal's Ctrl-C does not reach it twice (directly and
forwarded), which a run would take as "quit now, without a checkpoint"; forwarded,
so a scheduler's SIGTERM to us stops the child's whole group too, not only us.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


@contextlib.contextmanager
def forwarding_signals(proc: subprocess.Popen):
    """While inside, SIGINT and SIGTERM to this process go to ``proc``'s process group."""

    def forward(signum, frame):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
