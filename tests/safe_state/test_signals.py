"""Signals: a second one means "out now" (but not a repeated SIGTERM under Slurm), and SIGTERM to
a run, its ranks and its repeats stops them at a boundary with the state kept."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from functools import partial

import pytest

from harness.files.lock import LOCK_FILE
from harness.report.io import load_report
from harness.run import resume
from harness.run.guard import SIGTERM_ONCE_ENV, SecondSignal, StopSignals, deferred_signals
from support.cli import run_in_process
from support.folders import one_error_line
from support.paths import REPO, TESTS_PATH
from support.processes import processes_mentioning
from support.recipes import SAFE_RECIPE

run = partial(run_in_process, SAFE_RECIPE)


# --- 5. a second signal --------------------------------------------------------------

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
    monkeypatch.syspath_prepend(TESTS_PATH)
    out = tmp_path / "run"
    code = run(out, "model.name=fixtures.custom_models:SignalAt",
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


@pytest.mark.slow
def test_sigterm_to_launch_reaches_its_ranks_and_waits_for_them(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": TESTS_PATH}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "launch", "--mode", "ddp", "--nproc", "2", *SAFE_RECIPE,
                             "train.epochs=30", "model.name=fixtures.custom_models:Slow", "model.kwargs={sleep_ms: 20}",
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
    assert not processes_mentioning(str(out))  # no rank left running, re-parented to PID 1
    assert not (out / LOCK_FILE).exists()


def test_a_signal_before_the_child_starts_reaches_it_as_it_starts():
    """`harness launch` and whole-run repeats install their forwarding before the child
    starts: a SIGTERM in between is held and reaches the child's group as it starts, where
    this process's own handler would have ended it and left the child running."""
    from harness.process.children import forwarding_signals

    with forwarding_signals() as started:
        os.kill(os.getpid(), signal.SIGTERM)  # before the child: held
        proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
        started(proc)
        assert proc.wait(timeout=30) == -signal.SIGTERM


def test_a_signal_held_for_a_child_that_never_started_is_ours_again():
    from harness.process.children import forwarding_signals

    got = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        with forwarding_signals():
            os.kill(os.getpid(), signal.SIGINT)
            assert got == []  # held for the child
        assert got == [signal.SIGINT]  # none started (its Popen failed, say): raised again, to us
    finally:
        signal.signal(signal.SIGINT, old)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_launch_in_its_preflight_stops_it_in_one_line_with_nothing_written(tmp_path, signum):
    """On one node the launcher's process runs the preflight (accelerate_launch.py): a signal
    then, forwarded to it, ends the launch as `harness` ends, before any rank starts, with no
    traceback."""
    import psutil

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "launch", "--mode", "ddp", "--nproc", "2", *SAFE_RECIPE,
                             "--output", str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any("harness.launch.accelerate_launch" in " ".join(c.cmdline())
                  for c in psutil.Process(proc.pid).children()):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the launcher never started"
        time.sleep(0.02)
    # `harness launch` forwards signals once the launcher has started; the launcher's own
    # imports (torch, before its preflight) take seconds, so it is still in its preflight.
    time.sleep(0.2)
    proc.send_signal(signum)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + signum, err[-3000:]
    assert one_error_line(err) == f"error: stopped by {signal.Signals(signum).name}"
    assert not out.exists()
    assert not processes_mentioning(str(out))


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
    env = {**os.environ, "PYTHONPATH": TESTS_PATH, "SLURM_JOB_ID": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "launch", "--mode", "ddp", "--nproc", "2", *SAFE_RECIPE,
                             "train.epochs=30", "output.checkpoint_every_epoch=false",
                             "model.name=fixtures.custom_models:SlowToSave",
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
    assert not processes_mentioning(str(out)), err[-3000:]  # harness launch waited for its ranks
    assert proc.returncode == 143, err[-3000:]
    report = load_report(out)
    assert report["status"] == "interrupted"
    # stopped at a boundary and checkpointed, not "a second signal: no checkpoint of this epoch"
    assert report["error"].startswith("interrupted by SIGTERM; the state is checkpointed"), report["error"]
    (last,) = (out / "checkpoints").iterdir()
    assert resume.check_checkpoint(last) is None
    assert not (out / LOCK_FILE).exists()


@pytest.mark.slow
def test_sigterm_to_whole_run_repeats_reaches_the_repeat_and_writes_the_report(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *SAFE_RECIPE, "train.epochs=30",
                             "model.name=fixtures.custom_models:Slow", "model.kwargs={sleep_ms: 20}", "measure.repeats=2",
                             "measure.repeat_unit=run", "--output", str(out)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": TESTS_PATH}, stdout=subprocess.PIPE,
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
    assert not processes_mentioning(str(out))
    assert not (out / LOCK_FILE).exists()
