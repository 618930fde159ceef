"""One run per output folder: a lock file holding the owner's pid and host.

Two runs writing one folder would leave the report of one, the config of the other
and their checkpoints mixed. The lock is a file created with O_EXCL (atomic on a
local or NFSv3+ file system). A lock is stale when its host is this host and its
process is gone (or the pid now belongs to a process started later): a SIGKILL
leaves such a lock, and the next run takes it over. A lock from another host is
never presumed stale: the folder may be shared and the other run alive.

In a distributed run only the main process takes the lock (the folder is the job's).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from harness.atomic import DiskFull, is_disk_full
from harness.errors import BadInput

LOCK_FILE = ".lock"


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    now = _start_ticks(pid)
    return started is None or now is None or now == started


def read_lock(folder: Path) -> dict | None:
    """The lock's owner {pid, host, started, since}, or None when unlocked. Torn content reads as {}."""
    try:
        text = (Path(folder) / LOCK_FILE).read_text()
    except FileNotFoundError:
        return None
    owner = {}
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        owner[key.strip()] = value.strip()
    return owner


TORN_AFTER_S = 5.0
"""A lock file without its owner's pid and host this old was left by a writer killed
between creating it and writing it (a live one takes microseconds)."""


def holder_alive(owner: dict, age_s: float = 0.0) -> bool:
    """Whether the lock's owner may still run (a lock from another host is presumed alive)."""
    if not owner.get("pid") or not owner.get("host"):
        return age_s < TORN_AFTER_S
    if owner.get("host") != socket.gethostname():
        return True
    try:
        pid = int(owner["pid"])
    except ValueError:
        return False
    started = owner.get("started")
    return _alive(pid, int(started) if started and started.isdigit() else None)


def live_owner(folder: Path) -> dict | None:
    """The owner of ``folder``'s lock when it is held by a live run, else None."""
    owner = read_lock(folder)
    return owner if owner is not None and holder_alive(owner, _age_s(Path(folder) / LOCK_FILE)) else None


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


class RunLock:
    """``with RunLock(folder):`` holds the folder for this process; a second holder is bad input."""

    def __init__(self, folder: Path, enabled: bool = True):
        self.path = Path(folder) / LOCK_FILE
        self.enabled = enabled
        self.held = False
        self.took_over: dict | None = None
        """The stale lock this run replaced, if any."""

    def acquire(self) -> None:
        if not self.enabled:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            if is_disk_full(err):
                raise DiskFull(self.path.parent, None) from None
            raise BadInput(f"output.dir: cannot write to {self.path.parent} ({err.strerror or err})") from None
        pid = os.getpid()
        body = (f"pid: {pid}\nhost: {socket.gethostname()}\nstarted: {_start_ticks(pid) or ''}\n"
                f"since: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except PermissionError as err:
                raise BadInput(f"output.dir: cannot write to {self.path.parent} ({err.strerror})") from None
            except FileExistsError:
                owner = read_lock(self.path.parent)
                if owner is None:
                    continue  # released between our two looks
                if holder_alive(owner, _age_s(self.path)):
                    raise BadInput(
                        f"--output: {self.path.parent} is in use by another run (pid {owner.get('pid')} on "
                        f"{owner.get('host')}, lock file {self.path}); wait for it, or choose another folder"
                    ) from None
                self.took_over = owner
                self.path.unlink(missing_ok=True)
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(body)
            except OSError as err:
                self.path.unlink(missing_ok=True)
                if is_disk_full(err):
                    raise DiskFull(self.path, len(body)) from None
                raise
            self.held = True
            return
        raise BadInput(f"--output: could not take the lock {self.path}: other runs keep taking it")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
