"""``measure.profile``: torch.profiler over a few training steps, written to <run folder>/profile/.

A step listener of the meter (listeners.py): it starts the profiler before step
``after`` fetches its batch and stops it once ``steps`` steps have ended. The
traced steps are handed to the meter as untimed, so no timed window ever holds a
profiled step (the profiler's own overhead would otherwise land in samples/s).

Writes a Chrome trace (``trace.json.gz``: chrome://tracing, Perfetto) and the
TensorBoard profiler's format (``tensorboard/*.pt.trace.json.gz``), and returns
the report's ``profile`` block with the top ops by self time.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import time
from pathlib import Path

from harness.measure.config import MeasureConfig, ProfileConfig
from harness.measure.listeners import NEVER

DIR = "profile"
CHROME_TRACE = "trace.json.gz"
TOP_OPS = 10


def first_step(measure: MeasureConfig, total_steps: int) -> int:
    """The first traced step (of this process, warm-up included) when ``after`` is null:
    after the timed windows, or the run's last steps when one window runs to the end."""
    p = measure.profile
    if p.after is not None:
        return p.after
    if measure.window_steps is not None and measure.repeat_unit == "window":
        return measure.warmup_steps + measure.window_steps * measure.repeats
    return max(measure.warmup_steps, total_steps - p.steps)


class Profiler:
    """Traces steps ``[start, start + cfg.steps)``; ``block()`` is the report's ``profile``."""

    def __init__(self, cfg: ProfileConfig, start: int, output: Path, cuda: bool, enabled: bool = True):
        self.cfg, self.start, self.cuda, self.enabled = cfg, start, cuda, enabled
        self.steps = range(start, start + cfg.steps)
        self.folder = output / DIR
        self._prof = None
        self._covered: list[int] = []
        self._result: dict | None = None
        self._error: Exception | None = None
        """What stopped the trace inside the training loop, raised by ``finish`` for the runner."""

    # The meter's listener protocol (listeners.py): due before the first traced step, then
    # after every step while tracing (each ends a profiler step).

    def due(self, step: int) -> tuple[int, int, float]:
        before = self.start if self.enabled and self._prof is None and self._error is None else NEVER
        return before, (step if self._prof is not None else NEVER), math.inf

    def before_step(self, step: int) -> None:
        if self.enabled and step == self.start and self._prof is None and self._error is None:
            self._in_loop(self._begin)

    def steps_ended(self, ended) -> None:
        for step in range(ended.step - len(ended.step_s) + 1, ended.step + 1):
            if self._prof is None:
                return
            self._covered.append(step)
            self._prof.step()
            if step == self.steps[-1]:
                self._in_loop(self.finish)

    def _in_loop(self, action) -> None:
        """Inside the training loop a trace that cannot be started or written must not fail
        the run: the error waits for ``finish``, which the runner turns into a warning."""
        try:
            action()
        except Exception as err:  # noqa: BLE001 -- e.g. a file where profile/ or its tensorboard/ goes
            self._error = err
            self._prof = None

    def _begin(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        if not self.cuda:
            # Kineto probes for GPUs when it writes a trace and logs "ERROR: ... gpuGetDeviceCount
            # failed" (and USDT profiler_start/stop lines) on a machine without one; on a CPU run
            # that is noise. Read when kineto first logs; a level the user exported wins.
            os.environ.setdefault("KINETO_LOG_LEVEL", "6")
        self.folder.mkdir(parents=True, exist_ok=True)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self._prof = profile(activities=activities, record_shapes=self.cfg.record_shapes,
                             profile_memory=self.cfg.profile_memory)
        self._prof.start()

    def finish(self) -> None:
        """Stop (when running) and write the files; the run ending early stops a trace short.
        Raises what stopped the trace inside the loop, once."""
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        prof, self._prof = self._prof, None
        if prof is None:
            return
        prof.stop()
        # A trace can be exported once. The TensorBoard profiler plugin reads the same Chrome
        # trace under the name torch.profiler.tensorboard_trace_handler gives it, so one
        # export is copied there.
        chrome = self.folder / CHROME_TRACE
        prof.export_chrome_trace(str(chrome))
        tb = self.folder / "tensorboard"
        tb.mkdir(exist_ok=True)
        shutil.copyfile(chrome, tb / f"{socket.gethostname()}_{os.getpid()}.{time.time_ns()}.pt.trace.json.gz")
        self._result = {"top_ops": top_ops(prof.key_averages(), self.cuda), "time_kind": "cuda" if self.cuda else "cpu"}

    def block(self) -> dict | None:
        """The report's ``profile`` block, or None when no step was traced."""
        if self._result is None or not self._covered:
            return None
        tb = sorted(p.relative_to(self.folder).as_posix() for p in (self.folder / "tensorboard").glob("*"))
        return {"folder": DIR, "chrome_trace": f"{DIR}/{CHROME_TRACE}",
                "tensorboard_traces": [f"{DIR}/{name}" for name in tb],
                "first_step": self._covered[0], "last_step": self._covered[-1], "steps": len(self._covered),
                "record_shapes": self.cfg.record_shapes, "profile_memory": self.cfg.profile_memory,
                **self._result}


def top_ops(averages, cuda: bool, n: int = TOP_OPS) -> list[dict]:
    """The ``n`` ops with the most self time (device time on a GPU), with their share of the total."""
    key = "self_device_time_total" if cuda else "self_cpu_time_total"

    def self_us(e) -> float:
        value = getattr(e, key, None)
        if value is None and cuda:  # older torch names it after CUDA
            value = getattr(e, "self_cuda_time_total", 0.0)
        return float(value or 0.0)

    # ProfilerStep#N spans the whole step; its self time is the Python between ops, not an op.
    rows = [e for e in averages if not e.key.startswith("ProfilerStep#")]
    total = sum(self_us(e) for e in rows)
    rows.sort(key=self_us, reverse=True)
    return [{"name": e.key, "calls": int(e.count), "self_time_ms": self_us(e) / 1000.0,
             "share": self_us(e) / total if total > 0 else None} for e in rows[:n] if self_us(e) > 0]
