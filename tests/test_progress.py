"""What a person watches: a step bar on a terminal, plain lines in a log, and a warning before
training when warm-up would leave nothing to time."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import sys
import termios
import threading

from support.paths import REPO
from harness.cli import main
from harness.measure.listeners import Ended
from harness.observe.progress import StepLines

CONFIG = str(REPO / "configs/digits_cnn.yaml")
# 360 digits -> 16 train batches of 16; a step sleeps 40 ms (tests/fixtures/custom_models.py).
SLOW = ["data.subset=360", "loader.batch_size=16", "train.epochs=1", "measure.warmup_steps=1",
        "model.name=fixtures.custom_models:Slow", "model.kwargs={sleep_ms: 40}", "tracking.every_n_steps=2",
        "output.save_model=false", "output.checkpoint_every_epoch=false"]
STEPS = 16


def test_a_log_gets_a_plain_line_every_interval(tmp_path, capsys):
    # Every step sleeps 40 ms, longer than the 30 ms interval: a line is due after each step,
    # however slow the machine (a slower one only makes each gap longer). A lower bound only.
    assert main(["run", CONFIG, *SLOW, "output.progress_interval_s=0.03", "--output", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    lines = re.findall(r"^digits_cnn epoch 1/1 step (\d+)/16 [\d,.]+ samples/s loss (\S+) eta \d+:\d\d$",
                       err, flags=re.M)
    assert len(lines) >= STEPS // 2, err
    assert [int(s) for s, _ in lines] == sorted(int(s) for s, _ in lines)
    assert any(loss != "-" for _, loss in lines), "the recorder's logged loss is shown once there is one"
    assert re.search(r"^digits_cnn epoch 1/1 done in [\d.]+ s: train loss [\d.]+, dev accuracy [\d.]+$", err, re.M)
    assert "\r" not in err  # a log file gets lines, never a bar's carriage returns


def test_lines_count_from_a_resumed_step_and_give_an_eta():
    """The line's figures from recorded times: rate since the last line, ETA from the epoch's mean."""
    now = [100.0]

    class Out:
        text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    out = Out()
    shown = StepLines("r", 3, 2, interval_s=10.0, out=out, clock=lambda: now[0])
    shown.epoch_started(2, steps=100, done=40)  # resumed 40 steps into epoch 2
    for _ in range(9):  # 9 steps of 1 s each: under the interval, nothing said
        now[0] += 1.0
        shown.steps_ended(Ended(0, (0.0,), (1.0,), (32,), now[0]))
    assert out.text == ""
    now[0] += 1.0
    shown.steps_ended(Ended(0, (0.0,), (1.0,), (32,), now[0]))
    # 10 steps x 32 samples x 2 ranks in 10 s; 50 steps left at 1 s each.
    assert out.text == "r epoch 2/3 step 50/100 64.0 samples/s loss - eta 0:50\n"


def _pty_stderr(monkeypatch):
    """Point sys.stderr at a pseudo-terminal 120 columns wide; returns (read everything so far, close)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    chunks: list[bytes] = []

    def drain():  # the pty's buffer is small: a reader keeps the writer from blocking
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    tty = os.fdopen(slave, "w", buffering=1, encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", tty)

    def finish() -> str:
        tty.close()
        reader.join(timeout=10)
        os.close(master)
        return b"".join(chunks).decode(errors="replace")

    return finish


def test_a_terminal_gets_a_moving_step_bar(tmp_path, monkeypatch):
    finish = _pty_stderr(monkeypatch)
    try:
        code = main(["run", CONFIG, *SLOW, "--output", str(tmp_path / "r")])
    finally:
        text = finish()
    assert code == 0, text[-2000:]
    # tqdm redraws the bar in place: carriage returns, a step count that moves, a rate and an ETA.
    frames = re.findall(r"\rdigits_cnn epoch 1/1:\s+\d+%\|[^|]*\| (\d+)/16 \[[\d:]+<[\d:?]+,\s+[\d.?]+\s*step/s", text)
    assert len(set(frames)) >= 3 and "16" in frames, text[-2000:]
    assert "dev_acc=" in text
    assert " samples/s loss " not in text  # the plain lines are for logs


def test_warmup_that_takes_every_step_is_said_before_training(tmp_path, capsys):
    args = [a for a in SLOW if not a.startswith(("measure.warmup_steps", "model."))]
    assert main(["run", CONFIG, *args, "measure.warmup_steps=20", "output.progress_interval_s=600",
                 "--output", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err.splitlines()
    warned = [i for i, line in enumerate(err) if line.startswith("warning: measure.warmup_steps=20")]
    assert warned and "this run has 16 train steps" in err[warned[0]], err
    trained = [i for i, line in enumerate(err) if "epoch 1/1 done" in line]
    assert trained and warned[0] < trained[0]


def test_a_sweep_in_a_log_says_a_line_per_cell(capsys):
    from harness.sweep.command import _progress

    bar = _progress(2, "grid")  # stderr is captured: not a terminal
    for cell in ("a", "b"):
        bar.set_postfix_str(cell)
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert err == "sweep grid: 1/2 cells run (last: a)\nsweep grid: 2/2 cells run (last: b)\n"
