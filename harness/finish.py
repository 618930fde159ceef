"""Finish a run: the report's blocks from what the run did, and a failing rank's note.

Nothing here trains; each function turns the run's history and measurements into
report fields.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from harness import environment
from harness.build import Built
from harness.config import Config, config_hash, to_dict
from harness.fit import History
from harness.measure.flops import datasheet_peak_tflops, flops_per_sample, measured_peak_flops
from harness.report import SCHEMA_VERSION


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
        "started_at": now(),
        "finished_at": None,
        "config_hash": config_hash(cfg),
        "config": to_dict(cfg),
        "environment": environment.collect(cfg.seed),
        "accuracy": {},
        "timing": {},
        "throughput": {},
    }


# --- a rank that fails ----------------------------------------------------------------
#
# A failing rank cannot wait for the others (they may be inside a collective it will
# never join), so it notes its error in a file and exits; the launcher then stops the
# other ranks, whose collectives fail in turn. Rank 0 writes the report, and names the
# first failure in time, which is the cause, rather than its own "peer closed" error.

def failures_dir(output: Path) -> Path:
    return output / "failures"


def note_rank_failure(output: Path, rank: int, report: dict) -> None:
    from harness.atomic import write_text_atomic

    note = {"rank": rank, "at": time.time(), "error": report["error"], "traceback": report.get("traceback")}
    write_text_atomic(failures_dir(output) / f"rank{rank}.yaml", yaml.safe_dump(note, sort_keys=False))
    print(f"error: rank {rank}: {report['error']}", file=sys.stderr, flush=True)


def blame_first_failure(output: Path, report: dict) -> None:
    folder = failures_dir(output)
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
