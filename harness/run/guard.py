"""Why training must stop early: a signal asked for it, or the loss stopped being finite.

The loop calls ``StepGuard.after_step`` at every step boundary, like the meter. The
guard never stops a process on its own: it answers "stop, and why", and every
rank gets the same answer at the same step, so a distributed job leaves its
collectives in step and can checkpoint together.

Costs, kept off the hot path:
- on the CPU the loop hands each step's loss over as a Python float (reading a CPU tensor
  never waits for a device), and the guard tests it with ``math.isfinite``: no tensor op
  at all. On an accelerator the loss is a tensor and the check stays on the device and off
  the step: a step only keeps a reference to its loss (no tensor op); every
  ``CHECK_EVERY`` steps, at the end of each epoch and before the record is read, the kept
  losses are checked together (a handful of ops for the lot) into a running record of the
  first bad step, which the host then reads. Either way a diverged run stops at the same
  check, at most ``CHECK_EVERY - 1`` steps late, and reports the exact step where the loss
  first went bad;
- a signal only sets a flag. One process reads it at every step; several agree on it
  with one small all-gather at the same checks as the loss.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from dataclasses import dataclass
from typing import Literal

import torch

CHECK_EVERY = 10
"""Steps between host-side checks of the device-side loss record (and, with several
processes, of the stop flag)."""

NO_STEP = 2**62

SIGTERM_ONCE_ENV = "HARNESS_SIGTERM_ONCE"
"""Set to 1 to treat every SIGTERM after the first as the same request (as inside Slurm)."""


class Interrupted(Exception):
    """A signal stopped the run at a step boundary; the state was checkpointed."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class Diverged(Exception):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, epoch: int, loss: float):
        self.step, self.epoch, self.loss = step, epoch, loss
        super().__init__(f"the training loss became {loss} at step {step} (epoch {epoch}); "
                         "lower optim.lr, or set train.on_nonfinite: record to only count such steps")


class SecondSignal(KeyboardInterrupt):
    """A second SIGINT/SIGTERM (SIGINT only, inside Slurm): out now, without a checkpoint of the epoch (exit 128+N)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by a second {signal.Signals(signum).name}")


class StopSignals:
    """SIGINT and SIGTERM set a flag instead of unwinding the stack mid-step.

    A second signal raises ``SecondSignal`` at once: a user who presses Ctrl-C twice
    wants out now, checkpoint or not -- except inside ``deferred_signals()`` (a
    checkpoint being put in place, the final report being written), which it waits
    for: the report is the last thing that must not be lost. Only the main thread
    can install handlers; in any other thread (a test runner's worker, say) signals
    keep their default action.

    Inside a Slurm job (``SLURM_JOB_ID`` set) or with ``HARNESS_SIGTERM_ONCE=1``, a
    SIGTERM after the first signal is the same request, not a second one: at a time
    limit, a pre-emption or a requeue slurmstepd signals every process of the step,
    and the launcher (torchrun, srun) passes its own SIGTERM on to the ranks, so each
    rank gets it two or three times within milliseconds. The run still checkpoints and
    stops at the next step boundary; the scheduler's SIGKILL after its KillWait is what
    ends it early. SIGINT keeps "a second one means out now" everywhere: that is a person
    at a terminal. The environment is read once, here at construction.
    """

    active: "StopSignals | None" = None

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, object] = {}
        self._defer = 0
        self._pending: int | None = None
        self.sigterm_once = bool(os.environ.get("SLURM_JOB_ID")) or os.environ.get(SIGTERM_ONCE_ENV) == "1"

    def _handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
        elif signum == signal.SIGTERM and self.sigterm_once:
            return  # the scheduler's one request, delivered again through another path
        elif self._defer:
            self._pending = signum
        else:
            raise SecondSignal(signum)

    @contextlib.contextmanager
    def deferred(self):
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1
        if not self._defer and self._pending is not None:
            signum, self._pending = self._pending, None
            raise SecondSignal(signum)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        StopSignals.active = self
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
        StopSignals.active = None


def deferred_signals():
    """Hold a second signal until the block ends (a no-op outside a run)."""
    active = StopSignals.active
    return active.deferred() if active is not None else contextlib.nullcontext()


@dataclass
class Verdict:
    reason: Literal["signal", "diverged"]
    signum: int | None = None
    step: int | None = None
    loss: float | None = None


class StepGuard:
    def __init__(self, accelerator, signals: StopSignals, on_nonfinite: str = "stop"):
        self.acc = accelerator
        self.signals = signals
        self.stop_on_nonfinite = on_nonfinite == "stop"
        self.multi = accelerator.num_processes > 1
        self.device = accelerator.device
        # The record of the losses handed over as floats: the first non-finite one's step
        # (NO_STEP: none yet) and value, and their count.
        self._first_bad, self._bad_loss, self._bad_count = NO_STEP, math.nan, 0
        self._kept: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        """The same record for the losses handed over as tensors, on the device; made at their first fold."""
        self.step = 0
        """Optimizer steps of the whole run so far (resumes included); step numbers in the
        report count from 1."""
        self._since_check = 0
        self._losses: list[torch.Tensor] = []
        """The tensor losses of the steps since the last fold, the first of them step ``_first_kept``."""
        self._first_kept = 0

    def after_step(self, loss: torch.Tensor | float) -> Verdict | None:
        """Step ``self.step + 1`` ended with ``loss``: a float (the CPU loop's) or a tensor."""
        self.step += 1
        self._since_check += 1
        if loss.__class__ is float:
            if not math.isfinite(loss):
                self._bad_count += 1
                if self._first_bad == NO_STEP:
                    self._first_bad, self._bad_loss = self.step, loss
        else:
            if not self._losses:
                self._first_kept = self.step
            # Kept as it is (the loop hands it over detached): no op on the step.
            self._losses.append(loss.detach() if loss.requires_grad else loss)
        if self._since_check >= CHECK_EVERY:
            return self.check()
        if not self.multi and self.signals.signum is not None:
            return Verdict("signal", self.signals.signum)
        return None

    def _fold(self) -> None:
        """The kept tensor losses into the device record: the first non-finite one's step and
        value (when the record has none yet) and their count."""
        if not self._losses:
            return
        if self._kept is None:
            self._kept = (torch.full((), NO_STEP, dtype=torch.long, device=self.device),
                          torch.zeros((), device=self.device), torch.zeros((), dtype=torch.long, device=self.device))
        first_bad, bad_loss, bad_count = self._kept
        losses = torch.stack(self._losses).reshape(-1).float()
        self._losses = []
        bad = ~torch.isfinite(losses)
        steps = torch.where(bad, torch.arange(self._first_kept, self._first_kept + len(losses),
                                              device=losses.device), NO_STEP)
        at = steps.argmin()  # the first bad one's index (any index when none is bad)
        first = (first_bad == NO_STEP) & (steps[at] != NO_STEP)
        bad_count += bad.sum()
        self._kept = (torch.where(first, steps[at], first_bad), torch.where(first, losses[at], bad_loss), bad_count)

    def _rows(self) -> list[list[int]]:
        """[signal number (0: none), first bad step, bad steps] of each rank, read on the host:
        with losses kept on the device the one transfer a check costs, and with several
        processes its one collective."""
        self._fold()
        signum = self.signals.signum or 0
        if self._kept is None:  # every loss came as a float: the record is on the host already
            row = [signum, self._first_bad, self._bad_count]
            if not self.multi:
                return [row]
            return self.acc.gather(torch.tensor([row], device=self.device)).tolist()
        first, _, count = self._kept
        if self._bad_count:  # some losses came as floats too: both records together
            first, count = torch.clamp(first, max=self._first_bad), count + self._bad_count
        state = torch.stack([torch.tensor(signum, device=self.device), first, count]).reshape(1, 3)
        if self.multi:
            state = self.acc.gather(state)
        return state.tolist()

    def _bad_value(self, step: int) -> float:
        """The loss of bad step ``step``, known on the rank(s) where it happened (NaN elsewhere)."""
        if self._first_bad == step:
            return self._bad_loss
        if self._kept is not None and int(self._kept[0]) == step:
            return float(self._kept[1])
        return float("nan")

    def check(self) -> Verdict | None:
        """Read the record on the host; with several processes, every rank must call this together."""
        self._since_check = 0
        rows = self._rows()
        first = min(r[1] for r in rows)
        if self.stop_on_nonfinite and first != NO_STEP:
            return Verdict("diverged", step=first, loss=self._bad_value(first))
        signums = [r[0] for r in rows if r[0]]
        if signums:
            return Verdict("signal", signums[0])
        return None

    def record(self) -> dict:
        """For the report: steps whose loss was not finite (summed over ranks) and the first.

        With several processes every rank must call this together.
        """
        rows = self._rows()
        first = min(r[1] for r in rows)
        return {"nonfinite_loss_steps": sum(r[2] for r in rows),
                "first_nonfinite_step": None if first == NO_STEP else first}
