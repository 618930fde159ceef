"""One run, end to end: set up (build.py), fit (fit.py), test, finish (finish.py).

This module only orders the phases and turns what stopped the run into a status;
each phase's result goes to the report builder (report_builder.py), and the run
folder (files/run_folder.py) holds the lock and writes config.yaml and report.yaml.
Bad input raised while setting up propagates before anything is written.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
import traceback
from pathlib import Path

from harness.config.run import Config, to_dict
from harness.files import atomic
from harness.files.run_folder import RunFolder
from harness.measure import compile_stats, contention, model_state, startup, threads
from harness.measure.aggregate import aggregate
from harness.measure.listeners import FirstStep
from harness.measure.meter import Meter
from harness.run import accel, checkpoint, finish, sharding
from harness.run.build import Built, build, prepare
from harness.run.fit import History, fit
from harness.run.guard import Diverged, Interrupted, SecondSignal, StepGuard, StopSignals
from harness.run.loop import evaluate
from harness.run.report_builder import Outcome, ReportBuilder, batch_block, data_block, text_data_block


EXIT_DIVERGED = 3


def execute(cfg: Config, output: Path, resume: bool | Path = False, overwrite: bool = False) -> tuple[dict, int]:
    """Run ``cfg`` into ``output``; returns (report, exit status). BadInput propagates.

    ``resume``: True continues from the newest checkpoint, a path from that checkpoint
    (resume.py chose and checked it). A run that does not resume never writes into a
    folder holding another run's files: bad input, or with ``overwrite`` those files are
    removed first (run_folder.py). Exit status: 0 completed, 1 failed, 3 diverged,
    128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM). SIGINT and SIGTERM are held
    for the whole run, so one arriving during setup still stops it cleanly at the
    first step. A full disk raises ``DiskFull`` when not even the report could be
    written (the previous report and checkpoints stay).
    """
    with StopSignals() as signals, contextlib.ExitStack() as held:
        return _execute(cfg, output, resume, overwrite, signals, held)


def _train_and_test(b: Built, meter: Meter, recorder, compiled, guard: StepGuard, output: Path,
                    hist: History) -> Outcome:
    """Fit, test and save the model; what it came to, whatever stopped it.

    After a failure or a second signal the ranks may stand at different collectives,
    so none may be started (``ranks_in_step`` false).
    """
    acc = b.accelerator
    done = Outcome("completed", 0, True)
    try:
        done.stop_reason = fit(b, meter, recorder, compiled, guard, output, hist)
        with meter.phase("eval"):
            test = evaluate(b.parts, b.loaders.test) if b.loaders.test is not None else None
        done.accuracy = finish.accuracy_block(b.cfg, hist, test)
        if b.cfg.output.save_model:
            with meter.phase("checkpoint"):
                checkpoint.save_model(acc, b.parts.model, output / "model.pt")
                if acc.is_main_process and not b.text:  # a language model has no classes
                    checkpoint.save_model_card(output, b.data.classes, b.data.sample_shape)
            done.artifacts = {"model": "model.pt"} if b.text else {"model": "model.pt", "classes": checkpoint.MODEL_CARD}
    except Interrupted as err:
        done.status, done.code = "interrupted", 128 + err.signum
        done.error = f"{err}; the state is checkpointed: resume with --resume {output}"
    except Diverged as err:
        done.status, done.code = "diverged", EXIT_DIVERGED
        done.error = str(err)
        done.divergence = {"step": err.step, "epoch": err.epoch, "loss": err.loss}
    except KeyboardInterrupt as err:  # a second signal: out now, without a checkpoint
        signum = err.signum if isinstance(err, SecondSignal) else 2
        done.status, done.code, done.ranks_in_step = "interrupted", 128 + signum, False
        done.error = f"{err or 'interrupted by the user'} (a second signal: no checkpoint of this epoch)"
    except atomic.DiskFull as err:  # one line says it all: no traceback
        done.status, done.code, done.ranks_in_step = "failed", 1, False
        done.error = str(err)
    except Exception as err:  # a failed run is data: the report says what went wrong
        done.status, done.code, done.ranks_in_step = "failed", 1, False
        done.error = f"{err.__class__.__name__}: {err}"
        done.traceback = traceback.format_exc(limit=8)
    return done


def _execute(cfg: Config, output: Path, resume: bool | Path, overwrite: bool, signals: StopSignals,
             held: contextlib.ExitStack) -> tuple[dict, int]:
    t_start = time.perf_counter()
    clock = startup.SetupClock()
    b = build(cfg, clock)
    acc = b.accelerator
    main = acc.is_main_process
    # One run per folder (the main process holds it for the job), taken once the
    # recipe is known good, so refused input writes nothing; then another run's files
    # are refused (or cleared, with --overwrite), and what a killed run left
    # half-written is cleared away.
    folder = held.enter_context(RunFolder(output, enabled=main))
    folder.claim(overwrite, fresh=not resume)
    builder = ReportBuilder.start(cfg)
    if main:  # before prepare(), which every rank passes together
        shutil.rmtree(finish.failures_dir(output), ignore_errors=True)
    prepare(b)
    clock.mark("prepare_s")
    accel.mark_batch_dynamic(b.loaders, cfg.runtime.compile)
    accel.channels_last_batches(b.loaders, cfg.runtime)
    hist = History()
    hist.segment_started(t_start)
    last = checkpoint.latest_checkpoint(output) if resume is True else (resume or None)
    if last is not None:
        hist = History.restore(checkpoint.load_checkpoint(acc, last, shards=b.shards()))
        hist.segment_started(t_start)
        if main:
            checkpoint.drop_newer(output, last)
    mode = {**accel.describe(acc), "precision": b.precision.name, **sharding.describe(b.parts.model)}
    builder.setup(text_data_block(b.data) if b.text else data_block(b.data), b.model_info, mode,
                  resumed=(hist.epochs_done, hist.step_in_epoch) if last is not None else None,
                  batch=batch_block(cfg, acc.num_processes))
    folder.write_config(to_dict(cfg))
    compiled = compile_stats.CompileTracker(cfg.runtime.compile)
    meter, recorder, profiler = _observers(b, output, hist, resumed=last is not None, hooks=[compiled])
    meter.listeners.append(FirstStep(clock))  # it marks the first train step's start, and needs no other
    if main:
        threads.warn_at_start(threads.threads_block(meter.probe.capacity, contention.launched_ranks()))
    guard = StepGuard(acc, signals, cfg.train.on_nonfinite)
    warning = window_warning(b, hist)
    if warning and main:
        print(warning, file=sys.stderr, flush=True)
    setup_s = time.perf_counter() - t_start
    done = _train_and_test(b, meter, recorder, compiled, guard, output, hist)
    # The report is the last thing that must not be lost: a second signal from here
    # on waits until it is written (and then ends the process, 128+N).
    held.enter_context(signals.deferred())
    done.accuracy = done.accuracy or finish.accuracy_block(cfg, hist, None)
    builder.trained(done)
    multi = acc.num_processes > 1
    if multi and not done.ranks_in_step:
        finish.note_rank_failure(output, acc.process_index, done.error, done.traceback)
    _measured(b, builder, meter, compiled, guard, hist, done)
    if profiler is not None and main:
        builder.profiled(*_finish_profile(profiler))
    to_first_step_s, setup_phases = clock.block()
    builder.finished(done.status, {
        "setup_s": setup_s,
        "process_start_to_first_step_s": to_first_step_s,
        "setup": setup_phases,
        "epoch_wall_s": hist.epoch_wall_s,
        "train_wall_s": hist.train_elapsed_s,
        "total_wall_s": hist.run_wall_s_now(),
        "process_wall_s": time.perf_counter() - t_start,
    })
    if main:
        if multi:
            finish.blame_first_failure(output, builder)
        builder.warn(recorder.finish(builder.report))
        finish.save_report(folder, builder.report)
    if done.ranks_in_step:
        # The ranks leave together: one tearing down its process group while another
        # still finishes the last collective can abort inside gloo.
        acc.wait_for_everyone()
        acc.end_training()
    return builder.report, done.code


def _measured(b: Built, builder: ReportBuilder, meter: Meter, compiled, guard: StepGuard, hist: History,
              done: Outcome) -> None:
    """The ranks' measurements combined, the compute figures and the guard's record, to the builder."""
    cfg, acc = b.cfg, b.accelerator
    main, multi = acc.is_main_process, acc.num_processes > 1
    # One gather for every per-rank summary, and only while the ranks are in step.
    local = [(meter.summary(), compiled.summary(), model_state.model_state(b.parts.model, b.parts.optimizer))]
    if multi and done.ranks_in_step:
        from accelerate.utils import gather_object
        local = gather_object(local)
    figures = aggregate([m for m, _, _ in local], batch_block(cfg, acc.num_processes)["global_batch_size"])
    model_state.place(figures, [held for _, _, held in local])
    # Only the main process reports; measuring the peak on every rank at once would
    # have the ranks share the cores and cache a peak that is a fraction of the real one.
    # FLOPs and the peak are counted after training, on the run's device, and a failure
    # there costs those figures and a warning, never the report.
    compute, warnings = finish.compute_figures(b, figures["throughput"]["samples_per_s"]) if main else ({}, [])
    if main:
        figures["memory"]["saved_for_backward_mb"], more = finish.saved_for_backward_mb(b)
        warnings += more
    if multi and not done.ranks_in_step:
        warnings.append(f"rank {acc.process_index} failed: figures are this rank's alone")
    foreign = (figures["contention"] or {}).get("foreign_cpu_fraction")
    holders = None
    if figures["contention"] and acc.device.type == "cuda":
        holders = contention.device_holders(acc.device.index or 0, contention.own_pids())
    skipped = hist.skipped_steps + hist.partial_skipped_steps if b.precision.uses_grad_scaler else None
    builder.measured(figures, threads.threads_block(meter.probe.capacity, contention.launched_ranks(), foreign),
                     nonfinite=guard.record() if done.ranks_in_step or not multi else None, compute=compute,
                     compiled=compile_stats.combine(cfg.runtime.compile, [c for _, c, _ in local]),
                     scaler_skipped_steps=skipped, device_processes=holders, warnings=warnings)


def _observers(b: Built, output: Path, hist: History, resumed: bool, hooks: list):
    """The meter, with the recorder (metrics.jsonl, trackers) and the profiler listening to its steps.

    The meter and the recorder share one memory sampler, each given it as it is made.
    """
    from harness.measure.meter import sampler_for
    from harness.measure.profile import Profiler, first_step
    from harness.observe.recorder import Recorder, start_trackers

    cfg, acc = b.cfg, b.accelerator
    memory = sampler_for(cfg.measure, acc.device)
    recorder = Recorder(acc, b.parts.optimizer, output, cfg.tracking, hist.steps_done, hist.epochs_done, resumed,
                        memory=memory)
    start_trackers(acc, cfg.tracking, output, to_dict(cfg), hist.steps_done, resumed)
    profiler = None
    if cfg.measure.profile is not None:
        left = _steps_left(b, hist)
        # Every rank leaves the same steps untimed (the window edges are barriers); one traces.
        profiler = Profiler(cfg.measure.profile, first_step(cfg.measure, left), output,
                            cuda=acc.device.type == "cuda", enabled=acc.is_main_process)
    # A workload in tokens (a language model) is counted in tokens too, by its task.
    tokens = (lambda batch, n: b.task.units(batch[1], n)) if b.task.unit == "tokens" else None
    meter = Meter(cfg.measure, acc.device, barrier=acc.wait_for_everyone, hooks=hooks,
                  listeners=[recorder] + ([profiler] if profiler else []), memory=memory, tokens=tokens)
    if profiler is not None:
        meter.untimed = profiler.steps
    return meter, recorder, profiler


def _steps_left(b: Built, hist: History) -> int:
    """The train steps this process will take (one rank's: the loader is sharded by now)."""
    cfg = b.cfg
    left = (cfg.train.epochs - hist.epochs_done) * b.rank_steps_per_epoch - hist.step_in_epoch
    if cfg.train.max_steps is not None:
        left = min(left, cfg.train.max_steps - hist.steps_done)
    return max(left, 0)


def window_warning(b: Built, hist: History) -> str | None:
    """Said before training when warm-up leaves no step (or too few) to time: the end of a
    1-epoch DDP run is a late moment to learn it measured nothing. The meter counts this
    process's steps from 0, warm-up included, also after a resume."""
    m, left = b.cfg.measure, _steps_left(b, hist)
    world = b.accelerator.num_processes
    has = f"each of the {world} ranks has {left} train steps" if world > 1 else f"this run has {left} train steps"
    limit = "train.max_steps" if b.cfg.train.max_steps is not None and \
        left == b.cfg.train.max_steps - hist.steps_done else "train.epochs"
    if left <= m.warmup_steps:
        return (f"warning: measure.warmup_steps={m.warmup_steps} takes every step: {has} "
                f"({b.rank_steps_per_epoch} per epoch), so no throughput will be measured; "
                f"lower measure.warmup_steps (e.g. {left // 2}) or raise {limit}")
    if m.window_steps is not None and m.repeat_unit == "window":
        fit = (left - m.warmup_steps) // m.window_steps
        if fit < m.repeats:
            return (f"warning: {has} ({b.rank_steps_per_epoch} per epoch): after measure.warmup_steps="
                    f"{m.warmup_steps}, {fit} of measure.repeats={m.repeats} windows of measure.window_steps="
                    f"{m.window_steps} fit; lower those or raise {limit}")
    return None


def _finish_profile(profiler) -> tuple[dict | None, str | None]:
    """The report's ``profile`` block and its warning; a trace that cannot be written costs a
    warning, not the run."""
    try:
        profiler.finish()  # a run that ended before the last traced step
    except Exception as err:  # noqa: BLE001 -- e.g. a full disk under profile/
        return None, f"profile is null: {err.__class__.__name__}: {err}"
    block = profiler.block()
    if block is None:
        return None, f"profile is null: the run ended before step {profiler.start} (measure.profile.after)"
    return block, None
