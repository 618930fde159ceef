"""A folder that holds an earlier run: refused without --overwrite, cleared with it.

Also: a full disk while extending a completed run keeps its report, and an inference
measurement stopped by an exception leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from harness.files import run_folder
from harness.cli import main
from harness.errors import BadInput
from harness.files.lock import LOCK_FILE
from harness.report.io import load_report
from support.cli import run_in_process
from support.paths import REPO
from support.recipes import CONFIG, TINY

SMALL = [*TINY, "data.subset=160"]  # later overrides win
INFERENCE = ["scenario=inference", "inference.batch_sizes=[1,4]", "inference.batches=2",
             "inference.warmup_batches=1"]


run = partial(run_in_process, [CONFIG, *SMALL])


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes (links as their targets' names)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """A completed tiny run, with an evaluation and an inference measurement beside it."""
    out = tmp_path_factory.mktemp("done") / "run"
    assert main(["run", CONFIG, *SMALL, "--output", str(out)]) == 0
    (out / "eval-test.yaml").write_text("accuracy: 0.5\n")  # stands for `harness evaluate`'s file
    (out / "inference").mkdir()
    (out / "inference" / "report.yaml").write_text("scenario: inference\n")
    return out


def copy_of(done: Path, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(done, out, symlinks=True)
    return out


# --- a completed run's folder ---------------------------------------------------------

def test_a_second_run_into_a_completed_run_is_refused_and_touches_nothing(done, tmp_path, capsys):
    out = copy_of(done, tmp_path)
    before = snapshot(out)
    assert run(out, "seed=1") == 2
    line = one_error_line(capsys)
    assert f"--output: {out} holds an earlier run (report.yaml" in line
    assert f"--resume {out}" in line and "--overwrite" in line
    assert snapshot(out) == before  # report.yaml byte-identical, no lock left


def test_overwrite_clears_the_old_runs_files_first(done, tmp_path):
    out = copy_of(done, tmp_path)
    (out / "notes.txt").write_text("mine\n")  # not the harness's: kept
    old = (out / "report.yaml").read_bytes()
    assert run(out, "seed=1", "--overwrite") == 0
    assert (out / "report.yaml").read_bytes() != old and load_report(out)["config"]["seed"] == 1
    assert not (out / "eval-test.yaml").exists() and not (out / "inference").exists()
    assert (out / "notes.txt").read_text() == "mine\n"


def test_a_new_seed_into_a_used_folder_keeps_neither_runs_checkpoints_mixed(tmp_path, capsys):
    """keep_checkpoints=1 used to keep the older run's epoch_0002 and delete the new run's
    epoch_0001, so the new run's own resume was refused."""
    out = tmp_path / "run"
    assert run(out, "train.epochs=2") == 0
    assert run(out, "seed=1", "train.epochs=1") == 2
    assert "holds an earlier run" in one_error_line(capsys)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch_0002"]
    assert run(out, "seed=1", "train.epochs=1", "optim.scheduler.name=none", "--overwrite") == 0
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch_0001"]
    assert main(["run", "--resume", str(out), "train.epochs=2"]) == 0
    report = load_report(out)
    assert report["resumed_from_epoch"] == 1 and report["config"]["seed"] == 1


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_an_inference_run_into_a_killed_training_runs_folder_is_refused(done, tmp_path, capsys):
    """A SIGKILLed run leaves config.yaml, checkpoints and a stale lock, no report: the
    inference run used to replace its config.yaml, after which --resume was refused."""
    out = copy_of(done, tmp_path)
    (out / "report.yaml").unlink()
    (out / LOCK_FILE).write_text(f"pid: {_dead_pid()}\nhost: {socket.gethostname()}\nstarted: 1\n")
    config = (out / "config.yaml").read_bytes()
    assert main(["run", CONFIG, *SMALL, *INFERENCE, "--output", str(out)]) == 2
    line = one_error_line(capsys)
    assert "holds an earlier run (config.yaml" in line and "--overwrite" in line
    assert (out / "config.yaml").read_bytes() == config
    assert main(["run", "--resume", str(out)]) == 0
    assert load_report(out)["status"] == "completed"


def test_bench_inference_into_an_earlier_measurement_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench-inference", CONFIG, *SMALL, *INFERENCE[1:], "--output", str(out)]
    assert main(argv) == 0
    before = snapshot(out)
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "holds an earlier run (report.yaml" in line and "--resume" not in line
    assert snapshot(out) == before
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "report.yaml").read_bytes() != before["report.yaml"]


def test_whole_run_repeats_and_launch_refuse_a_used_folder_before_starting(done, tmp_path, capsys):
    out = copy_of(done, tmp_path)
    before = snapshot(out)
    assert run(out, "measure.repeats=2", "measure.repeat_unit=run") == 2
    assert "holds an earlier run" in one_error_line(capsys)
    assert main(["launch", "--mode", "cpu", CONFIG, *SMALL, "--output", str(out)]) == 2
    assert "holds an earlier run" in one_error_line(capsys)
    assert snapshot(out) == before
    # --overwrite goes on to every rank (rank 0 clears the folder under its lock)
    assert main(["launch", "--mode", "cpu", "--dry-run", CONFIG, *SMALL, "--output", str(out), "--overwrite"]) == 0
    assert capsys.readouterr().out.split()[-3:] == ["--output", str(out), "--overwrite"]


def test_overwrite_and_resume_together_are_refused(done, tmp_path, capsys):
    out = copy_of(done, tmp_path)
    before = snapshot(out)
    assert main(["run", "--resume", str(out), "--overwrite"]) == 2
    assert "--overwrite: not with --resume" in one_error_line(capsys)
    assert snapshot(out) == before


def test_make_run_works_twice_in_a_row(tmp_path):
    """`make run` passes --overwrite: the default recipe's folder is the make target's to replace."""
    proc = subprocess.run(["make", "-n", "run", "VENV=/nonexistent"], cwd=REPO, capture_output=True, text=True)
    line = next(ln for ln in proc.stdout.splitlines() if "/bin/harness run" in ln)
    args = line.split("/bin/harness ", 1)[1].split()
    assert "--overwrite" in args
    for _ in range(2):
        assert main([*args, *SMALL, "--output", str(tmp_path / "run")]) == 0


# --- what --overwrite removes ---------------------------------------------------------

def test_overwrite_removes_only_the_runs_names_and_follows_no_link(tmp_path):
    outside = tmp_path / "outside"
    (outside / "ckpt").mkdir(parents=True)
    (outside / "ckpt" / "keep.bin").write_bytes(b"x")
    (outside / "eval.yaml").write_text("keep\n")
    out = tmp_path / "run"
    (out / "inference").mkdir(parents=True)
    (out / "report.yaml").write_text("status: completed\n")
    (out / "config.yaml").write_text("tracking: {project: tb, log_with: [tensorboard]}\n")
    (out / "tb").mkdir()  # TensorBoard's folder, named by the old run's tracking.project
    (out / "wandb").mkdir()  # the old run logged to no wandb: the user's own folder
    (out / "inference" / "report.yaml").write_text("scenario: inference\n")
    (out / "repeat_01").mkdir()
    os.symlink(outside / "ckpt", out / "checkpoints")
    os.symlink(outside / "eval.yaml", out / "eval-test.yaml")
    os.symlink(outside, out / "inference" / "up")
    (out / "notes.txt").write_text("mine\n")
    (out / "data").mkdir()

    with pytest.raises(BadInput, match="holds an earlier run"):
        run_folder.claim(out, overwrite=False)
    assert len(run_folder.run_entries(out)) == 7
    run_folder.claim(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["data", "notes.txt", "wandb"]
    assert (outside / "ckpt" / "keep.bin").read_bytes() == b"x" and (outside / "eval.yaml").read_text() == "keep\n"


def test_a_folder_with_only_a_lock_leftovers_or_own_folders_holds_no_run(tmp_path):
    (tmp_path / LOCK_FILE).write_text("pid: 1\n")
    (tmp_path / ".report.yaml.1234abcd.tmp").write_text("torn")
    (tmp_path / "notes.txt").write_text("mine\n")
    for name in ("inference", "profile", "wandb", "harness"):  # names a run writes only when asked
        (tmp_path / name).mkdir()
    assert run_folder.run_entries(tmp_path) == []
    run_folder.check_unused(tmp_path, overwrite=False)


# --- a full disk while extending a completed run ----------------------------------------

def test_a_full_disk_while_extending_a_completed_run_keeps_its_report(tmp_path, monkeypatch, capsys):
    from accelerate import Accelerator

    out = tmp_path / "run"
    assert run(out, "train.epochs=1", "optim.scheduler.name=none") == 0
    report, model = (out / "report.yaml").read_bytes(), (out / "model.pt").read_bytes()

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Accelerator, "save_state", disk_full)
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "train.epochs=2"]) == 1
    line = one_error_line(capsys)
    assert "no space left on device" in line and "report.yaml not rewritten" in line
    assert (out / "report.yaml").read_bytes() == report  # test accuracy and figures kept
    assert (out / "model.pt").read_bytes() == model
    assert not (out / LOCK_FILE).exists()


# --- an inference measurement stopped half-way ------------------------------------------

@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit(143)], ids=["ctrl-c", "signal"])
def test_an_inference_run_stopped_by_an_exception_leaves_nothing(tmp_path, monkeypatch, stop):
    import harness.infer.bench as inference

    def stopped(*args, **kwargs):
        raise stop

    monkeypatch.setattr(inference, "time_batches", stopped)
    raised = stop if isinstance(stop, type) else type(stop)
    fresh = tmp_path / "new" / "bench"
    with pytest.raises(raised):
        main(["run", CONFIG, *SMALL, *INFERENCE, "--output", str(fresh)])
    assert not (tmp_path / "new").exists()  # the folders it created, outermost first

    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine\n")
    with pytest.raises(raised):
        main(["bench-inference", CONFIG, *SMALL, *INFERENCE[1:], "--output", str(used)])
    assert sorted(p.name for p in used.iterdir()) == ["notes.txt"]  # no config.yaml, no .lock
