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
import shutil
import socket
import stat
import time
from pathlib import Path

from harness.files.atomic import DiskFull, is_disk_full
from harness.files.clock import now
from harness.process.pids import same_process, started_at
from harness.errors import BadInput

LOCK_FILE = ".lock"


def _started(pid: int) -> str:
    """The owner's start time (seconds since the epoch): a later process given its pid is not it."""
    started = started_at(pid)
    return "" if started is None else f"{started:.2f}"


def read_lock(folder: Path) -> dict | None:
    """The lock's owner {pid, host, started, since}, or None when unlocked. Torn content reads as {}.

    A ``.lock`` this harness cannot have written (a folder, a link, a device, binary or
    unrelated content) reads as ``{"foreign": what it is}``: never taken over, never
    presumed to be a live run.
    """
    path = Path(folder) / LOCK_FILE
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as err:
        return {"foreign": f"unreadable ({err.strerror or err})"}
    if stat.S_ISDIR(info.st_mode):
        return {"foreign": "a folder, not a lock file"}
    if not stat.S_ISREG(info.st_mode):
        return {"foreign": "not a regular file (a link, a device or a pipe)"}
    try:
        with path.open("rb") as f:
            data = f.read(MAX_LOCK_BYTES + 1)
    except FileNotFoundError:
        return None  # released between our two looks
    except OSError as err:
        return {"foreign": f"unreadable ({err.strerror or err})"}
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return {"foreign": "not a lock this harness wrote (binary content)"}
    owner = {}
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        owner[key.strip()] = value.strip()
    if len(data) > MAX_LOCK_BYTES or (text.strip() and not owner.keys() & {"pid", "host", "started", "since"}):
        return {"foreign": "not a lock this harness wrote"}
    return owner


MAX_LOCK_BYTES = 1024
"""A lock holds four short lines."""


TORN_AFTER_S = 5.0
"""A lock file without its owner's pid and host this old was left by a writer killed
between creating it and writing it (a live one takes microseconds)."""


def holder_alive(owner: dict, age_s: float = 0.0) -> bool:
    """Whether the lock's owner may still run (a lock from another host is presumed alive)."""
    if "foreign" in owner:
        return False  # no run's lock: the lock's taker refuses it by name
    if not owner.get("pid") or not owner.get("host"):
        return age_s < TORN_AFTER_S
    if owner.get("host") != socket.gethostname():
        return True
    try:
        pid = int(owner["pid"])
    except ValueError:
        return False
    try:
        started = float(owner.get("started") or "")
    except ValueError:
        started = None  # not recorded: the pid alone says
    return same_process(pid, started)


def live_owner(folder: Path) -> dict | None:
    """The owner of ``folder``'s lock when it is held by a live run, else None."""
    owner = read_lock(folder)
    return owner if owner is not None and holder_alive(owner, _age_s(Path(folder) / LOCK_FILE)) else None


def _first_missing(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist yet (None: all exist)."""
    missing = None
    for p in (folder, *folder.parents):
        if os.path.lexists(p):
            return missing
        missing = p
    return missing


def _named(folder: Path) -> str:
    """``folder``, and where it really is when a link leads elsewhere (e.g. into /proc)."""
    try:
        real = folder.resolve()
    except (OSError, RuntimeError):
        return str(folder)
    return str(folder) if real == folder.absolute() else f"{folder} (really {real})"


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
        self.created: Path | None = None
        """The outermost folder that taking the lock created (None: the folder existed)."""

    def acquire(self) -> None:
        if not self.enabled:
            return
        folder = self.path.parent
        self.created = _first_missing(folder)
        try:
            self._take(folder)
        except BaseException:
            self.remove_created()  # a refused command leaves no folder behind
            raise

    def remove_created(self) -> None:
        """Remove the folder this lock created (with everything in it), if it did."""
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)
            self.created = None

    def _take(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            if is_disk_full(err):
                raise DiskFull(folder, None) from None
            raise BadInput(f"output.dir: cannot write to {_named(folder)} ({err.strerror or err})") from None
        pid = os.getpid()
        body = (f"pid: {pid}\nhost: {socket.gethostname()}\nstarted: {_started(pid)}\n"
                f"since: {now()}\n")
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
            except FileExistsError:
                owner = read_lock(folder)
                if owner is None:
                    continue  # released between our two looks
                if "foreign" in owner:
                    raise BadInput(f"--output: {self.path} is {owner['foreign']}; remove it if no run "
                                   f"uses {folder}") from None
                if holder_alive(owner, _age_s(self.path)):
                    raise BadInput(
                        f"--output: {folder} is in use by another run (pid {owner.get('pid')} on "
                        f"{owner.get('host')}, lock file {self.path}); wait for it, or choose another folder"
                    ) from None
                self.took_over = owner
                self.path.unlink(missing_ok=True)
                continue
            except OSError as err:  # e.g. a folder under /proc, a read-only file system
                if is_disk_full(err):
                    raise DiskFull(self.path, len(body)) from None
                raise BadInput(f"output.dir: cannot write to {_named(folder)} ({err.strerror or err})") from None
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(body)
            except OSError as err:
                self.path.unlink(missing_ok=True)
                if is_disk_full(err):
                    raise DiskFull(self.path, len(body)) from None
                raise BadInput(f"output.dir: cannot write to {_named(folder)} ({err.strerror or err})") from None
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
