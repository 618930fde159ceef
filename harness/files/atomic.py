"""Atomic file writes: a reader (or a kill) sees the old file or the new one, never a torn one.

Every write goes to a temporary name beside its target (``.NAME.XXXXXXXX.tmp``, a
folder ``.tmp-NAME``), is flushed to disk, then renamed into place, and the folder
holding it is fsynced so the rename itself survives a power cut. A kill leaves at
most such a temporary name, which ``clean_leftovers`` removes at the next start.

Files get the mode the user's umask gives (as ``open`` would), not mkstemp's 0600:
team-mates on a shared cluster read each other's reports.

A full disk is one ``DiskFull`` error naming the path and the bytes it needed, and
leaves nothing behind.
"""

from __future__ import annotations

import errno
import io
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable

TMP_SUFFIX = ".tmp"
TMP_DIR_PREFIX = ".tmp-"
OLD_DIR_PREFIX = ".old-"


class DiskFull(OSError):
    """No space left for a write; the previous file (if any) is intact."""

    def __init__(self, path: Path, needed: int | None):
        self.path, self.needed = Path(path), needed
        try:
            free = shutil.disk_usage(_existing_parent(self.path)).free
        except OSError:
            free = None
        need = f"{needed:,} bytes" if needed is not None else "more space"
        have = f", {free:,} free" if free is not None else ""
        super().__init__(errno.ENOSPC, f"no space left on device: writing {self.path} needs {need}{have}")

    def __str__(self) -> str:
        return self.strerror

    @classmethod
    def with_message(cls, message: str) -> "DiskFull":
        err = cls.__new__(cls)
        OSError.__init__(err, errno.ENOSPC, message)
        err.path, err.needed = None, None
        return err


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC/EDQUOT, as an OSError or in the words of a writer that wraps it: torch's zip
    writer reporting its short write ("unexpected pos ..."), safetensors' "os error 28"."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    if "No space left on device" in text or "os error 28" in text:
        return True
    return isinstance(err, RuntimeError) and ("unexpected pos" in text or "failed writing" in text)


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give: 0666 less the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[object], None], binary: bool = False) -> Path:
    """Call ``write(fileobj)``, then put its bytes in place of ``path`` atomically.

    ``write`` writes to memory first: the size needed is then known before the disk
    is touched, and a short write (a full disk) can never reach a half-written
    serializer such as torch's zip writer, which would call it "unexpected pos".
    """
    path = Path(path)
    buffer = io.BytesIO() if binary else io.StringIO()
    write(buffer)
    data = buffer.getvalue()
    if not binary:
        data = data.encode()
    return write_bytes_atomic(path, data)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if is_disk_full(err):
            raise DiskFull(path.parent, len(data)) from None
        raise
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if is_disk_full(err):
            raise DiskFull(path, len(data)) from None
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(Path(path), text.encode())


def replace_dir(new: Path, final: Path) -> None:
    """Put the complete folder ``new`` at ``final``; an old ``final`` goes only once the new is in.

    Old renamed aside, new renamed in, the parent fsynced, then the old deleted: at
    every instant one complete folder holds the name or its ``.old-`` copy, which
    ``clean_leftovers`` puts back after a kill.
    """
    parent = final.parent
    old = parent / f"{OLD_DIR_PREFIX}{final.name}"
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    new.rename(final)
    fsync_dir(parent)
    shutil.rmtree(old, ignore_errors=True)


def clean_leftovers(folder: Path) -> list[Path]:
    """Remove what a killed writer left in ``folder``: temporary files and folders.

    Call only while holding the folder's lock (a live writer's temporary names look
    the same). An ``.old-NAME`` folder whose ``NAME`` is missing is the only copy left
    by a kill inside ``replace_dir``: it is put back, not removed.
    """
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        name = p.name
        if name.startswith(OLD_DIR_PREFIX) and p.is_dir():
            target = folder / name[len(OLD_DIR_PREFIX):]
            if not target.exists():
                p.rename(target)
                continue
        elif not ((name.startswith(".") and name.endswith(TMP_SUFFIX) and p.is_file())
                  or (name.startswith(TMP_DIR_PREFIX) and p.is_dir())):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed
