"""Fit: train the remaining epochs with a dev evaluation after each, checkpointing as asked.

``History`` is what the run has done so far; every checkpoint carries it, so a
resumed run continues the same epochs, steps and timings.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from harness.run import checkpoint
from harness.run.build import Built
from harness.config.run import to_dict
from harness.data.loaders import epoch_seed, skip_batches
from harness.run.guard import Diverged, Interrupted, StepGuard
from harness.run.loop import EpochResult, evaluate, train_epoch
from harness.measure.meter import Meter


@dataclass
class History:
    """What the run has done so far; saved in every checkpoint so a resume continues it."""

    epochs_done: int = 0
    steps_done: int = 0
    dev: list[dict] = field(default_factory=list)
    epoch_wall_s: list[float] = field(default_factory=list)
    train_elapsed_s: float = 0.0
    """Wall time spent in training and dev evaluation, across resumes."""
    time_to_target_s: float | None = None
    """Training and dev-evaluation time until the target was first reached (``train_eval_s`` then)."""
    time_to_target_wall_s: float | None = None
    """Wall time since training started until then, checkpoint writes and compile included."""
    train_eval_s: float = 0.0
    """Training and dev-evaluation time alone, across resumes: no checkpoint writes, no compile."""
    skipped_steps: int = 0
    """Optimizer steps the fp16 gradient scaler skipped (whole epochs)."""
    step_in_epoch: int = 0
    """Steps of epoch ``epochs_done + 1`` done when a signal stopped the run inside it."""
    partial_loss_sum: float = 0.0
    partial_samples: int = 0
    partial_skipped_steps: int = 0
    partial_wall_s: float = 0.0
    run_wall_s: float = 0.0
    """Wall time of every process of this run up to this checkpoint (setup included);
    what a killed process did after its last checkpoint is lost with it."""

    @classmethod
    def restore(cls, state: dict) -> "History":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in names})

    def segment_started(self, t0: float) -> None:
        """This process began at ``t0`` (perf_counter) and continues ``run_wall_s`` of earlier ones."""
        self._t0, self._before_s = t0, self.run_wall_s

    def run_wall_s_now(self) -> float:
        t0 = getattr(self, "_t0", None)
        return self.run_wall_s if t0 is None else self._before_s + time.perf_counter() - t0

    def as_dict(self) -> dict:
        self.run_wall_s = self.run_wall_s_now()
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def carry(self) -> EpochResult | None:
        if not self.step_in_epoch:
            return None
        return EpochResult(self.partial_loss_sum, self.partial_samples, self.step_in_epoch,
                           skipped_steps=self.partial_skipped_steps)

    def stopped_inside(self, result: EpochResult, wall_s: float) -> None:
        self.step_in_epoch = result.steps
        self.partial_loss_sum, self.partial_samples = result.loss_sum, result.samples
        self.partial_skipped_steps = result.skipped_steps
        self.partial_wall_s += wall_s

    def epoch_done(self, wall_s: float) -> None:
        self.epoch_wall_s.append(self.partial_wall_s + wall_s)
        self.epochs_done += 1
        self.step_in_epoch = self.partial_samples = self.partial_skipped_steps = 0
        self.partial_loss_sum = self.partial_wall_s = 0.0


@contextlib.contextmanager
def _watched(b: Built, meter: Meter, recorder):
    """What a person watches (progress.py), listening to the meter's steps while fit runs."""
    from harness.observe.progress import progress_for

    shown = progress_for(b.cfg.output, b.cfg.name, b.cfg.train.epochs, b.accelerator, recorder)
    meter.listeners.append(shown)
    try:
        yield shown
    finally:
        shown.close()
        meter.listeners.remove(shown)


def _steps_this_epoch(b: Built, budget: int | None, done: int) -> int:
    """This process's steps in the epoch: fewer than a whole one when train.max_steps ends the run inside it."""
    steps = b.rank_steps_per_epoch
    return steps if budget is None else min(steps, done + budget)


def skip_in_epoch(loader, n: int, accelerator):
    """``skip_batches`` that keeps the batch wrappers (accel.BatchWrapper): skipping on
    ``DynamicBatchDim`` itself would hand back a plain DataLoader, without the prepared
    loader's device placement and without the dynamic batch mark (a recompile inside the
    timed window); ``ChannelsLast`` would lose its memory format."""
    from harness.run.accel import BatchWrapper

    if isinstance(loader, BatchWrapper):
        return type(loader)(skip_in_epoch(loader.loader, n, accelerator))
    return skip_batches(loader, n, accelerator)


def _epoch_loader(b: Built, hist: History, epoch: int):
    """The train loader for ``epoch``, seeded so its order and draws match an uninterrupted run."""
    from accelerate.utils import set_seed

    b.loaders.reseed(b.cfg.seed, epoch)
    if hist.step_in_epoch:
        # Resuming inside the epoch: the random state saved at the stop is already
        # restored by the checkpoint, and re-seeding would rewind it to the epoch's start.
        # Optimizer steps of whole groups: step_in_epoch x grad_accum_steps micro-batches.
        return skip_in_epoch(b.loaders.train, hist.step_in_epoch * b.cfg.train.grad_accum_steps, b.accelerator)
    # Same order, augmentation and dropout for epoch k in every mode and after a resume.
    set_seed(epoch_seed(b.cfg.seed, epoch))
    return b.loaders.train


def _reached(train, dev) -> bool:
    """The dev pass reached the run's target: an accuracy at or above, or a loss at or below."""
    if train.target_loss is not None:
        return dev.loss <= train.target_loss
    return train.target_accuracy is not None and dev.accuracy >= train.target_accuracy


def _lm_dev(dev) -> dict:
    """A language model's dev pass: perplexity and bits per byte beside its loss in nats per token."""
    figures = (dev.figures or {}) if dev is not None else {}
    return {k: figures[k] for k in ("perplexity", "bits_per_byte") if k in figures}


def _drain(recorder) -> None:
    """metrics.jsonl holds every line up to the checkpoint's step before the checkpoint exists."""
    if recorder is not None:
        recorder.drain()


def fit(b: Built, meter: Meter, recorder, compiled, guard: StepGuard, output: Path, hist: History) -> str:
    """Train the remaining epochs; returns why training ended.

    The observers come in as arguments: ``meter`` times the steps, ``recorder``
    (recorder.py; None: nothing recorded) logs the losses and epochs, ``compiled``
    (compile_stats.CompileTracker; None: nothing compiled) says how much time went to
    compiling, which the train/eval time leaves out.
    Raises ``Interrupted`` after checkpointing when a signal asked to stop, and
    ``Diverged`` when the loss stopped being finite (with train.on_nonfinite: stop).
    """
    cfg, acc = b.cfg, b.accelerator
    started = time.perf_counter() - hist.train_elapsed_s
    compile_s = lambda: compiled.compile_s if compiled is not None else 0.0  # noqa: E731
    guard.step = hist.steps_done
    reason = "epochs"
    with _watched(b, meter, recorder) as shown:
        for epoch in range(hist.epochs_done, cfg.train.epochs):
            budget = None if cfg.train.max_steps is None else cfg.train.max_steps - hist.steps_done
            if budget is not None and budget <= 0:
                reason = "max_steps"
                break
            t0, c0 = time.perf_counter(), compile_s()
            carry = hist.carry()
            done = carry.steps if carry else 0
            shown.epoch_started(epoch + 1, _steps_this_epoch(b, budget, done), done)
            result = train_epoch(b.parts, _epoch_loader(b, hist, epoch), meter, guard,
                                 max_steps=budget, carry=carry, recorder=recorder)
            hist.steps_done += result.steps - (carry.steps if carry else 0)
            stop = result.stop
            if stop is not None and stop.reason == "diverged":
                raise Diverged(stop.step, epoch + 1, stop.loss)
            if not result.finished:  # a signal, between two steps of this epoch
                hist.stopped_inside(result, time.perf_counter() - t0)
                hist.train_elapsed_s = time.perf_counter() - started
                hist.train_eval_s += time.perf_counter() - t0 - (compile_s() - c0)
                _drain(recorder)
                with meter.phase("checkpoint"):
                    checkpoint.save_checkpoint(acc, output, hist.epochs_done, hist.as_dict(),
                                               cfg.output.keep_checkpoints, step_in_epoch=hist.step_in_epoch,
                                               recipe=to_dict(cfg), shards=b.shards())
                raise Interrupted(stop.signum)
            with meter.phase("eval"):
                dev = evaluate(b.parts, b.loaders.dev) if b.loaders.dev is not None else None
            hist.skipped_steps += result.skipped_steps
            hist.epoch_done(time.perf_counter() - t0)
            hist.train_elapsed_s = time.perf_counter() - started
            hist.train_eval_s += time.perf_counter() - t0 - (compile_s() - c0)
            hist.dev.append({"epoch": epoch + 1, "train_loss": result.loss,
                             "accuracy": dev.accuracy if dev else None, "loss": dev.loss if dev else None,
                             **_lm_dev(dev)})
            if recorder is not None:
                recorder.epoch_done(hist.dev[-1], hist.epoch_wall_s[-1])
            if dev and hist.time_to_target_s is None and _reached(cfg.train, dev):
                hist.time_to_target_s = hist.train_eval_s
                hist.time_to_target_wall_s = hist.train_elapsed_s
            stop = guard.check()  # a signal during evaluation: stop after this epoch's checkpoint
            if cfg.output.checkpoint_every_epoch or stop is not None:
                _drain(recorder)
                with meter.phase("checkpoint"):
                    checkpoint.save_checkpoint(acc, output, epoch + 1, hist.as_dict(), cfg.output.keep_checkpoints,
                                               recipe=to_dict(cfg), shards=b.shards())
            if stop is not None:
                raise Interrupted(stop.signum)
            shown.epoch_ended(result.loss, dev.accuracy if dev else None)
            if cfg.train.stop_at_target and hist.time_to_target_s is not None:
                reason = "target_loss" if cfg.train.target_loss is not None else "target_accuracy"
                break
    return reason
