"""One run: build the recipe, hand it to the Accelerator, fit, test, report.

Everything that can be bad input (config, data, model, mode, output folder) is
checked in ``build`` before anything is written, so a refused run leaves no files.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from harness import accel, checkpoint, environment
from harness.config import Config, config_hash, recipe_hash, to_dict
from harness.data import DataBundle, build_data
from harness.data.loaders import Loaders, build_loaders, epoch_seed, skip_batches
from harness.data.resident import DeviceResidentLoader
from harness.guard import Diverged, Interrupted, StepGuard, StopSignals
from harness.loop import EpochResult, TrainParts, evaluate, train_epoch
from harness.measure import compile_stats
from harness.measure.aggregate import aggregate
from harness.measure.flops import datasheet_peak_tflops, flops_per_sample, measured_peak_flops
from harness.measure.meter import Meter
from harness.models import build_model
from harness.optim import build_loss, build_optimizer, build_scheduler
from harness.report import SCHEMA_VERSION, write_report


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Built:
    cfg: Config
    accelerator: object
    precision: accel.Precision
    data: DataBundle
    loaders: Loaders
    parts: TrainParts
    model_info: dict
    steps_per_epoch: int
    """Optimizer steps per epoch in a single process (before sharding)."""


def build(cfg: Config) -> Built:
    from accelerate.utils import set_seed

    accelerator, precision = accel.build_accelerator(cfg.runtime)
    set_seed(cfg.seed)
    with accelerator.main_process_first():
        data = build_data(cfg.data, cfg.seed)
    loaders = build_loaders(data.train, data.dev, data.test, cfg.loader, cfg.seed)
    set_seed(cfg.seed)  # initial weights do not depend on what the data code drew
    model, info = build_model(cfg.model, data.sample_shape, data.num_classes)
    steps_per_epoch = len(loaders.train)
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_scheduler(cfg.optim, optimizer, steps_per_epoch, cfg.train.epochs)
    parts = TrainParts(accelerator, model, optimizer, scheduler,
                       build_loss(cfg.loss), build_loss(cfg.loss, reduction="none"))
    return Built(cfg, accelerator, precision, data, loaders, parts, info, steps_per_epoch)


def _prepare_core(b: Built, *loaders):
    """Hand model, optimizer, scheduler and ``loaders`` to the Accelerator; the prepared loaders."""
    p = b.parts
    core = [p.model, p.optimizer] + ([p.scheduler] if p.scheduler is not None else [])
    prepared = list(b.accelerator.prepare(*core, *loaders))
    p.model, p.optimizer = prepared[:2]
    if p.scheduler is not None:
        p.scheduler = prepared[2]
    return prepared[len(core):]


def prepare(b: Built) -> None:
    """Hand model, optimizer, loaders and scheduler to the Accelerator."""
    acc, ld = b.accelerator, b.loaders
    if isinstance(ld.train, DeviceResidentLoader):
        _prepare_device_resident(b)
        return
    (ld.train,) = _prepare_core(b, ld.train)
    if ld.dev is not None:
        ld.dev = acc.prepare(ld.dev)
    if ld.test is not None:
        ld.test = acc.prepare(ld.test)


def _prepare_device_resident(b: Built) -> None:
    """loader.kind=device_resident: the loaders stay out of ``accelerate.prepare``.

    Wrapping them would re-batch and copy tensors that are already on the device.
    The train loader takes its rank's shard itself; under DDP the dev/test tensors
    go back through an ordinary DataLoader so Accelerate shards them and
    ``gather_for_metrics`` drops its padding, exactly as on the DataLoader path.
    """
    acc, ld = b.accelerator, b.loaders
    _prepare_core(b)
    ld.train = ld.train.to(acc.device).shard(acc.process_index, acc.num_processes)
    for name in ("dev", "test"):
        loader = getattr(ld, name)
        if loader is None:
            continue
        setattr(ld, name, loader.to(acc.device) if acc.num_processes == 1 else acc.prepare(loader.as_dataloader()))


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
    skipped_steps: int = 0
    """Optimizer steps the fp16 gradient scaler skipped (whole epochs)."""
    step_in_epoch: int = 0
    """Steps of epoch ``epochs_done + 1`` done when a signal stopped the run inside it."""
    partial_loss_sum: float = 0.0
    partial_samples: int = 0
    partial_skipped_steps: int = 0
    partial_wall_s: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)

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


def _progress(b: Built, total: int, initial: int):
    from tqdm.auto import tqdm

    show = b.cfg.output.progress
    if show is None:
        show = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, unit="epoch", desc=b.cfg.name,
                disable=not (show and b.accelerator.is_main_process))


def _epoch_loader(b: Built, hist: History, epoch: int):
    """The train loader for ``epoch``, seeded so its order and draws match an uninterrupted run."""
    from accelerate.utils import set_seed

    b.loaders.reseed(b.cfg.seed, epoch)
    if hist.step_in_epoch:
        # Resuming inside the epoch: the random state saved at the stop is already
        # restored by the checkpoint, and re-seeding would rewind it to the epoch's start.
        return skip_batches(b.loaders.train, hist.step_in_epoch, b.accelerator)
    # Same order, augmentation and dropout for epoch k in every mode and after a resume.
    set_seed(epoch_seed(b.cfg.seed, epoch))
    return b.loaders.train


def fit(b: Built, meter: Meter, guard: StepGuard, output: Path, hist: History) -> str:
    """Train the remaining epochs; returns why training ended.

    Raises ``Interrupted`` after checkpointing when a signal asked to stop, and
    ``Diverged`` when the loss stopped being finite (with train.on_nonfinite: stop).
    """
    cfg, acc = b.cfg, b.accelerator
    bar = _progress(b, cfg.train.epochs, hist.epochs_done)
    started = time.perf_counter() - hist.train_elapsed_s
    guard.step = hist.steps_done
    reason = "epochs"
    try:
        for epoch in range(hist.epochs_done, cfg.train.epochs):
            budget = None if cfg.train.max_steps is None else cfg.train.max_steps - hist.steps_done
            if budget is not None and budget <= 0:
                reason = "max_steps"
                break
            t0 = time.perf_counter()
            carry = hist.carry()
            result = train_epoch(b.parts, _epoch_loader(b, hist, epoch), meter, guard,
                                 max_steps=budget, carry=carry)
            hist.steps_done += result.steps - (carry.steps if carry else 0)
            stop = result.stop
            if stop is not None and stop.reason == "diverged":
                raise Diverged(stop.step, epoch + 1, stop.loss)
            if not result.finished:  # a signal, between two steps of this epoch
                hist.stopped_inside(result, time.perf_counter() - t0)
                hist.train_elapsed_s = time.perf_counter() - started
                checkpoint.save_checkpoint(acc, output, hist.epochs_done, hist.as_dict(),
                                           cfg.output.keep_checkpoints, step_in_epoch=hist.step_in_epoch)
                raise Interrupted(stop.signum)
            dev = evaluate(b.parts, b.loaders.dev) if b.loaders.dev is not None else None
            hist.skipped_steps += result.skipped_steps
            hist.epoch_done(time.perf_counter() - t0)
            hist.train_elapsed_s = time.perf_counter() - started
            hist.dev.append({"epoch": epoch + 1, "train_loss": result.loss,
                             "accuracy": dev.accuracy if dev else None, "loss": dev.loss if dev else None})
            target = cfg.train.target_accuracy
            if target is not None and dev and hist.time_to_target_s is None and dev.accuracy >= target:
                hist.time_to_target_s = hist.train_elapsed_s
            stop = guard.check()  # a signal during evaluation: stop after this epoch's checkpoint
            if cfg.output.checkpoint_every_epoch or stop is not None:
                checkpoint.save_checkpoint(acc, output, epoch + 1, hist.as_dict(), cfg.output.keep_checkpoints)
            if stop is not None:
                raise Interrupted(stop.signum)
            bar.set_postfix(loss=f"{result.loss:.4f}", dev_acc=f"{dev.accuracy:.4f}" if dev else "-")
            bar.update(1)
            if cfg.train.stop_at_target and hist.time_to_target_s is not None:
                reason = "target_accuracy"
                break
    finally:
        bar.close()
    return reason


def accuracy_block(cfg: Config, hist: History, test) -> dict:
    devs = [d for d in hist.dev if d["accuracy"] is not None and not math.isnan(d["accuracy"])]
    best = max(devs, key=lambda d: d["accuracy"]) if devs else None
    return {
        "dev": hist.dev,
        "best_dev_accuracy": best["accuracy"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "final_dev_accuracy": devs[-1]["accuracy"] if devs else None,
        "test_accuracy": test.accuracy if test else None,
        "test_loss": test.loss if test else None,
        "test_samples": test.samples if test else 0,
        "target_accuracy": cfg.train.target_accuracy,
        "time_to_target_s": hist.time_to_target_s,
    }


def count_flops(b: Built) -> float | None:
    """Forward+backward FLOPs per sample, on one batch of the train split (before prepare)."""
    if not b.cfg.measure.count_flops:
        return None
    import torch

    from harness.data.split import TransformedSubset

    train = b.data.train
    n = min(b.cfg.loader.batch_size, len(train))
    # The train samples through the eval transform: same shapes, and no augmentation
    # draw moves the random state before training starts.
    view = TransformedSubset(train.base, train.indices[:n], b.data.dev.transform)
    inputs, targets = zip(*(view[i] for i in range(n)))
    return flops_per_sample(b.parts.model, torch.stack(inputs), torch.tensor(targets), b.parts.loss_fn)


def compute_block(b: Built, fps: float | None, samples_per_s: float | None) -> dict:
    """Achieved FLOP/s and MFU against a measured peak and a datasheet peak (null when unknown)."""
    acc = b.accelerator
    device = acc.device
    name = environment.gpus()[0]["name"] if device.type == "cuda" else environment.cpu_model()
    block = {"flops_per_sample": fps, "achieved_tflops": None, "achieved_tflops_per_device": None,
             "measured_peak_tflops": None, "measured_peak_at": None, "measured_peak_load_avg_1m": None,
             "datasheet_peak_tflops": None,
             "mfu_measured_peak": None, "mfu_datasheet": None, "peak_device": name,
             "peak_dtype": str(b.precision.compute_dtype).replace("torch.", "")}
    if fps is None or not samples_per_s:
        return block
    per_device = fps * samples_per_s / acc.num_processes
    block["achieved_tflops"] = fps * samples_per_s / 1e12
    block["achieved_tflops_per_device"] = per_device / 1e12
    if b.cfg.measure.measure_peak:
        peak, context = measured_peak_flops(device, b.precision.compute_dtype, name)
        block["measured_peak_tflops"] = peak / 1e12
        block["measured_peak_at"] = context["measured_at"]
        block["measured_peak_load_avg_1m"] = context["load_avg_1m"]
        block["mfu_measured_peak"] = per_device / peak
    sheet = datasheet_peak_tflops(name, b.precision.name) if device.type == "cuda" else None
    if sheet:
        block["datasheet_peak_tflops"] = sheet
        block["mfu_datasheet"] = per_device / (sheet * 1e12)
    return block


def warnings_for(figures: dict) -> list[str]:
    out = []
    if not figures["throughput"]["measured_steps"]:
        out.append("no step fell inside the timed window: lower measure.warmup_steps or train longer")
    step = figures.get("step_time_ms") or {}
    if step.get("noise") in ("noisy", "unreliable"):
        out.append(f"step_time_ms is {step['noise']}: IQR/median = {step['iqr_over_median']:.2f} "
                   "(> 0.10 noisy, > 0.25 unreliable)")
    return out


def base_report(cfg: Config) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "error": None,
        "name": cfg.name,
        "started_at": _now(),
        "finished_at": None,
        "config_hash": config_hash(cfg),
        "recipe_hash": recipe_hash(cfg),
        "config": to_dict(cfg),
        "environment": environment.collect(cfg.seed),
        "accuracy": {},
        "timing": {},
        "throughput": {},
    }


EXIT_DIVERGED = 3


def execute(cfg: Config, output: Path, resume: bool = False) -> tuple[dict, int]:
    """Run ``cfg`` into ``output``; returns (report, exit status). BadInput propagates.

    Exit status: 0 completed, 1 failed, 3 diverged, 128+N stopped by signal N
    (130 Ctrl-C, 143 SIGTERM). SIGINT and SIGTERM are held for the whole run, so
    one arriving during setup still stops it cleanly at the first step.
    """
    with StopSignals() as signals:
        return _execute(cfg, output, resume, signals)


def _train_and_test(b: Built, meter: Meter, guard: StepGuard, output: Path, hist: History,
                    report: dict) -> tuple[str, int, bool]:
    """Fit, test and save the model; (status, exit status, whether the ranks are still in step).

    Whatever stops the run is recorded in ``report``. After a failure or a second
    signal the ranks may stand at different collectives, so none may be started.
    """
    acc = b.accelerator
    try:
        report["stop_reason"] = fit(b, meter, guard, output, hist)
        test = evaluate(b.parts, b.loaders.test) if b.loaders.test is not None else None
        report["accuracy"] = accuracy_block(b.cfg, hist, test)
        if b.cfg.output.save_model:
            checkpoint.save_model(acc, b.parts.model, output / "model.pt")
            report["artifacts"] = {"model": "model.pt"}
    except Interrupted as err:
        report["error"] = f"{err}; the state is checkpointed: resume with --resume {output}"
        return "interrupted", 128 + err.signum, True
    except Diverged as err:
        report["error"] = str(err)
        report["divergence"] = {"step": err.step, "epoch": err.epoch, "loss": err.loss}
        return "diverged", EXIT_DIVERGED, True
    except KeyboardInterrupt:  # a second signal: out now, without a checkpoint
        report["error"] = "interrupted by the user (a second signal: no checkpoint of this epoch)"
        return "interrupted", 130, False
    except Exception as err:  # a failed run is data: the report says what went wrong
        report["error"] = f"{err.__class__.__name__}: {err}"
        report["traceback"] = traceback.format_exc(limit=8)
        return "failed", 1, False
    return "completed", 0, True


def _execute(cfg: Config, output: Path, resume: bool, signals: StopSignals) -> tuple[dict, int]:
    t_start = time.perf_counter()
    b = build(cfg)
    acc = b.accelerator
    if acc.is_main_process:
        checkpoint.check_writable(output)
    report = base_report(cfg)
    report["data"] = {"source": b.data.source, "num_classes": b.data.num_classes,
                      "sample_shape": list(b.data.sample_shape), "sizes": b.data.sizes(),
                      "skipped_files": b.data.skipped}
    report["model"] = b.model_info
    fps = count_flops(b)
    if acc.is_main_process:  # before prepare(), which every rank passes together
        shutil.rmtree(_failures_dir(output), ignore_errors=True)
    prepare(b)
    accel.mark_batch_dynamic(b.loaders, cfg.runtime.compile)
    report["distributed"] = accel.describe(acc)
    report["distributed"]["precision"] = b.precision.name
    hist = History()
    last = checkpoint.latest_checkpoint(output) if resume else None
    if last is not None:
        hist = History(**checkpoint.load_checkpoint(acc, last))
        report["resumed_from_epoch"] = hist.epochs_done
        report["resumed_from_step_in_epoch"] = hist.step_in_epoch
    if acc.is_main_process:
        from harness.atomic import write_text_atomic
        write_text_atomic(output / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    compiled = compile_stats.CompileTracker(cfg.runtime.compile)
    meter = Meter(cfg.measure, acc.device, barrier=acc.wait_for_everyone, hooks=[compiled])
    guard = StepGuard(acc, signals, cfg.train.on_nonfinite)
    setup_s = time.perf_counter() - t_start
    status, code, ranks_in_step = _train_and_test(b, meter, guard, output, hist, report)
    if not report["accuracy"]:
        report["accuracy"] = accuracy_block(cfg, hist, None)
    multi = acc.num_processes > 1
    if multi and not ranks_in_step:
        _note_rank_failure(output, acc.process_index, report)
    # One gather for every per-rank summary, and only while the ranks are in step.
    local = [(meter.summary(), compiled.summary())]
    if multi and ranks_in_step:
        from accelerate.utils import gather_object
        local = gather_object(local)
    figures = aggregate([m for m, _ in local], cfg.loader.batch_size * acc.num_processes)
    raw = figures.pop("raw")
    report.update(figures)
    report["nonfinite"] = guard.record() if ranks_in_step or not multi else None
    # Only the main process reports; measuring the peak on every rank at once would
    # have the ranks share the cores and cache a peak that is a fraction of the real one.
    report["compute"] = compute_block(b, fps, figures["throughput"]["samples_per_s"]) \
        if acc.is_main_process else {}
    report["compile"] = compile_stats.combine(cfg.runtime.compile, [c for _, c in local])
    report["distributed"]["scaler_skipped_steps"] = \
        hist.skipped_steps + hist.partial_skipped_steps if b.precision.uses_grad_scaler else None
    report["warnings"] = warnings_for(figures) + compile_stats.warnings_for(report["compile"])
    if multi and not ranks_in_step:
        report["warnings"].append(f"rank {acc.process_index} failed: figures are this rank's alone")
    report["raw"] = raw
    report["timing"] = {
        "setup_s": setup_s,
        "epoch_wall_s": hist.epoch_wall_s,
        "train_wall_s": hist.train_elapsed_s,
        "total_wall_s": time.perf_counter() - t_start,
    }
    report["status"] = status
    report["finished_at"] = _now()
    if acc.is_main_process:
        if multi:
            _blame_first_failure(output, report)
        write_report(output / "report.yaml", report)
    if ranks_in_step:
        # The ranks leave together: one tearing down its process group while another
        # still finishes the last collective can abort inside gloo.
        acc.wait_for_everyone()
        acc.end_training()
    return report, code


# --- a rank that fails ----------------------------------------------------------------
#
# A failing rank cannot wait for the others (they may be inside a collective it will
# never join), so it notes its error in a file and exits; the launcher then stops the
# other ranks, whose collectives fail in turn. Rank 0 writes the report, and names the
# first failure in time, which is the cause, rather than its own "peer closed" error.

def _failures_dir(output: Path) -> Path:
    return output / "failures"


def _note_rank_failure(output: Path, rank: int, report: dict) -> None:
    from harness.atomic import write_text_atomic

    note = {"rank": rank, "at": time.time(), "error": report["error"], "traceback": report.get("traceback")}
    write_text_atomic(_failures_dir(output) / f"rank{rank}.yaml", yaml.safe_dump(note, sort_keys=False))
    print(f"error: rank {rank}: {report['error']}", file=sys.stderr, flush=True)


def _blame_first_failure(output: Path, report: dict) -> None:
    folder = _failures_dir(output)
    notes = sorted((yaml.safe_load(p.read_text()) for p in folder.glob("rank*.yaml")), key=lambda n: n["at"]) \
        if folder.is_dir() else []
    if not notes:
        return
    first = notes[0]
    report["status"] = "failed"
    report["failed_rank"] = first["rank"]
    report["error"] = f"rank {first['rank']}: {first['error']}"
    report["traceback"] = first["traceback"]
    report["rank_failures"] = [{"rank": n["rank"], "error": n["error"]} for n in notes]
