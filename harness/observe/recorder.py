"""The recorder: the run's figures over time, to metrics.jsonl and to every tracker.

The meter tells it when each step ended (with the step's data wait and host time),
the loop hands it each step's loss, fit.py each epoch's dev figures, and the runner
the report at the end (its warnings go back to the report builder). Every
``tracking.every_n_steps`` global optimizer steps it writes one interval line; all
else between those points is a few host counters and the loss's sum: float adds on the
CPU, where the loop hands the loss over as a float, and one in-place add on an
accelerator's device, where a ``.item()`` per step would synchronise every step. The
step axis is the global optimizer step, so a resumed run carries on where its
checkpoint stood.
Only the main process records.

The lines themselves (metrics.jsonl and ``accelerator.log``, whose TensorBoard writer
flushes to disk on every call) are built and written by one background thread, in order:
at an interval's end the training thread only reads what the next step would change and
queues it. Before a checkpoint, ``drain``
waits for every queued line: a resume from that checkpoint then finds each line up to
its step on disk, and steps never skip.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
import weakref
from collections import deque
from typing import NamedTuple
from pathlib import Path

import torch

from harness.measure.listeners import NEVER
from harness.observe import metrics_stream

from harness.observe import tracking
from harness.measure.memory import MB

FINAL = ("test_accuracy", "test_loss", "best_dev_accuracy", "samples_per_s", "step_time_p50_ms", "peak_rss_mb",
         "peak_pss_mb", "device_peak_mb", "data_wait_fraction", "time_to_target_s", "mfu")
"""The end-of-run figures logged as ``final/<name>``: TensorBoard's HParams tab compares runs on them."""


GROUP = {"interval": "train", "epoch": "epoch", "end": "final"}
"""A line's kind -> the trackers' tag prefix: ``train/train_loss``, ``epoch/dev_accuracy``, ``final/test_accuracy``."""


NOT_LOGGED = ("kind", "step", "steps", "samples", "epoch")
"""Line keys that are the axis or counts, not figures: kept in metrics.jsonl, not sent to the trackers."""


def _tag(kind: str, key: str) -> str:
    return f"{GROUP[kind]}/{key}"


class _Interval(NamedTuple):
    """What the training thread hands the writer thread at an interval's end (``Recorder._interval``)."""

    step: int
    wait_s: list[float]
    step_s: list[float]
    samples: int
    train_loss: float | None
    drain_s: float
    lr: float
    scaler_scale: float | None
    memory_mb: tuple
    """The main process's RSS, the tree's PSS at the sampler's latest full reading, the
    device's allocated and reserved bytes (None off a GPU), all in MB, read at the interval's end."""


class Lines:
    """The lines waiting for the writer thread. A ``put`` is one deque append and wakes nothing:
    the writer takes what is there every ``every_s``, or at once after a ``put_now``.

    Waking the writer at every interval cost the training thread ~15 µs a step of the
    step-cost benchmark's ~190 µs steps (an interval every 10 steps; thread CPU, median of 21
    rounds, idle): each wake-up is a futex call, and the writer then takes the GIL from the
    training thread and hands it back. Lines reach metrics.jsonl and the trackers within
    ``every_s``; ``drain`` (before a checkpoint) and the run's end still wait for every one.
    """

    def __init__(self, every_s: float = 0.5):
        self.every_s = every_s
        self._items: deque = deque()  # append and popleft are atomic: no lock between the threads
        self._wake = threading.Event()

    def put(self, item) -> None:
        self._items.append(item)

    def put_now(self, item) -> None:
        self._items.append(item)
        self._wake.set()

    def take(self):
        """The writer's side: waits up to ``every_s`` (less after a ``put_now``), then yields
        every item put so far, in order."""
        self._wake.wait(self.every_s)
        self._wake.clear()  # a put_now from here on wakes the next wait: its item may come now or then
        while self._items:
            yield self._items.popleft()


class RssReader:
    """This process's resident set in bytes, as psutil's ``memory_info().rss`` reads it: on
    Linux the second field of /proc/self/statm times the page size, here from a descriptor
    kept open (about 3 µs, where psutil opens the file each time: about 30 µs, once an
    interval on the training thread)."""

    def __init__(self):
        try:
            self._fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
            self._page = os.sysconf("SC_PAGE_SIZE")
            weakref.finalize(self, os.close, self._fd)
        except OSError:  # not Linux
            import psutil

            self._fd, self._proc = None, psutil.Process()

    def __call__(self) -> int:
        if self._fd is None:
            return self._proc.memory_info().rss
        return int(os.pread(self._fd, 256, 0).split()[1]) * self._page


class Recorder:
    """Records on the main process; on the others every call is a no-op."""

    def __init__(self, accelerator, optimizer, output: Path, cfg: tracking.TrackingConfig, steps_done: int,
                 epochs_done: int, resumed: bool, memory=None):
        self.acc, self.optimizer, self.cfg = accelerator, optimizer, cfg
        self.enabled = accelerator.is_main_process
        self.step = steps_done
        """Global optimizer steps done, continued across resumes."""
        self.memory = memory
        self.last_train_loss: float | None = None
        """The mean train loss of the last interval logged, on the host (progress.py shows it)."""
        self.world = accelerator.num_processes
        self.cuda = accelerator.device.type == "cuda"
        # The interval's sum of the losses times their samples: those handed over as floats
        # on the host, those handed over as tensors on the device (``_on_device``: it holds some).
        self._loss = torch.zeros((), device=accelerator.device)
        self._on_device = True
        self._reset()
        self.stream = None
        if self.enabled:
            self._rss = RssReader()
            if resumed:
                metrics_stream.continue_from(output, steps_done, epochs_done)
            self.stream = metrics_stream.MetricStream(output, fresh=not resumed)
        self.tracker_error: str | None = None
        """The first error a tracker raised while logging: the run goes on, its report warns."""
        self._lines: Lines | None = None
        self._writer: threading.Thread | None = None
        if self.enabled:
            self._lines = Lines()
            self._writer = threading.Thread(target=self._write_lines, name="harness-recorder", daemon=True)
            self._writer.start()

    def _reset(self) -> None:
        if self._on_device:
            self._loss.zero_()
        self._on_device = False
        self._host_loss = 0.0
        self._samples = self._loss_n = 0
        # The interval's steps' waits and times, in step order: the sums and the median are
        # those of the steps taken a step at a time.
        self._wait_s: list[float] = []
        self._step_s: list[float] = []

    # -- what the loop and the meter call -------------------------------------------

    def add_loss(self, loss: torch.Tensor | float, samples: int) -> None:
        """A step's loss (a mean over its ``samples``): a float (the CPU loop's) or a tensor."""
        if self.enabled:
            self._loss_n += samples
            if loss.__class__ is float:
                self._host_loss += loss * samples
                return
            # Stays on the device: no sync. The loop hands the loss over detached already.
            self._loss.add_(loss.detach() if loss.requires_grad else loss, alpha=samples)
            self._on_device = True

    # The meter's listener protocol (listeners.py): told at each interval's last step, and of the
    # steps between only then, so a step costs the recorder no call of the meter's.

    def due(self, step: int) -> tuple[int, int, float]:
        """Due after the step that completes an interval of ``every_n_steps`` global steps;
        ``step`` is the meter's next, this process's steps so far being ``self.step`` globally."""
        left = self.cfg.every_n_steps - self.step % self.cfg.every_n_steps  # 1..every_n_steps
        return NEVER, (step + left - 1 if self.enabled else NEVER), math.inf

    def before_step(self, step: int) -> None:
        pass

    def steps_ended(self, ended) -> None:
        """Steps of this process ended (meter.py); every ``every_n_steps`` global steps, log."""
        count = len(ended.step_s)
        if not self.enabled:
            self.step += count
            return
        every = self.cfg.every_n_steps
        i = 0
        while i < count:  # one interval at a time: a telling may end an interval, never span one
            j = min(count, i + every - self.step % every)
            self._wait_s += ended.wait_s[i:j]
            self._step_s += ended.step_s[i:j]
            self._samples += sum(ended.samples[i:j])
            self.step += j - i
            if self.step % every == 0:
                self._interval()
            i = j

    def _interval(self) -> None:
        """The interval's end, on the training thread: what the line reports of this moment is
        read here (the loss sum, the learning rate, the scaler's scale, the memory readings);
        the writer thread builds the line from it (``_line``), sums and median included."""
        t0 = time.perf_counter()
        loss_sum = self._host_loss
        if self._on_device:
            loss_sum += self._loss.item()  # the one sync per interval, which also drains the queued steps
        drain_s = time.perf_counter() - t0
        train_loss = loss_sum / self._loss_n if self._loss_n else None
        self.last_train_loss = train_loss
        last = getattr(self.memory, "last_full", None)  # the sampler's latest tree reading
        memory = (self._rss() / MB, last.pss / MB if last is not None and last.pss else None,
                  *((torch.cuda.memory_allocated(self.acc.device) / MB, torch.cuda.memory_reserved(self.acc.device) / MB)
                    if self.cuda else (None, None)))
        self._lines.put((_Interval(self.step, self._wait_s, self._step_s, self._samples, train_loss, drain_s,
                                   float(self.optimizer.param_groups[0]["lr"]), self._scale(), memory), True))
        self._reset()  # new lists: the ones handed over are the writer's now

    def _line(self, end: _Interval) -> dict:
        """An interval's line, built on the writer thread."""
        wait_s = sum(end.wait_s)
        busy_s = wait_s + sum(end.step_s) + end.drain_s
        rss_mb, pss_mb, allocated_mb, reserved_mb = end.memory_mb
        return {
            "kind": "interval", "step": end.step, "steps": len(end.step_s), "samples": end.samples,
            "train_loss": end.train_loss,
            "lr": end.lr,
            # Rank 0's samples times the world size: ranks step in lock-step under DDP.
            "samples_per_s": end.samples * self.world / busy_s if busy_s > 0 else None,
            "step_time_ms_p50": statistics.median(end.step_s) * 1000 if end.step_s else None,
            "data_wait_fraction": wait_s / busy_s if busy_s > 0 else None,
            "rss_mb": rss_mb, "pss_mb": pss_mb, "device_allocated_mb": allocated_mb, "device_reserved_mb": reserved_mb,
            "scaler_scale": end.scaler_scale,
        }

    def _scale(self) -> float | None:
        scaler = getattr(self.acc, "scaler", None)
        return float(scaler.get_scale()) if scaler is not None else None

    def _emit(self, row: dict, to_trackers: bool = True) -> None:
        self._lines.put((row, to_trackers))

    def _write_lines(self) -> None:
        """The writer thread: each queued line to metrics.jsonl, then to the trackers."""
        while True:
            for item in self._lines.take():
                if item is None:
                    return
                if isinstance(item, threading.Event):  # ``drain``'s mark: every line before it is written
                    item.set()
                    continue
                self._write(*item)

    def _write(self, row, to_trackers: bool) -> None:
        try:
            if isinstance(row, _Interval):
                row = self._line(row)
            self.stream.write(row)
            if to_trackers and self.acc.trackers:
                values = {_tag(row["kind"], k): v for k, v in row.items()
                          if k not in NOT_LOGGED and isinstance(v, (int, float)) and not isinstance(v, bool)}
                self.acc.log(values, step=row["step"])
        except Exception as err:  # noqa: BLE001 -- a tracker failing costs a warning, not the run
            self.tracker_error = self.tracker_error or f"{err.__class__.__name__}: {err}"

    def drain(self) -> None:
        """Wait until every line queued so far is written (before a checkpoint)."""
        if self._lines is not None and self._writer.is_alive():
            written = threading.Event()
            self._lines.put_now(written)
            written.wait()

    # -- what fit.py and the runner call ----------------------------------------------

    def epoch_done(self, dev_row: dict, wall_s: float) -> None:
        if not self.enabled:
            return
        self._emit({"kind": "epoch", "step": self.step, "epoch": dev_row["epoch"],
                    "train_loss": dev_row["train_loss"], "dev_accuracy": dev_row["accuracy"],
                    "dev_loss": dev_row["loss"], "epoch_wall_s": wall_s})

    def finish(self, report: dict) -> list[str]:
        """The run's end: test figures and headline figures, then the stream is closed;
        returns the report's warnings about what could not be recorded."""
        if not self.enabled:
            return []
        from harness.report.figures import figures

        heads = figures(report)
        acc = report.get("accuracy") or {}
        row = {"kind": "end", "step": self.step, "status": report.get("status"),
               **{k: heads.get(k) for k in FINAL if k in heads},
               "test_accuracy": acc.get("test_accuracy"), "test_loss": acc.get("test_loss"),
               "best_dev_accuracy": acc.get("best_dev_accuracy")}
        # Trackers get the end figures of a completed run only: an interrupted one is resumed
        # and ends later, and its figures at the stop would stay beside the real ones.
        self._emit(row, to_trackers=report.get("status") == "completed")
        self._lines.put_now(None)
        self._writer.join()
        warnings = []
        if self.tracker_error:
            warnings.append(f"trackers: some figures were not logged: {self.tracker_error}")
        self.stream.close()
        if self.stream.error:
            warnings.append(f"metrics.jsonl is incomplete: {self.stream.error}")
        return warnings


def start_trackers(acc, cfg: tracking.TrackingConfig, output: Path, config: dict, steps_done: int,
                   resumed: bool) -> None:
    """``init_trackers`` with the resolved config as hyperparameters (all ranks call it; Accelerate
    starts trackers on the main process only).

    TensorBoard: Accelerate's own hyperparameter write puts them in a separate
    timestamped run with no metrics declared, so the HParams tab would show no
    columns; the hparams are written into the run itself instead, declaring the
    ``final/*`` metrics logged at the end. ``purge_step`` drops events a killed run
    wrote past the checkpoint a resume starts from (and a fresh run's old events).
    """
    names = cfg.names()
    if not names:
        return
    init = tracking.local_defaults(names, output, cfg.init_kwargs)
    if "tensorboard" in init:
        init["tensorboard"].setdefault("purge_step", steps_done + 1 if resumed else 0)
    acc.init_trackers(cfg.project, config=None, init_kwargs=init)
    if not acc.is_main_process:  # the other ranks' trackers were never started
        return
    hp = tracking.hparams(config)
    for tracker in acc.trackers:
        if tracker.name != "tensorboard":
            tracker.store_init_configuration(hp)
        elif not resumed:
            write_tensorboard_hparams(tracker.writer, hp)


def write_tensorboard_hparams(writer, hp: dict) -> None:
    from torch.utils.tensorboard.summary import hparams

    exp, start, end = hparams(hp, {f"final/{name}": 0.0 for name in FINAL})
    file_writer = writer._get_file_writer()
    for summary in (exp, start, end):
        file_writer.add_summary(summary)
    writer.flush()
