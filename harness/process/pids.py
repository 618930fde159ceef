"""Is this pid still the process we knew? A pid is reused once its process is gone.

A lock file and a rank's start note each record a pid and a time at which that process
was alive (its start time, or when it wrote the note). A process now holding the pid
that started after that time is a later one given the same number; a zombie has ended
and only waits to be reaped. psutil reads the start time where the OS keeps it
(``/proc/<pid>/stat`` on Linux, sysctl on macOS) instead of a parser of our own.
"""

from __future__ import annotations

import psutil

SLACK_S = 1.0
"""The OS keeps a start time in clock ticks since boot: read back as wall time it may
land a tick or two after a time.time() taken at once; a reused pid comes much later."""


def started_at(pid: int) -> float | None:
    """When ``pid``'s process started (seconds since the epoch); None when it is gone or hidden."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def same_process(pid: int, alive_at: float | None = None) -> bool:
    """Whether ``pid`` is a live process that already existed at ``alive_at`` (time.time()).

    None: any live process with that pid. Someone else's process that psutil may not
    inspect counts as live: it cannot be told apart, and a live owner is the safe guess.
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return alive_at is None or proc.create_time() <= alive_at + SLACK_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
