"""The run's files: one run per folder (locks), a full disk, leftovers, replacing a checkpoint, file modes."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch

from harness.errors import BadInput
from harness.files import atomic
from harness.files.lock import LOCK_FILE, RunLock, live_owner
from harness.run import resume
from support.cli import run_in_process
from support.folders import one_error_line, snapshot
from support.paths import REPO, TESTS_PATH
from support.recipes import SAFE_RECIPE

run = partial(run_in_process, SAFE_RECIPE)


# --- 3. one run per folder ---------------------------------------------------------------

def test_a_second_run_into_a_held_folder_is_bad_input(tmp_path, capsys):
    out = tmp_path / "run"
    with RunLock(out):  # held by a live process: this one
        before = snapshot(out)
        assert run(out) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "in use by another run" in line and f"pid {os.getpid()}" in line
        assert snapshot(out) == before


def test_a_stale_lock_is_taken_over_and_a_foreign_one_is_not(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_FILE).write_text(f"pid: {dead.stdout.strip()}\nhost: {socket.gethostname()}\n")
    assert live_owner(tmp_path) is None
    with RunLock(tmp_path) as lock:
        assert lock.took_over["pid"] == dead.stdout.strip()
        assert live_owner(tmp_path)["pid"] == str(os.getpid())
    assert not (tmp_path / LOCK_FILE).exists()
    (tmp_path / LOCK_FILE).write_text("pid: 1\nhost: another-host.example\n")
    with pytest.raises(BadInput, match="in use by another run"):
        RunLock(tmp_path).acquire()
    (tmp_path / LOCK_FILE).write_text("pid: \n")  # torn: its writer died while writing it ...
    with pytest.raises(BadInput, match="in use by another run"):
        RunLock(tmp_path).acquire()  # ... or is writing it right now
    os.utime(tmp_path / LOCK_FILE, (time.time() - 60, time.time() - 60))
    with RunLock(tmp_path) as lock:
        assert lock.held


def test_a_reused_pid_does_not_hold_the_lock(tmp_path):
    """Our own pid, but a start time that is not ours: the pid was reused, the lock is stale."""
    (tmp_path / LOCK_FILE).write_text(f"pid: {os.getpid()}\nhost: {socket.gethostname()}\nstarted: 1\n")
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        pytest.skip("no /proc: a process's start time cannot be read here")
    assert live_owner(tmp_path) is None


# --- 4. a full disk ----------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """A tmpfs of the size asked, where this test may mount one (root on Linux)."""
    mounts = []

    def make(size_kb: int) -> Path:
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'mount failed'}); "
                        "a full disk is tested on a small tmpfs only")
        mounts.append(folder)
        return folder

    yield make
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_disk_names_the_path_and_bytes_and_leaves_the_old_file(tiny_disk):
    disk = tiny_disk(200)
    target = disk / "model.pt"
    atomic.write_bytes_atomic(target, b"old")
    with pytest.raises(atomic.DiskFull) as caught:
        atomic.write_atomic(target, lambda f: torch.save({"w": torch.zeros(100_000)}, f), binary=True)
    message = str(caught.value)
    assert message.startswith(f"no space left on device: writing {target} needs ")
    assert "unexpected pos" not in message
    assert caught.value.needed > 400_000 and caught.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in disk.iterdir()) == ["model.pt"]  # no temporary file left


@pytest.mark.slow
def test_a_full_disk_fails_the_run_in_one_line_and_keeps_the_last_checkpoint(tiny_disk, tmp_path):
    """Room for one epoch checkpoint (about 770 KB) but not for a second beside it."""
    out = tiny_disk(1000) / "run"
    env = {**os.environ, "PYTHONPATH": TESTS_PATH}
    cmd = [sys.executable, "-m", "harness", "run", *SAFE_RECIPE, "--output", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc.stderr)
    assert f"no space left on device: writing {out}/checkpoints/epoch_0002 needs " in line
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch_0001"]
    assert resume.check_checkpoint(out / "checkpoints" / "epoch_0001") is None
    kept = snapshot(out / "checkpoints")
    # at resume too: the same one line, and the last good checkpoint stays
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--resume", str(out)], cwd=REPO,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "no space left on device" in one_error_line(proc.stderr)
    assert snapshot(out / "checkpoints") == kept
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and p.name != LOCK_FILE]
    assert not (out / LOCK_FILE).exists()


# --- 5. leftovers --------------------------------------------------------------------------

def test_leftovers_are_cleaned_and_an_old_copy_put_back(tmp_path):
    (tmp_path / ".report.yaml.1a2b3c4d.tmp").write_text("torn")
    (tmp_path / ".tmp-epoch_0002").mkdir()
    (tmp_path / ".old-epoch_0001").mkdir()  # killed between rename-aside and move-in
    (tmp_path / ".old-epoch_0003").mkdir()  # killed before the old copy was deleted
    (tmp_path / "epoch_0003").mkdir()
    (tmp_path / ".keep.yaml").write_text("not ours")
    atomic.clean_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep.yaml", "epoch_0001", "epoch_0003"]


# --- 7, 8. replacing a checkpoint, file modes ---------------------------------------------

def test_replace_dir_keeps_a_complete_folder_at_every_step(tmp_path):
    final, new = tmp_path / "epoch_0001", tmp_path / ".tmp-epoch_0001"
    final.mkdir()
    (final / "a").write_text("old")
    new.mkdir()
    (new / "a").write_text("new")
    atomic.replace_dir(new, final)
    assert (final / "a").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0001"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = atomic.write_text_atomic(tmp_path / "report.yaml", "x: 1\n")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_checkpoint_files_get_the_mode_the_umask_gives(done_run):
    mode = atomic.file_mode()
    files = [p for p in done_run.rglob("*") if p.is_file()]
    assert files and all(p.stat().st_mode & 0o777 == mode for p in files)
