"""One run: build the recipe, hand it to the Accelerator, fit, test, report.

Everything that can be bad input (config, data, model, mode, output folder) is
checked in ``build`` before anything is written, so a refused run leaves no files.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from harness import accel, checkpoint, environment
from harness.config import Config, config_hash, to_dict
from harness.data import DataBundle, build_data
from harness.data.loaders import Loaders, build_loaders, epoch_seed
from harness.data.resident import DeviceResidentLoader
from harness.loop import TrainParts, evaluate, train_epoch
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


def prepare(b: Built) -> None:
    """Hand model, optimizer, loaders and scheduler to the Accelerator."""
    acc, p, ld = b.accelerator, b.parts, b.loaders
    if isinstance(ld.train, DeviceResidentLoader):
        _prepare_device_resident(b)
        return
    objs = [p.model, p.optimizer, ld.train] + ([p.scheduler] if p.scheduler is not None else [])
    prepared = acc.prepare(*objs)
    p.model, p.optimizer, ld.train = prepared[:3]
    if p.scheduler is not None:
        p.scheduler = prepared[3]
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
    acc, p, ld = b.accelerator, b.parts, b.loaders
    objs = [p.model, p.optimizer] + ([p.scheduler] if p.scheduler is not None else [])
    prepared = acc.prepare(*objs)
    p.model, p.optimizer = prepared[:2]
    if p.scheduler is not None:
        p.scheduler = prepared[2]
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
    """Optimizer steps the fp16 gradient scaler skipped."""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _progress(b: Built, total: int, initial: int):
    from tqdm.auto import tqdm

    show = b.cfg.output.progress
    if show is None:
        show = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, unit="epoch", desc=b.cfg.name,
                disable=not (show and b.accelerator.is_main_process))


def fit(b: Built, meter: Meter, output: Path, hist: History) -> str:
    """Train the remaining epochs; returns why training ended."""
    from accelerate.utils import set_seed

    cfg, acc = b.cfg, b.accelerator
    bar = _progress(b, cfg.train.epochs, hist.epochs_done)
    started = time.perf_counter() - hist.train_elapsed_s
    reason = "epochs"
    try:
        for epoch in range(hist.epochs_done, cfg.train.epochs):
            budget = None if cfg.train.max_steps is None else cfg.train.max_steps - hist.steps_done
            if budget is not None and budget <= 0:
                reason = "max_steps"
                break
            # Same order, augmentation and dropout for epoch k in every mode and after a resume.
            set_seed(epoch_seed(cfg.seed, epoch))
            b.loaders.reseed(cfg.seed, epoch)
            t0 = time.perf_counter()
            result = train_epoch(b.parts, b.loaders.train, meter, max_steps=budget)
            dev = evaluate(b.parts, b.loaders.dev) if b.loaders.dev is not None else None
            hist.epoch_wall_s.append(time.perf_counter() - t0)
            hist.epochs_done = epoch + 1
            hist.steps_done += result.steps
            hist.skipped_steps += result.skipped_steps
            hist.train_elapsed_s = time.perf_counter() - started
            hist.dev.append({"epoch": epoch + 1, "train_loss": result.loss,
                             "accuracy": dev.accuracy if dev else None, "loss": dev.loss if dev else None})
            target = cfg.train.target_accuracy
            if target is not None and dev and hist.time_to_target_s is None and dev.accuracy >= target:
                hist.time_to_target_s = hist.train_elapsed_s
            if cfg.output.checkpoint_every_epoch:
                checkpoint.save_checkpoint(acc, output, epoch + 1, hist.as_dict(), cfg.output.keep_checkpoints)
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

    n = min(b.cfg.loader.batch_size, len(b.data.train))
    inputs, targets = zip(*(b.data.train[i] for i in range(n)))
    return flops_per_sample(b.parts.model, torch.stack(inputs), torch.tensor(targets), b.parts.loss_fn)


def compute_block(b: Built, fps: float | None, samples_per_s: float | None) -> dict:
    """Achieved FLOP/s and MFU against a measured peak and a datasheet peak (null when unknown)."""
    acc = b.accelerator
    device = acc.device
    name = environment.gpus()[0]["name"] if device.type == "cuda" else environment.cpu_model()
    block = {"flops_per_sample": fps, "achieved_tflops": None, "achieved_tflops_per_device": None,
             "measured_peak_tflops": None, "datasheet_peak_tflops": None,
             "mfu_measured_peak": None, "mfu_datasheet": None, "peak_device": name,
             "peak_dtype": str(b.precision.compute_dtype).replace("torch.", "")}
    if fps is None or not samples_per_s:
        return block
    per_device = fps * samples_per_s / acc.num_processes
    block["achieved_tflops"] = fps * samples_per_s / 1e12
    block["achieved_tflops_per_device"] = per_device / 1e12
    if b.cfg.measure.measure_peak:
        peak = measured_peak_flops(device, b.precision.compute_dtype, name)
        block["measured_peak_tflops"] = peak / 1e12
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
        "config": to_dict(cfg),
        "environment": environment.collect(cfg.seed),
        "accuracy": {},
        "timing": {},
        "throughput": {},
    }


def execute(cfg: Config, output: Path, resume: bool = False) -> tuple[dict, int]:
    """Run ``cfg`` into ``output``; returns (report, exit status). BadInput propagates."""
    t_start = time.perf_counter()
    b = build(cfg)
    acc = b.accelerator
    if acc.is_main_process:
        checkpoint.check_writable(output)
    report = base_report(cfg)
    report["data"] = {"source": b.data.source, "num_classes": b.data.num_classes,
                      "sample_shape": list(b.data.sample_shape), "sizes": b.data.sizes()}
    report["model"] = b.model_info
    fps = count_flops(b)
    prepare(b)
    accel.mark_batch_dynamic(b.loaders, cfg.runtime.compile)
    report["distributed"] = accel.describe(acc)
    report["distributed"]["precision"] = b.precision.name
    hist = History()
    last = checkpoint.latest_checkpoint(output) if resume else None
    if last is not None:
        hist = History(**checkpoint.load_checkpoint(acc, last))
        report["resumed_from_epoch"] = hist.epochs_done
    if acc.is_main_process:
        from harness.atomic import write_text_atomic
        write_text_atomic(output / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    compiled = compile_stats.CompileTracker(cfg.runtime.compile)
    meter = Meter(cfg.measure, acc.device, barrier=acc.wait_for_everyone, hooks=[compiled])
    setup_s = time.perf_counter() - t_start
    status, code = "completed", 0
    try:
        report["stop_reason"] = fit(b, meter, output, hist)
        test = evaluate(b.parts, b.loaders.test) if b.loaders.test is not None else None
        report["accuracy"] = accuracy_block(cfg, hist, test)
        if cfg.output.save_model:
            checkpoint.save_model(acc, b.parts.model, output / "model.pt")
            report["artifacts"] = {"model": "model.pt"}
    except KeyboardInterrupt:
        status, code = "interrupted", 130
        report["error"] = "interrupted by the user"
    except Exception as err:  # a failed run is data: the report says what went wrong
        status, code = "failed", 1
        report["error"] = f"{err.__class__.__name__}: {err}"
        report["traceback"] = traceback.format_exc(limit=8)
    if not report["accuracy"]:
        report["accuracy"] = accuracy_block(cfg, hist, None)
    from accelerate.utils import gather_object

    figures = aggregate(gather_object([meter.summary()]), cfg.loader.batch_size * acc.num_processes)
    raw = figures.pop("raw")
    figures["throughput"]["train_samples_per_s"] = figures["throughput"]["samples_per_s"]
    report.update(figures)
    report["compute"] = compute_block(b, fps, figures["throughput"]["samples_per_s"])
    report["compile"] = compile_stats.combine(cfg.runtime.compile, gather_object([compiled.summary()]))
    report["distributed"]["scaler_skipped_steps"] = hist.skipped_steps if b.precision.uses_grad_scaler else None
    report["warnings"] = warnings_for(figures) + compile_stats.warnings_for(report["compile"])
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
        write_report(output / "report.yaml", report)
    acc.end_training()
    return report, code
