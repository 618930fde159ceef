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
def forwarding_signals():
    """While inside, SIGINT and SIGTERM to this process go to the process group of the child
    handed to the ``started`` function it yields.

    The handlers are in before the child is started: a signal that arrives while it starts
    (or before) is held and passed on as ``started`` is called, and one held when no child
    was started is raised again on the way out. Installed after the start, a signal in
    between ended this process by its own handler and left the child, in its own session,
    running.
    """
    child: list[int] = []
    held: list[int] = []

    def forward(signum, frame):
        if not child:
            held.append(signum)
            return
        try:
            os.killpg(child[0], signum)
        except ProcessLookupError:
            pass

    def started(proc: subprocess.Popen) -> None:
        child.append(proc.pid)
        while held:
            forward(held.pop(0), None)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield started
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for signum in held:  # no child took them: ours, as if nothing had been in the way
            signal.raise_signal(signum)
