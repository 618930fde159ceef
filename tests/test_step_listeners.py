"""The meter tells its step listeners of the steps that ended only when one of them is due
(harness/measure/listeners.py): what each is told, and when, must be what a call a step gave."""

from __future__ import annotations

import json
import math

import torch
from torch import nn

from harness.measure.config import MeasureConfig
from harness.measure.listeners import NEVER, Ended, FirstStep
from harness.measure.meter import Meter
from harness.observe.recorder import Recorder
from harness.observe.tracking import TrackingConfig
from harness.run.accel import RuntimeConfig, build_accelerator

CPU = torch.device("cpu")


def batches(sizes):
    return [(torch.zeros(n, 3), torch.zeros(n, dtype=torch.long)) for n in sizes]


class Spy:
    """Due after the steps in ``after`` and before those in ``before``; keeps what it is told."""

    def __init__(self, after=(), before=(), every=False):
        self.after, self.before, self.every = sorted(after), sorted(before), every
        self.told: list[tuple[list[int], list[int]]] = []
        """(step numbers, samples) of each telling."""
        self.befores: list[int] = []

    def due(self, step):
        after = step if self.every else min((s for s in self.after if s >= step), default=NEVER)
        return min((s for s in self.before if s >= step), default=NEVER), after, math.inf

    def before_step(self, step):
        self.befores.append(step)

    def steps_ended(self, ended):
        first = ended.step - len(ended.step_s) + 1
        assert len(ended.wait_s) == len(ended.step_s) == len(ended.samples)
        self.told.append((list(range(first, ended.step + 1)), list(ended.samples)))


def test_listeners_are_told_at_their_steps_and_at_the_passs_end():
    every, sparse = Spy(every=True), Spy(after=[3, 7], before=[5])
    clock = FirstStep(Spy(every=True))  # told before the first step alone, whatever it wraps asks
    meter = Meter(MeasureConfig(warmup_steps=2), CPU, listeners=[every, sparse, clock])
    sizes = [4, 5, 6, 7, 8, 9, 10, 11, 12]
    for _ in meter.steps(batches(sizes)):
        pass
    # Each telling reaches every listener: at each step for the one due every step, so the
    # sparse one is told a step at a time too; every step once, in order, with its samples.
    assert [steps for steps, _ in every.told] == [[s] for s in range(9)]
    assert every.told == sparse.told
    assert [n for _, samples in every.told for n in samples] == sizes
    assert every.befores == sparse.befores == [0, 5]  # the first step (the clock's) and step 5
    assert clock.listener.befores == [0] and clock.listener.told == []
    w = meter.windows[0]  # steps 2..8 timed, as each step's own append gave
    assert len(w.step_s) == len(w.data_wait_s) == 7 and w.samples == sum(sizes[2:])


def test_a_listener_due_every_few_steps_is_told_them_together():
    sparse = Spy(after=[3, 7])
    meter = Meter(MeasureConfig(warmup_steps=0), CPU, listeners=[sparse])
    for _ in meter.steps(batches([2] * 10)):
        pass
    # After step 3, after step 7, and the rest when the pass ends; nothing before any step.
    assert [steps for steps, _ in sparse.told] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert sparse.befores == []
    assert meter.windows[0].samples == 20 and len(meter.windows[0].step_s) == 10


def test_a_window_edge_settles_the_log_into_its_own_window():
    quiet = Spy()  # never due: told only when the log is settled
    meter = Meter(MeasureConfig(warmup_steps=1, window_steps=3, repeats=2), CPU, listeners=[quiet])
    for _ in meter.steps(batches([1, 2, 3, 4, 5, 6, 7, 8])):
        pass
    assert [w.samples for w in meter.windows] == [2 + 3 + 4, 5 + 6 + 7]
    assert [len(w.step_s) for w in meter.windows] == [3, 3]
    assert [steps for steps, _ in quiet.told] == [[0], [1, 2, 3], [4, 5, 6], [7]]


def test_a_loop_that_leaves_early_has_its_last_step_told():
    quiet = Spy()
    meter = Meter(MeasureConfig(warmup_steps=0), CPU, listeners=[quiet])
    for i, _ in enumerate(meter.steps(batches([3] * 10))):
        if i == 4:
            meter.end_step()  # the loop's break after the guard's stop
            break
    assert [steps for steps, _ in quiet.told] == [[0, 1, 2, 3, 4]]
    assert meter.step == 5 and len(meter.windows[0].step_s) == 5


def _interval_rows(folder) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "interval"]


def test_the_recorder_told_per_interval_writes_the_lines_it_wrote_told_per_step(tmp_path):
    """Through the meter (told at each interval's end) and told a step at a time with the
    same steps: the same interval lines (steps, samples, median step time, loss), a resumed
    recorder's global step count included."""
    acc, _ = build_accelerator(RuntimeConfig(device="cpu"))
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    sizes = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    recorders = []
    for name in ("meter", "per_step"):
        (tmp_path / name).mkdir()
        recorders.append(Recorder(acc, opt, tmp_path / name, TrackingConfig(every_n_steps=4), 2, 0, False))
    via_meter, per_step = recorders
    quiet = Spy()  # never due: told with the recorder, and keeps every step's figures
    kept: list[Ended] = []
    quiet.steps_ended = lambda e: (Spy.steps_ended(quiet, e), kept.append(e))
    meter = Meter(MeasureConfig(warmup_steps=0), CPU, listeners=[via_meter, quiet])
    for i, _ in enumerate(meter.steps(batches(sizes))):
        via_meter.add_loss(0.5 + i, sizes[i])
    # 2 global steps done: intervals end at global 4, 8, 12 (this process's 1, 5, 9), then the pass.
    assert [steps for steps, _ in quiet.told] == [[0, 1], [2, 3, 4, 5], [6, 7, 8, 9], [10]]
    one_at_a_time = [Ended(e.step - len(e.step_s) + 1 + j, (e.wait_s[j],), (e.step_s[j],), (e.samples[j],), e.now)
                     for e in kept for j in range(len(e.step_s))]
    for i, e in enumerate(one_at_a_time):
        per_step.add_loss(0.5 + i, sizes[i])
        per_step.steps_ended(e)
    for r in recorders:
        r.finish({"status": "completed"})
    got, want = _interval_rows(tmp_path / "meter"), _interval_rows(tmp_path / "per_step")
    assert [r["step"] for r in got] == [4, 8, 12]
    keys = ("step", "steps", "samples", "train_loss", "step_time_ms_p50", "lr")
    assert [{k: r[k] for k in keys} for r in got] == [{k: r[k] for k in keys} for r in want]
    assert via_meter.step == per_step.step == 13


def test_the_recorder_is_due_at_its_intervals_last_step(tmp_path):
    acc, _ = build_accelerator(RuntimeConfig(device="cpu"))
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    recorder = Recorder(acc, opt, tmp_path, TrackingConfig(every_n_steps=10), 7, 0, False)
    # 7 global steps done: the interval ends 3 steps on, at this process's step 100 + 2.
    assert recorder.due(100) == (NEVER, 102, math.inf)
    recorder.steps_ended(Ended(102, (0.0,) * 3, (0.001,) * 3, (4,) * 3, 0.0))
    assert recorder.step == 10 and recorder.due(103) == (NEVER, 112, math.inf)
    recorder.finish({"status": "completed"})
    assert [r["step"] for r in _interval_rows(tmp_path)] == [10]


def test_drain_waits_for_every_line_queued_before_it(tmp_path):
    """Before a checkpoint every queued line must be written: ``drain`` returns only then,
    however slow the writer (here 50 ms a line)."""
    import time

    acc, _ = build_accelerator(RuntimeConfig(device="cpu"))
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    recorder = Recorder(acc, opt, tmp_path, TrackingConfig(every_n_steps=1), 0, 0, False)
    written, write = [], recorder.stream.write

    def slow(row):
        time.sleep(0.05)
        write(row)
        written.append(row["step"])

    recorder.stream.write = slow
    recorder.steps_ended(Ended(2, (0.0,) * 3, (0.001,) * 3, (4,) * 3, 0.0))  # three interval lines
    recorder.drain()
    assert written == [1, 2, 3]
    recorder.finish({"status": "completed"})
    assert written == [1, 2, 3, 3]  # and the end line
