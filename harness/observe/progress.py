"""What a person watches while a run trains: a step bar on a terminal, a plain line in a log.

A step listener like the recorder and the profiler (listeners.py's ``StepListener``): the
meter tells it of the steps that ended when it is due, fit.py where each epoch starts and
ends. On a terminal a tqdm bar per epoch (steps, rate, ETA); when stderr is a file, one line every
``output.progress_interval_s`` (epoch, step/steps, samples/s, loss, ETA), which a log
keeps readable where a bar's carriage returns would not. Only the main process shows
anything; ``output.progress: false`` shows nothing.

The lines cost a step nothing: the meter, which reads the clock at each step's end anyway,
tells them when their interval has passed. The bar is told of every step (tqdm's own update,
which redraws at most ten times a second). The loss it shows is the recorder's last
logged interval, already on the host: reading the loss on the device here would
synchronise every step.
"""

from __future__ import annotations

import math
import sys
import time

from harness.measure.listeners import NEVER


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else _hms(seconds)


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


class Silent:
    """Shows nothing (``output.progress: false``, ranks other than the main one); the others
    build on what it tracks: where the run stands, and the loss the recorder has."""

    def __init__(self, name: str, epochs: int, world: int, recorder=None):
        self.name, self.epochs, self.world, self.recorder = name, epochs, world, recorder
        self.epoch = self.steps = self.done = 0

    def loss(self) -> float | None:
        return getattr(self.recorder, "last_train_loss", None)

    def epoch_started(self, epoch: int, steps: int, done: int = 0) -> None:
        """Epoch ``epoch`` (1-based) of ``steps`` steps on this process, ``done`` of them before a resume."""
        self.epoch, self.steps, self.done = epoch, steps, done

    def due(self, step: int) -> tuple[int, int, float]:
        return NEVER, NEVER, math.inf  # told only when another listener is, and at the pass's end

    def before_step(self, step: int) -> None:
        pass

    def steps_ended(self, ended) -> None:
        self.done += len(ended.step_s)

    def epoch_ended(self, train_loss: float, dev_accuracy: float | None) -> None:
        pass

    def close(self) -> None:
        pass


class StepBar(Silent):
    """A tqdm bar per epoch on the terminal; each epoch's stays, with its loss and dev accuracy."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bar = None
        self._shown_loss: float | None = None

    def epoch_started(self, epoch: int, steps: int, done: int = 0) -> None:
        from tqdm.auto import tqdm

        super().epoch_started(epoch, steps, done)
        self.close()
        self.bar = tqdm(total=steps, initial=done, unit="step", file=sys.stderr, dynamic_ncols=True,
                        desc=f"{self.name} epoch {epoch}/{self.epochs}")

    def due(self, step: int) -> tuple[int, int, float]:
        return NEVER, step, math.inf  # every step: the bar moves a step at a time

    def steps_ended(self, ended) -> None:
        count = len(ended.step_s)
        self.done += count
        loss = self.loss()
        if loss is not None and loss != self._shown_loss:  # changes once per tracking interval
            self._shown_loss = loss
            self.bar.set_postfix_str(f"loss={_loss(loss)}", refresh=False)
        self.bar.update(count)

    def epoch_ended(self, train_loss: float, dev_accuracy: float | None) -> None:
        dev = "-" if dev_accuracy is None else f"{dev_accuracy:.4f}"
        self.bar.set_postfix_str(f"loss={train_loss:.4f}, dev_acc={dev}")
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StepLines(Silent):
    """One plain line every ``interval_s`` of training, and one per finished epoch.

    ``clock`` is the meter's (``time.perf_counter``): the meter compares its own reading at each
    step's end with the time the next line is due (``due``) and hands that reading over."""

    def __init__(self, *args, interval_s: float = 10.0, out=None, clock=time.perf_counter, **kwargs):
        super().__init__(*args, **kwargs)
        self.interval_s, self.clock = interval_s, clock
        self.out = out or sys.stderr
        self._epoch_t0 = self._last_t = 0.0
        self._epoch_done0 = self._samples = 0

    def epoch_started(self, epoch: int, steps: int, done: int = 0) -> None:
        super().epoch_started(epoch, steps, done)
        self._epoch_t0 = self._last_t = self.clock()
        self._epoch_done0, self._samples = done, 0

    def due(self, step: int) -> tuple[int, int, float]:
        return NEVER, NEVER, self._last_t + self.interval_s

    def steps_ended(self, ended) -> None:
        self.done += len(ended.step_s)
        self._samples += sum(ended.samples)
        if ended.now >= self._last_t + self.interval_s:  # the meter's test in ``due``'s terms
            self._line(ended.now)

    def _line(self, now: float) -> None:
        # The rate since the last line (this process's samples × the world: the ranks step together);
        # the ETA from the epoch's mean step time so far, which a slow first step skews least.
        rate = self._samples * self.world / (now - self._last_t)
        taken = self.done - self._epoch_done0
        eta = (self.steps - self.done) * (now - self._epoch_t0) / taken if taken else None
        self._say(f"{self.name} epoch {self.epoch}/{self.epochs} step {self.done}/{self.steps} "
                  f"{rate:,.1f} samples/s loss {_loss(self.loss())} eta {_hms(eta)}")
        self._last_t, self._samples = now, 0

    def epoch_ended(self, train_loss: float, dev_accuracy: float | None) -> None:
        dev = "-" if dev_accuracy is None else f"{dev_accuracy:.4f}"
        self._say(f"{self.name} epoch {self.epoch}/{self.epochs} done in "
                  f"{_seconds(self.clock() - self._epoch_t0)}: train loss {train_loss:.4f}, dev accuracy {dev}")

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


def progress_for(output_cfg, name: str, epochs: int, accelerator, recorder=None) -> Silent:
    """The listener ``output.progress`` asks for on this process.

    null: a bar when stderr is a terminal, lines otherwise; true: a bar; false: nothing.
    """
    show = output_cfg.progress
    args = (name, epochs, accelerator.num_processes, recorder)
    if show is False or not accelerator.is_main_process:
        return Silent(*args)
    if show is None and not sys.stderr.isatty():
        return StepLines(*args, interval_s=output_cfg.progress_interval_s)
    return StepBar(*args)
