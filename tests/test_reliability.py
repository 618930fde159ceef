"""Faults: signals, kills, a diverging loss, corrupt images, a failing rank.

Each test provokes the fault for real (a signal to the process, SIGKILL, a NaN
loss, a file of garbage bytes, an exception on rank 1 of two processes) and
checks what the user gets: the status, the exit code, the message, and that a
resumed run ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.report.io import load_report
from support.cli import run_cli, run_in_process
from support.paths import REPO, TESTS_PATH
from support.recipes import CONFIG, TINY
from support.runs import assert_same_run
from support.threads import one_torch_thread

# One torch thread: TinyNet's steps are too small to share, and two threads on a busy
# 2-core machine spin (a tiny run's CPU time halves with one). ENV for the processes, the
# one_thread fixture for the runs in this process (a module-scoped fixture sets its own).
ENV = {"PYTHONPATH": TESTS_PATH, "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.usefixtures("one_thread")


# --- signals -------------------------------------------------------------------------

def signal_recipe(signum: int, marker: Path) -> list[str]:
    return [CONFIG, *TINY, "train.epochs=3", "model.name=fixtures.custom_models:SignalAt",
            f"model.kwargs={{step: 12, signum: {int(signum)}, marker: {marker}}}"]


@pytest.fixture(scope="module")
def unsignalled_run(tmp_path_factory) -> Path:
    """The uninterrupted run both signals' resumed runs must end as: SignalAt with its marker
    already written never signals, so which signal it was given changes nothing it computes."""
    root = tmp_path_factory.mktemp("unsignalled")
    (root / "sent").write_text("the reference run must not be signalled\n")
    # In this process: only the interrupted runs are about a process (assert_same_run
    # compares weights, losses and accuracies, which one torch thread computes the same here).
    with one_torch_thread():  # as the runs' OMP_NUM_THREADS=1
        assert run_in_process(signal_recipe(signal.SIGTERM, root / "sent"), root / "whole") == 0
    return root / "whole"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_checkpoints_mid_epoch_and_resume_matches(tmp_path, signum, unsignalled_run):
    """Step 12 is the 4th of epoch 2 (8 steps an epoch): the stop lands inside an epoch."""
    whole, part = unsignalled_run, tmp_path / "part"
    proc = run_cli("run", *signal_recipe(signum, tmp_path / "sent"), "--output", str(part), env=ENV)
    assert proc.returncode == 128 + signum, proc.stderr
    report = load_report(part)
    assert report["status"] == "interrupted"
    assert signal.Signals(signum).name in report["error"]
    assert [p.name for p in (part / "checkpoints").iterdir()] == ["epoch_0001_step_0004"]

    proc = run_cli("run", "--resume", str(part), env=ENV)
    assert proc.returncode == 0, proc.stderr
    resumed = load_report(part)
    assert (resumed["resumed_from_epoch"], resumed["resumed_from_step_in_epoch"]) == (1, 4)
    assert_same_run(whole, part)


def test_sigterm_in_the_first_profiled_step_ends_interrupted_with_a_report(tmp_path):
    """The guard stops the loop after the step the signal landed in: that step still
    counts for the meter's listeners, so the profiler's block holds it."""
    out = tmp_path / "run"
    proc = run_cli("run", CONFIG, *TINY, "model.name=fixtures.custom_models:SignalAt", "measure.profile={steps: 3, after: 3}",
                   f"model.kwargs={{step: 4, signum: {int(signal.SIGTERM)}, marker: {tmp_path / 'sent'}}}",
                   "--output", str(out), env=ENV)
    assert proc.returncode == 143, proc.stderr
    report = load_report(out)
    assert report["status"] == "interrupted" and "SIGTERM" in report["error"]
    assert (report["profile"]["first_step"], report["profile"]["steps"]) == (3, 1)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch_0000_step_0004"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    """A real SIGKILL at whatever point epoch 2 has reached; --resume restarts from epoch 1."""
    common = [CONFIG, *TINY, "train.epochs=3", "model.name=fixtures.custom_models:Slow", "model.kwargs={sleep_ms: 40}"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run_in_process(common, whole) == 0  # the reference: in this process (unsignalled_run says why)

    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *common, "--output", str(part)],
                            cwd=REPO, env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(part / "checkpoints" / "epoch_0001", proc)
    time.sleep(0.15)  # into epoch 2 (about 0.3 s of steps)
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (part / "report.yaml").exists()  # killed before the end: no report, not a torn one

    done = run_cli("run", "--resume", str(part), env=ENV)
    assert done.returncode == 0, done.stderr
    assert load_report(part)["resumed_from_epoch"] >= 1
    assert_same_run(whole, part)


# --- a diverging loss ---------------------------------------------------------------

# The NaN runs, and the corrupt-image runs that train, need no process of their own (no
# signal, no exit from inside the model): they run in this process. The refusal of a
# corrupt image stays a process: its whole stderr must be one line.

def test_nan_loss_stops_with_status_diverged(tmp_path, capsys):
    assert run_in_process([CONFIG, *TINY, "model.name=fixtures.custom_models:NanAfter", "model.kwargs={step: 6}"],
                          tmp_path) == 3
    report = load_report(tmp_path)
    assert report["status"] == "diverged"
    assert report["divergence"]["step"] == 6 and report["divergence"]["epoch"] == 1
    assert "nan at step 6" in report["error"] and "nan at step 6" in capsys.readouterr().err
    assert report["nonfinite"]["first_nonfinite_step"] == 6


def test_nan_loss_is_only_recorded_when_asked(tmp_path):
    assert run_in_process([CONFIG, *TINY, "model.name=fixtures.custom_models:NanAfter", "model.kwargs={step: 6}",
                           "train.on_nonfinite=record"], tmp_path) == 0
    report = load_report(tmp_path)
    assert report["status"] == "completed"
    # 2 epochs of 8 steps; from step 6 on every loss is NaN (the weights are NaN after it).
    assert report["nonfinite"] == {"nonfinite_loss_steps": 11, "first_nonfinite_step": 6}


# --- corrupt images -------------------------------------------------------------------

def image_folder(root: Path, per_class: int = 24) -> Path:
    from PIL import Image

    for c in range(2):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (8, 8), color=40 + 150 * c + i).save(root / f"class{c}" / f"{i:02d}.png")
    return root


FOLDER_RUN = ["data.name=imagefolder", "data.transforms.augment.rotation_deg=0", "train.epochs=1",
              "measure.warmup_steps=0", "loader.batch_size=8", "output.progress=false"]


def damaged_folder(tmp_path: Path, name: str, damage) -> tuple[Path, Path]:
    """An image folder whose file ``name`` is rewritten as ``damage(its bytes)``."""
    root = image_folder(tmp_path / "images")
    bad = root / name
    bad.write_bytes(damage(bad.read_bytes()))
    return root, bad


def folder_recipe(root: Path, *overrides: str) -> list[str]:
    return [CONFIG, *FOLDER_RUN, f"data.root={root}", *overrides]


def run_on_folder(root: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_cli("run", *folder_recipe(root, *overrides), "--output", str(out))


def run_on_folder_here(root: Path, out: Path, *overrides: str) -> int:
    return run_in_process(folder_recipe(root, *overrides), out)


@pytest.mark.parametrize("damage", [lambda _: b"this is not a png", lambda png: png[:-20]],
                         ids=["garbage", "truncated"])
def test_corrupt_image_fails_naming_the_file(tmp_path, damage):
    root, bad = damaged_folder(tmp_path, "class1/07.png", damage)
    out = tmp_path / "out"
    proc = run_on_folder(root, out)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and str(bad) in proc.stderr and "data.corrupt_images" in proc.stderr
    assert not out.exists()


def test_corrupt_image_is_skipped_when_asked(tmp_path):
    root, bad = damaged_folder(tmp_path, "class0/03.png", lambda _: b"\x89PNG garbage")
    assert run_on_folder_here(root, tmp_path / "out", "data.corrupt_images=skip") == 0
    report = load_report(tmp_path / "out")
    assert report["data"]["skipped_files"] == [str(bad)]
    assert sum(report["data"]["sizes"].values()) == 47


def test_unscanned_corrupt_image_fails_the_run_naming_the_file(tmp_path):
    root, bad = damaged_folder(tmp_path, "class0/11.png", lambda _: b"garbage")
    assert run_on_folder_here(root, tmp_path / "out", "data.scan_images=false") == 1
    report = load_report(tmp_path / "out")
    assert report["status"] == "failed" and str(bad) in report["error"]


# --- a failing rank --------------------------------------------------------------------

def launch_two_ranks(out: Path, model: str, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    """Two gloo ranks whose ``model`` misbehaves on rank 1 at step 3; (process, seconds taken)."""
    t0 = time.monotonic()
    proc = run_cli("launch", "--mode", "ddp", "--nproc", "2", CONFIG, *TINY, f"model.name=fixtures.custom_models:{model}",
                   "model.kwargs={rank: 1, step: 3}", *extra, "--output", str(out), env=ENV, timeout=240)
    return proc, time.monotonic() - t0


@pytest.mark.slow
def test_failing_rank_ends_the_job_with_its_error(tmp_path):
    """Rank 1 raises at its 3rd step while rank 0 waits in DDP's all-reduce: no hang."""
    out = tmp_path / "out"
    proc, elapsed = launch_two_ranks(out, "FailOnRank")
    assert proc.returncode != 0
    assert "boom on rank 1 at step 3" in proc.stderr
    report = load_report(out)
    assert report["status"] == "failed" and report["failed_rank"] == 1
    assert "boom on rank 1 at step 3" in report["error"]
    assert elapsed < 150, f"the job took {elapsed:.0f} s to end"


@pytest.mark.slow
def test_bad_input_only_the_ranks_see_ends_the_launch_with_exit_2(tmp_path):
    """The launchers end with 1 whatever a rank exited with; `harness launch` passes on
    the ranks' own status and puts their one-line error last."""
    out = tmp_path / "out"
    missing = tmp_path / "no-images"  # found out by the data code, inside each rank
    proc = run_cli("launch", "--mode", "ddp", "--nproc", "2", CONFIG, *TINY, "data.name=imagefolder",
                   f"data.root={missing}", "--output", str(out), env=ENV, timeout=240)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: data.root: {missing} is not a folder"), last
    assert not (out / "report.yaml").exists()


def test_the_launch_ends_with_the_status_of_the_rank_that_failed_first(tmp_path, monkeypatch):
    from harness.launch.command import EXIT_DIR_ENV, first_failure, note_exit

    monkeypatch.setenv(EXIT_DIR_ENV, str(tmp_path))
    for rank, code in ((2, 0), (1, 3), (0, 143)):  # in the order they exit
        monkeypatch.setenv("RANK", str(rank))
        note_exit(code, f"rank {rank} exits {code}")
        time.sleep(0.01)
    first = first_failure(tmp_path)
    assert (first["rank"], first["code"], first["message"]) == (1, 3, "rank 1 exits 3")
    (tmp_path / "rank1.json").unlink()
    assert first_failure(tmp_path)["rank"] == 0  # a rank that exited 0 is never the cause
    (tmp_path / "rank0.json").unlink()
    assert first_failure(tmp_path) is None


@pytest.mark.slow
def test_hung_rank_ends_the_job_after_the_collective_timeout(tmp_path):
    """Rank 1 stops answering; rank 0's all-reduce gives up after runtime.collective_timeout_s."""
    out = tmp_path / "out"
    proc, elapsed = launch_two_ranks(out, "HangOnRank", "runtime.collective_timeout_s=10")
    assert proc.returncode != 0
    report = load_report(out)
    # The rank that stopped advancing is blamed, not rank 0, which only noticed.
    assert report["status"] == "failed" and report["failed_rank"] == 1, report["error"]
    assert "rank 1" in report["error"] and "stopped advancing" in report["error"]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: rank 1 (pid ")
    assert elapsed < 180, f"the job took {elapsed:.0f} s to end"
