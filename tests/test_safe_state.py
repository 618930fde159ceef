"""Nothing lost, nothing half-written: resume, locks, full disks, second signals, damaged checkpoints.

Each case asserts the exit status, one line on stderr with no traceback, and that
nothing was written or the previous state is intact. The logic is tested in
process; a few cases run the real command; the kill battery (marked slow) kills a
real run with SIGKILL at 10 random instants and resumes it each time.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.files import atomic

from harness.run import resume
from harness.cli import main
from harness.errors import BadInput
from harness.run.guard import SIGTERM_ONCE_ENV, SecondSignal, StopSignals, deferred_signals
from harness.files.lock import LOCK_FILE, RunLock, live_owner
from harness.report.io import load_report
from conftest import REPO, TINY

CONFIG = "configs/digits_cnn.yaml"
TESTS = str(Path(__file__).parent)
RECIPE = [CONFIG, *TINY, "optim.scheduler.name=none"]


@pytest.fixture(autouse=True)
def at_a_terminal(monkeypatch):
    """These tests send a second SIGTERM meaning "out now": not inside a Slurm job (where a
    repeated SIGTERM is one request), even when the suite itself runs in one."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv(SIGTERM_ONCE_ENV, raising=False)


def run(out: Path, *extra: str, resume_dir: bool = False) -> int:
    target = ["--resume", str(out)] if resume_dir else ["--output", str(out)]
    return main(["run", *RECIPE, *extra, *target])


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes: "intact" means equal snapshots."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> Path:
    """A completed two-epoch run keeping both epoch checkpoints (copied by each test that changes it)."""
    from accelerate.state import AcceleratorState, PartialState

    out = tmp_path_factory.mktemp("done") / "run"
    assert run(out, "output.keep_checkpoints=2") == 0
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    return out


def copy_of(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


# --- 1. resuming a completed run ------------------------------------------------------

def test_resume_of_a_completed_run_changes_nothing(done_run, tmp_path, capsys):
    out = copy_of(done_run, tmp_path)
    before = snapshot(out)
    capsys.readouterr()
    assert run(out, resume_dir=True) == 0
    err = capsys.readouterr().err
    assert "already completed" in err and "nothing rewritten" in err and "Traceback" not in err
    assert snapshot(out) == before


@pytest.mark.slow
def test_resume_of_a_completed_run_with_more_epochs_trains_on(done_run, tmp_path):
    out = copy_of(done_run, tmp_path)
    (out / ".report.yaml.dead0001.tmp").write_text("left by a SIGKILL")
    (out / "checkpoints" / ".tmp-epoch_0003").mkdir()
    assert run(out, "train.epochs=3", resume_dir=True) == 0
    report = load_report(out)
    assert report["resumed_from_epoch"] == 2
    assert [d["epoch"] for d in report["accuracy"]["dev"]] == [1, 2, 3]
    # timing: total covers every process; process_wall_s only this one
    assert report["timing"]["total_wall_s"] > report["timing"]["process_wall_s"]
    assert report["timing"]["total_wall_s"] >= report["timing"]["train_wall_s"]
    # what a killed writer left is cleaned at the next start
    assert not (out / ".report.yaml.dead0001.tmp").exists()
    assert not (out / "checkpoints" / ".tmp-epoch_0003").exists()
    assert not (out / LOCK_FILE).exists()


# --- 2. resuming with another recipe -----------------------------------------------------

@pytest.mark.parametrize("change, named", [
    ("loader.batch_size=64", "loader.batch_size (32 -> 64)"),
    ("seed=7", "seed (0 -> 7)"),
    ("model.name=mlp", "model.name (cnn -> mlp)"),
    ("train.epochs=1", "train.epochs (2 -> 1; 2 epochs are already done)"),
    ("optim.scheduler.name=cosine", "optim.scheduler.name (none -> cosine)"),
])
def test_resume_with_another_recipe_is_refused(done_run, tmp_path, capsys, change, named):
    out = copy_of(done_run, tmp_path)
    before = snapshot(out)
    capsys.readouterr()
    assert run(out, change, resume_dir=True) == 2
    line = one_error_line(capsys.readouterr().err)
    assert named in line
    assert snapshot(out) == before


def test_recipe_changes_allow_only_what_cannot_change_the_computation():
    saved = {"seed": 0, "train": {"epochs": 2, "max_steps": None}, "optim": {"scheduler": {"name": "none"}},
             "output": {"dir": "a", "progress": False}, "measure": {"warmup_steps": 10}, "name": "x"}
    same = {**saved, "output": {"dir": "b", "progress": True}, "measure": {"warmup_steps": 1}, "name": "y",
            "train": {"epochs": 5, "max_steps": 100}}
    assert resume.recipe_changes(saved, same, epochs_done=2) == []
    cosine = {**same, "optim": {"scheduler": {"name": "cosine"}}}
    refused = resume.recipe_changes({**saved, "optim": {"scheduler": {"name": "cosine"}}}, cosine, 2)
    assert len(refused) == 1 and refused[0].startswith("train.epochs (2 -> 5; optim.scheduler.name cosine")


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
    env = {**os.environ, "PYTHONPATH": TESTS}
    cmd = [sys.executable, "-m", "harness", "run", *RECIPE, "--output", str(out)]
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


# --- 5. a second signal, leftovers -------------------------------------------------------

def test_a_second_signal_waits_for_the_deferred_block():
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.signum == signal.SIGTERM
        with pytest.raises(SecondSignal) as caught:
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                finished = True  # not interrupted inside the block
        assert finished and caught.value.signum == signal.SIGTERM


@pytest.mark.parametrize("env", [{"SLURM_JOB_ID": "4242"}, {SIGTERM_ONCE_ENV: "1"}])
def test_under_slurm_a_repeated_sigterm_is_one_request(monkeypatch, env):
    """slurmstepd signals every process of the step and the launcher forwards its own
    SIGTERM: each rank gets it two or three times, and must still checkpoint."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with StopSignals() as signals, no_second_signal():
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGTERM)
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)  # nor held for after the block
        assert signals.signum == signal.SIGTERM


@contextlib.contextmanager
def no_second_signal():
    """A SecondSignal is a KeyboardInterrupt, which would end the whole pytest session: fail one test."""
    try:
        yield
    except SecondSignal as err:
        pytest.fail(f"a repeated SIGTERM was taken as a second request: {err}")


def test_outside_slurm_a_second_sigterm_still_means_out_now():
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(SecondSignal) as caught:
            os.kill(os.getpid(), signal.SIGTERM)
        assert signals.signum == signal.SIGTERM and caught.value.signum == signal.SIGTERM


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM])
def test_under_slurm_a_second_sigint_still_means_out_now(monkeypatch, first):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with StopSignals() as signals:
        os.kill(os.getpid(), first)
        with pytest.raises(SecondSignal) as caught:
            os.kill(os.getpid(), signal.SIGINT)
        assert signals.signum == first and caught.value.signum == signal.SIGINT


def test_the_slurm_rule_is_read_when_the_handlers_are_made(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    signals = StopSignals()
    monkeypatch.delenv("SLURM_JOB_ID")
    with signals, no_second_signal():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.signum == signal.SIGTERM


def test_a_second_sigterm_while_the_report_is_written_still_writes_it(tmp_path, monkeypatch, capsys):
    """SIGTERM at step 5, and another while the report is being written: exit 143, a whole report."""
    import harness.files.run_folder as run_folder

    real = run_folder.write_report

    def signalled_while_writing(path, report):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(path, report)

    monkeypatch.setattr(run_folder, "write_report", signalled_while_writing)
    monkeypatch.syspath_prepend(TESTS)
    out = tmp_path / "run"
    code = run(out, "model.name=custom_models:SignalAt",
               f"model.kwargs={{step: 5, signum: {int(signal.SIGTERM)}, marker: {tmp_path / 'sent'}}}")
    assert code == 143
    assert "second SIGTERM" in one_error_line(capsys.readouterr().err)
    report = load_report(out)
    assert report["status"] == "interrupted"
    assert (out / "checkpoints" / "epoch_0000_step_0005").is_dir()
    assert not (out / LOCK_FILE).exists()


@pytest.mark.slow
def test_a_second_sigterm_while_a_checkpoint_is_put_in_place_keeps_it(tmp_path, monkeypatch, capsys):
    import harness.run.checkpoint as ckpt

    real = ckpt.replace_dir

    def signalled_while_replacing(new, final):
        os.kill(os.getpid(), signal.SIGTERM)  # the first: stop at the next step boundary
        os.kill(os.getpid(), signal.SIGTERM)  # the second: out, once the checkpoint is in
        return real(new, final)

    monkeypatch.setattr(ckpt, "replace_dir", signalled_while_replacing)
    out = tmp_path / "run"
    assert run(out) == 143
    capsys.readouterr()
    assert load_report(out)["status"] == "interrupted"
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch_0001"]
    assert resume.check_checkpoint(out / "checkpoints" / "epoch_0001") is None


def test_leftovers_are_cleaned_and_an_old_copy_put_back(tmp_path):
    (tmp_path / ".report.yaml.1a2b3c4d.tmp").write_text("torn")
    (tmp_path / ".tmp-epoch_0002").mkdir()
    (tmp_path / ".old-epoch_0001").mkdir()  # killed between rename-aside and move-in
    (tmp_path / ".old-epoch_0003").mkdir()  # killed before the old copy was deleted
    (tmp_path / "epoch_0003").mkdir()
    (tmp_path / ".keep.yaml").write_text("not ours")
    atomic.clean_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep.yaml", "epoch_0001", "epoch_0003"]


# --- 6. a damaged checkpoint -------------------------------------------------------------

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage, what", [
    ("model.safetensors", "truncated"),
    ("optimizer.bin", "truncated or damaged"),
    ("trainer_state.yaml", "not a trainer state"),
    # every file the harness wrote is read back with the depth cap, the trainer state too
    ("trainer_state.yaml:deep", "not a trainer state (nested more than"),
    ("random_states_0.pkl", "empty"),
])
def test_a_damaged_checkpoint_is_named_and_an_older_one_offered(done_run, tmp_path, capsys, damage, what):
    out = copy_of(done_run, tmp_path)
    (out / "report.yaml").unlink()  # as after a SIGKILL: not a completed run
    name, _, variant = damage.partition(":")
    path = out / "checkpoints" / "epoch_0002" / name
    if variant == "deep":
        path.write_text("[" * 5000 + "]" * 5000 + "\n")
    elif name == "trainer_state.yaml":
        path.write_text("- a list\n")
    elif damage.endswith(".pkl"):
        path.write_bytes(b"")
    else:
        _truncate(path)
    before = snapshot(out)
    capsys.readouterr()
    assert run(out, resume_dir=True) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{path}: {what}" in line
    assert "--resume-from epoch_0001" in line
    assert snapshot(out) == before


@pytest.mark.slow
def test_resume_from_an_older_checkpoint(done_run, tmp_path):
    out = copy_of(done_run, tmp_path)
    (out / "report.yaml").unlink()
    _truncate(out / "checkpoints" / "epoch_0002" / "model.safetensors")
    assert main(["run", "--resume", str(out), "--resume-from", "epoch_0001"]) == 0
    report = load_report(out)
    assert report["resumed_from_epoch"] == 1 and report["status"] == "completed"
    w = torch.load(out / "model.pt", weights_only=True)
    ref = torch.load(done_run / "model.pt", weights_only=True)
    assert all(torch.equal(w[k], ref[k]) for k in ref)


def test_resume_from_needs_a_checkpoint_of_the_run(done_run, tmp_path, capsys):
    out = copy_of(done_run, tmp_path)
    assert main(["run", "--resume", str(out), "--resume-from", "epoch_0009"]) == 2
    assert "kept: epoch_0001, epoch_0002" in one_error_line(capsys.readouterr().err)
    assert main(["run", CONFIG, "--resume-from", "epoch_0001"]) == 2
    assert "needs --resume" in one_error_line(capsys.readouterr().err)


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


# --- the kill battery ----------------------------------------------------------------------

KILLS = 10


@pytest.mark.slow
def test_sigkill_at_random_instants_then_resume_ends_with_the_same_weights(tmp_path):
    """One run killed at 10 random instants over its life (setup, steps, evaluation,
    checkpoints, the report), resumed after each; it ends where an uninterrupted one does."""
    common = [*RECIPE, "train.epochs=4", "model.name=custom_models:Slow", "model.kwargs={sleep_ms: 15}"]
    env = {**os.environ, "PYTHONPATH": TESTS}
    whole, part = tmp_path / "whole", tmp_path / "part"
    ref = subprocess.run([sys.executable, "-m", "harness", "run", *common, "--output", str(whole)],
                         cwd=REPO, capture_output=True, text=True, env=env)
    assert ref.returncode == 0, ref.stderr
    span_s = load_report(whole)["timing"]["process_wall_s"]
    rng = random.Random(20261125)
    outcomes = []
    def next_args():
        # A kill between taking the lock and writing config.yaml leaves a folder holding only
        # a stale lock: no run to resume there, so the user starts it again (a lock alone is no run).
        return ["--resume", str(part)] if (part / "config.yaml").exists() else [*common, "--output", str(part)]

    for k in range(KILLS):
        args = next_args()
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Instants over the process's life: import and setup, then every phase of training.
        time.sleep(rng.uniform(0.5, span_s * 1.2))
        proc.kill()
        err = proc.communicate(timeout=60)[1]
        outcomes.append((proc.returncode, round(time.monotonic() - t0, 2)))
        assert proc.returncode in (-signal.SIGKILL, 0), err
        if (part / "report.yaml").exists():
            load_report(part)  # never torn
        for folder in (part / "checkpoints").glob("epoch_*"):
            assert resume.check_checkpoint(folder) is None, folder  # never a half checkpoint
    args = next_args()
    done = subprocess.run([sys.executable, "-m", "harness", "run", *args], cwd=REPO, capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, (outcomes, done.stderr)
    assert sum(code == -signal.SIGKILL for code, _ in outcomes) >= KILLS // 2, outcomes
    a, b = load_report(whole), load_report(part)
    assert b["status"] == "completed"
    assert a["accuracy"]["dev"] == b["accuracy"]["dev"]
    wa = torch.load(whole / "model.pt", weights_only=True)
    wb = torch.load(part / "model.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# --- 9, 10. sweeps: signals, orphans, changed recipes ---------------------------------------

def _sweep_file(tmp_path: Path, seed: int) -> Path:
    import yaml

    spec = {"base": {"config": str(REPO / CONFIG), "overrides": {"seed": seed, "train.epochs": 1}},
            "cells": [{"loader.batch_size": 32}, {"loader.batch_size": 64}], "time_limit_s": 60}
    path = tmp_path / "sweep.in.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def fake_cells(monkeypatch):
    """Cells that 'run' instantly: the sweep's bookkeeping is under test, not training."""
    from harness.sweep import command as sweep

    ran = []

    def fake(spec, cell, cell_dir):
        ran.append(cell.id)
        return {"id": cell.id, "config_hash": cell.config_hash, "axes": cell.axes,
                "status": "completed", "error": None}

    monkeypatch.setattr(sweep, "run_with_backoff", fake)
    return ran


def test_sweep_resume_reruns_a_cell_whose_resolved_config_changed(tmp_path, fake_cells):
    out = tmp_path / "out"
    assert main(["sweep", str(_sweep_file(tmp_path, seed=0)), "--output", str(out)]) == 0
    assert len(fake_cells) == 2
    assert main(["sweep", str(_sweep_file(tmp_path, seed=0)), "--output", str(out), "--resume"]) == 0
    assert len(fake_cells) == 2  # nothing changed: nothing re-run
    assert main(["sweep", str(_sweep_file(tmp_path, seed=1)), "--output", str(out), "--resume"]) == 0
    assert len(fake_cells) == 4  # same axes, another base: both re-run


def test_sweep_resume_refuses_to_run_beside_a_live_orphan(tmp_path, fake_cells, capsys):
    from harness.report.io import dump

    out = tmp_path / "out"
    path = _sweep_file(tmp_path, seed=0)
    assert main(["sweep", str(path), "--output", str(out)]) == 0
    body = __import__("yaml").safe_load((out / "sweep.yaml").read_text())
    body["cells"] = body["cells"][:1]  # as if the sweep was killed during the second cell
    (out / "sweep.yaml").write_text(dump(body))
    orphan = out / "cells" / body_id(path, 1)
    with RunLock(orphan):  # the orphan: a live process holding the cell's folder
        capsys.readouterr()
        assert main(["sweep", str(path), "--output", str(out), "--resume"]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"{orphan} is still being run by pid {os.getpid()}" in line
    assert len(fake_cells) == 2


def body_id(path: Path, index: int) -> str:
    from harness.sweep.spec import load_sweep

    return load_sweep(str(path)).cells[index].id


def test_sigterm_to_a_sweep_records_the_running_cell(tmp_path, monkeypatch, capsys):
    from harness.sweep import command as sweep

    def signalled(spec, overrides, cell_dir, launch=None, config_file=None):
        cell_dir.mkdir(parents=True, exist_ok=True)
        raise sweep.SweepStopped(signal.SIGTERM)  # as the handler does, the cell stopped with it

    monkeypatch.setattr(sweep, "run_cell", signalled)
    out = tmp_path / "out"
    assert main(["sweep", str(_sweep_file(tmp_path, seed=0)), "--output", str(out)]) == 143
    assert "interrupted (stopped by SIGTERM)" in capsys.readouterr().err
    rows = __import__("yaml").safe_load((out / "sweep.yaml").read_text())["cells"]
    assert [r["status"] for r in rows] == ["interrupted", "pending"]


# --- 13. launch ----------------------------------------------------------------------------

def test_launch_keeps_resume_and_its_value(done_run, tmp_path, capsys):
    out = copy_of(done_run, tmp_path)
    assert main(["launch", "--mode", "ddp", "--nproc", "2", "--resume", str(out), "--dry-run"]) == 0
    cmd = capsys.readouterr().out.split()
    run_args = cmd[cmd.index("harness") + 2:]
    assert run_args[-2:] == ["--resume", str(out)]
    assert str(out) not in run_args[:-1]  # not taken for the config


# --- 12. mid-epoch resume with compile -------------------------------------------------------

def test_skipping_batches_keeps_the_compile_wrapper_and_device_placement():
    from accelerate import Accelerator
    from accelerate.data_loader import DataLoaderShard
    from torch.utils.data import DataLoader, TensorDataset

    from harness.run.accel import DynamicBatchDim
    from harness.run.fit import skip_in_epoch

    acc = Accelerator(cpu=True)
    data = TensorDataset(torch.arange(40, dtype=torch.float32).reshape(20, 2), torch.zeros(20, dtype=torch.long))
    loader = DynamicBatchDim(acc.prepare(DataLoader(data, batch_size=6)))
    skipped = skip_in_epoch(loader, 2, acc)
    assert isinstance(skipped, DynamicBatchDim) and isinstance(skipped.loader, DataLoaderShard)
    batches = list(skipped)
    assert [len(x) for x, _ in batches] == [6, 2]  # batches 3 and 4 of 4
    assert torch.equal(batches[0][0][0], torch.tensor([24.0, 25.0]))
    assert all(x.device == acc.device for x, _ in batches)
    # maybe_mark_dynamic(inputs, 0) ran on every batch
    assert all(0 in getattr(x, "_dynamo_weak_dynamic_indices", ()) for x, _ in batches)


def _processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if text in line and "ps -eo" not in line]


@pytest.mark.slow
def test_sigterm_to_launch_reaches_its_ranks_and_waits_for_them(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": TESTS}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "launch", "--mode", "ddp", "--nproc", "2", *RECIPE,
                             "train.epochs=30", "model.name=custom_models:Slow", "model.kwargs={sleep_ms: 20}",
                             "--output", str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "epoch_0001").exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the ranks never reached epoch 1"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err[-3000:]
    report = load_report(out)
    assert report["status"] == "interrupted" and "SIGTERM" in report["error"]
    assert not _processes_mentioning(str(out))  # no rank left running, re-parented to PID 1
    assert not (out / LOCK_FILE).exists()


@pytest.mark.slow
@pytest.mark.distributed
def test_under_slurm_sigterm_to_every_process_still_checkpoints_and_launch_waits_for_the_ranks(tmp_path):
    """As at a Slurm time limit: slurmstepd signals every process of the step and the launchers
    forward theirs, so each rank gets SIGTERM twice (one request: it checkpoints), and torchrun's
    agent too (it dies at the second, its ranks in their own sessions still writing)."""
    import psutil

    out = tmp_path / "out"
    marker = tmp_path / "training"
    save_s = 8  # longer than the 5 s harness launch gives its launcher's stderr to close
    env = {**os.environ, "PYTHONPATH": TESTS, "SLURM_JOB_ID": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "launch", "--mode", "ddp", "--nproc", "2", *RECIPE,
                             "train.epochs=30", "output.checkpoint_every_epoch=false",
                             "model.name=custom_models:SlowToSave",
                             f"model.kwargs={{marker: {marker}, sleep_ms: 20, save_s: {save_s}}}",
                             "--output", str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the ranks never started training"
        time.sleep(0.1)
    # harness launch -> accelerate's launcher (torchrun's agent) -> the ranks
    (launcher,) = psutil.Process(proc.pid).children()
    ranks = launcher.children()
    assert len(ranks) == 2
    for p in (proc, launcher, *ranks):
        p.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # srun's or a wrapper's forward, later: torchrun's agent is closing its workers
    launcher.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert not _processes_mentioning(str(out)), err[-3000:]  # harness launch waited for its ranks
    assert proc.returncode == 143, err[-3000:]
    report = load_report(out)
    assert report["status"] == "interrupted"
    # stopped at a boundary and checkpointed, not "a second signal: no checkpoint of this epoch"
    assert report["error"].startswith("interrupted by SIGTERM; the state is checkpointed"), report["error"]
    (last,) = (out / "checkpoints").iterdir()
    assert resume.check_checkpoint(last) is None
    assert not (out / LOCK_FILE).exists()


def test_a_rank_without_an_exit_note_is_named(tmp_path):
    import json

    from harness.launch.command import _silent_message, first_failure, silent_ranks

    for rank in (0, 1):
        (tmp_path / f"rank{rank}.start.json").write_text(json.dumps({"rank": rank, "pid": 100 + rank, "time": 1.0}))
    (tmp_path / "rank0.json").write_text(json.dumps(
        {"rank": 0, "code": 1, "message": "error: RuntimeError: Connection closed by peer", "time": 2.0}))
    (tmp_path / "rank1.fault").write_text("Fatal Python error: Segmentation fault\n\nThread 0x01 ...\n")
    silent = silent_ranks(tmp_path)
    assert [(s["rank"], s["fault"]) for s in silent] == [(1, "Fatal Python error: Segmentation fault")]
    message = _silent_message(silent, first_failure(tmp_path))
    assert message == ("error: rank 1 (pid 101) ended without a note: Fatal Python error: Segmentation fault; "
                       "then rank 0 failed: RuntimeError: Connection closed by peer")


def test_a_silent_ranks_exit_status_is_read_from_the_launchers_summary():
    from harness.launch.command import exit_status_in

    summary = """Failures:
[1]:
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 15909)  (SIGKILL)
Root Cause (first observed failure):
[0]:
  rank      : 0 (local_rank: 0)
  exitcode  : 7 (pid: 15908)
"""
    assert exit_status_in(summary, 15909) == "killed by SIGKILL"
    assert exit_status_in(summary, 15908) == "exit code 7"
    assert exit_status_in(summary, 4242) is None


@pytest.mark.slow
@pytest.mark.parametrize("model, cause, status", [("ExitOnRank", "died without a word", "exit code 7"),
                                                  ("SegfaultOnRank", "Segmentation fault", "killed by SIGSEGV")])
def test_a_rank_that_dies_without_a_note_is_blamed(tmp_path, model, cause, status):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "harness", "launch", "--mode", "ddp", "--nproc", "2", *RECIPE,
                           f"model.name=custom_models:{model}", "model.kwargs={rank: 1, step: 3}",
                           "--output", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": TESTS})
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: rank 1 (pid ") and cause in last, last
    assert status in last, last
    report = load_report(out)
    assert report["status"] == "failed" and report["failed_rank"] == 1 and cause in report["error"]


def test_the_launch_preflight_probes_the_model(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(TESTS)
    code = main(["launch", "--mode", "ddp", "--nproc", "2", *RECIPE, "model.name=custom_models:WrongWidth",
                 "--output", str(tmp_path / "out"), "--dry-run"])
    assert code == 2
    assert "layer 'fc2'" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_sigterm_to_a_real_sweep_stops_and_records_its_cell(tmp_path):
    import yaml

    spec = {"base": {"config": str(REPO / CONFIG),
                     "overrides": {"data.subset": 360, "train.epochs": 30, "measure.warmup_steps": 1,
                                   "output.progress": False, "model.name": "custom_models:Slow",
                                   "model.kwargs": {"sleep_ms": 20}}},
            "cells": [{"loader.batch_size": 32}, {"loader.batch_size": 64}], "time_limit_s": 300}
    path = tmp_path / "sweep.in.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": TESTS}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "sweep", str(path), "--output", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(out.glob("cells/*/checkpoints/epoch_0001")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the first cell never reached epoch 1"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err[-3000:]
    rows = yaml.safe_load((out / "sweep.yaml").read_text())["cells"]
    assert [r["status"] for r in rows] == ["interrupted", "pending"]
    cell = out / "cells" / rows[0]["id"]
    assert load_report(cell)["status"] == "interrupted"
    assert not _processes_mentioning(str(cell))  # the cell did not run on


@pytest.mark.slow
def test_sigterm_to_whole_run_repeats_reaches_the_repeat_and_writes_the_report(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *RECIPE, "train.epochs=30",
                             "model.name=custom_models:Slow", "model.kwargs={sleep_ms: 20}", "measure.repeats=2",
                             "measure.repeat_unit=run", "--output", str(out)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": TESTS}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "repeat_01" / "checkpoints" / "epoch_0001").exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the first repeat never reached epoch 1"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err[-3000:]
    assert load_report(out)["status"] == "interrupted"  # the top-level report
    assert load_report(out / "repeat_01")["status"] == "interrupted"
    assert not (out / "repeat_02").exists()
    assert not _processes_mentioning(str(out))
    assert not (out / LOCK_FILE).exists()
