"""Seconds to the first step: the process's age at the marks a run passes on its way there.

Every mark is the process's age, read against the kernel's record of when the process
started (``/proc/self/stat`` starttime, on the boot clock), so the interpreter's own start
and the imports before harness's first line are counted too. ``harness run`` marks the
moment its code is imported (run/command.py: torch, accelerate and the run's modules); the runner marks the setup phases and the first train step's
start; the report's ``timing.setup`` block is the differences between consecutive marks,
so its phases add up to ``timing.process_start_to_first_step_s``. Imports nothing heavy.

While ``harness run`` imports its code (torch, torchvision, torch._dynamo: half a million
objects) the cyclic collector is paused and runs once at the end (``collector_paused``):
left on, it walks the growing heap again at every quarter it grows, several full passes
that cost the imports ~15-20% on top. Once is enough to free what the imports left in
cycles, so no garbage outlives the pause and nothing after it changes.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time

_IMPORTED_AGE: list[float] = []
"""The process's age once ``harness run`` had imported its code, taken by the first run of the process (a second
run in the same process, a test's, did not start with it)."""

PHASES = ("import_s", "config_s", "accelerator_s", "data_s", "model_s", "prepare_s", "observers_s")
"""The report's ``timing.setup`` keys, in the order a run passes them."""


def _start_on_boot_clock() -> float | None:
    """When this process started, in seconds on CLOCK_BOOTTIME (Linux; None elsewhere).

    The kernel counts starttime in clock ticks (10 ms) since boot, on the clock that
    CLOCK_BOOTTIME reads; /proc/stat's btime is whole seconds, too coarse to anchor it
    to the wall clock, so the age is read on the boot clock throughout.
    """
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        fields = stat[stat.rindex(b")") + 2:].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of the whole line
    except (OSError, ValueError, IndexError, AttributeError):
        return None


_START = _start_on_boot_clock()


def process_age_s() -> float:
    """Seconds since this process started (10 ms resolution on Linux)."""
    if _START is not None and hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME) - _START
    import psutil  # elsewhere: the process's creation time on the wall clock

    return time.time() - psutil.Process().create_time()


COMMANDS = ("harness.__main__", "harness.launch.slurm_job", "harness.launch.accelerate_launch")
"""The modules a harness process is started with (``python -m ...``): the command, the
preflight and exit helpers launch/slurm.sbatch runs, and accelerate's launcher as
``harness launch`` starts it."""


def started_as_harness() -> bool:
    """Whether this process was started as the ``harness`` command (``python -m harness``, the
    console script), not a test or a program calling ``main`` long after its own start."""
    import sys

    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", None) in COMMANDS or os.path.basename(sys.argv[0] or "") == "harness"


@contextlib.contextmanager
def collector_paused():
    """No cyclic garbage collection inside; one full collection on the way out.

    Only in a process started as ``harness`` (a test's process, its heap already big,
    would pay a full pass per run for nothing) and only where the collector was on.
    """
    pause = started_as_harness() and gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
    finally:
        if pause:
            gc.enable()
            gc.collect()


def mark_imported() -> None:
    """``harness run`` has imported what it runs with: what came before was the interpreter and imports."""
    if started_as_harness():
        _IMPORTED_AGE[:] = [process_age_s()]


class SetupClock:
    """One run's marks, each the process's age when the run reached it."""

    def __init__(self):
        self.imported = _IMPORTED_AGE.pop() if _IMPORTED_AGE else None
        self.marks: list[tuple[str, float]] = [("config_s", process_age_s())]
        self.first_step: float | None = None

    def mark(self, phase: str) -> None:
        """``phase`` (one of PHASES) has ended now."""
        self.marks.append((phase, process_age_s()))

    # The meter's listener protocol: the first step starts when the loop asks for its batch.
    def before_step(self, step: int) -> None:
        if self.first_step is None:
            self.first_step = process_age_s()

    def after_step(self, step: int, wait_s: float, step_s: float, samples: int) -> None:
        pass

    def block(self) -> tuple[float | None, dict]:
        """(``process_start_to_first_step_s``, the ``setup`` block); null where not measured.

        Without the import mark (a process not started as ``harness``, or a later run of the same
        process) the process's start is not this run's: both figures and import/config are null.
        """
        if self.first_step is None or self.imported is None:
            phases = {name: None for name in PHASES}
            previous = self.marks[0][1]
            for name, age in self.marks[1:]:
                phases[name], previous = round(age - previous, 4), age
            if self.first_step is not None:
                phases["observers_s"] = round(self.first_step - previous, 4)
            return None, phases
        ages = [("import_s", self.imported), *self.marks, ("observers_s", self.first_step)]
        phases = {name: None for name in PHASES}
        previous = 0.0
        for name, age in ages:
            phases[name], previous = round(age - previous, 4), age
        return round(self.first_step, 4), phases
