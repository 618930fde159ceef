"""report.yaml contents for tests: the keys every real report holds, and synthetic reports.

The synthetic ones (fixed numbers, no training; for the compare and report tests) are
written with ``harness.report.io.write_report``, which validates them against the report
schema: a fixture that does not fit what real runs write fails.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

from harness.report.io import write_report
from harness.report.schema import SCHEMA_VERSION

# Every key the foundation promises in report.yaml (dotted paths).
REPORT_KEYS = [
    "schema_version", "status", "config", "config_hash", "recipe_hash",
    "environment.comparability.python", "environment.comparability.torch",
    "environment.comparability.torchvision", "environment.comparability.accelerate",
    "environment.comparability.cpu_model", "environment.comparability.cpu_count",
    "environment.comparability.gpu_model", "environment.comparability.harness_git_sha",
    "environment.info.ram_total_mb", "environment.info.os", "environment.seed",
    "accuracy.dev", "accuracy.best_dev_accuracy", "accuracy.test_accuracy", "accuracy.test_loss",
    "timing.epoch_wall_s", "timing.total_wall_s",
    "throughput.train_samples_per_s", "throughput.samples_per_s", "throughput.samples_per_s_per_device",
    "throughput.steps_per_s", "throughput.global_batch_size", "throughput.measured_steps",
    "throughput.warmup_steps",
    "step_time_ms.p50", "step_time_ms.p99", "step_time_ms.iqr", "step_time_ms.cv", "data_wait_fraction",
    "memory.peak_rss_mb", "memory.device_peak_allocated_mb", "memory.device_peak_reserved_mb",
    "memory.alloc_retries",
    "compute.flops_per_sample", "compute.achieved_tflops", "compute.mfu_measured_peak", "compute.mfu_datasheet",
    "accuracy.time_to_target_s",
    "distributed.world_size", "distributed.backend", "distributed.mixed_precision",
    "per_rank", "repeats.median", "repeats.ci_low", "raw.step_time_ms",
    "environment.switches.torch_num_threads",
    "contention.foreign_cpu_fraction", "contention.verdict", "contention.capacity_cpus", "threads.total_threads",
    "threads.oversubscribed_free",
]


CPU_A = {"cpu_model": "AMD EPYC 7763", "cpu_count": 16, "gpu_model": None, "gpu_count": 0,
         "python": "3.11.7", "torch": "2.14.1", "cuda": None}
GPU_B = {"cpu_model": "Intel Xeon Platinum 8480", "cpu_count": 32, "gpu_model": "NVIDIA H100 80GB HBM3",
         "gpu_count": 1, "python": "3.11.7", "torch": "2.14.1", "cuda": "13.0"}


def make_report(*, samples_per_s: float = 1000.0, step_times_ms: list[float] | None = None,
                batch_size: int = 64, num_workers: int = 0, machine: dict | None = None,
                config_hash: str | None = None, test_accuracy: float = 0.97, peak_rss_mb: float = 800.0,
                time_to_target_s: float | None = 4.0, world_size: int = 1, distributed_type: str = "NO",
                mfu: float | None = None, status: str = "completed", contention: str | None = "quiet",
                foreign: float | None = None, torch_threads: int = 1, cpus: float = 16.0,
                noise: str = "ok", measured_steps: int = 100) -> dict:
    """A complete report; ``step_times_ms`` become ``raw.step_time_ms`` and set the p50.

    ``contention`` is the window's verdict (quiet or contended, with ``foreign`` the share
    other processes took; 0.02 / 0.62 unless given); None leaves the ``contention`` and
    ``threads`` blocks out, as reports older than them are."""
    steps = sorted(step_times_ms) if step_times_ms else [batch_size * 1000.0 / samples_per_s]
    p50 = steps[len(steps) // 2]
    config = {"name": "digits_cnn", "loader": {"batch_size": batch_size, "num_workers": num_workers,
                                               "pin_memory": False}}
    report = {
        "schema_version": SCHEMA_VERSION, "status": status, "error": None, "name": "digits_cnn",
        "config_hash": config_hash or f"hash-bs{batch_size}-w{num_workers}", "config": config,
        "environment": {"comparability": copy.deepcopy(machine or CPU_A),
                        "info": {"os": "Linux", "ram_total_mb": 64000, "cpu_physical_cores": 8}},
        "accuracy": {"test_accuracy": test_accuracy, "target_accuracy": 0.95, "time_to_target_s": time_to_target_s},
        "timing": {"total_wall_s": 10.0},
        "throughput": {"train_samples_per_s": samples_per_s, "global_batch_size": batch_size * world_size},
        "step_time_ms": {"count": len(steps), "p50": p50, "mean": sum(steps) / len(steps), "noise": noise},
        "data_wait_fraction": 0.02 + 0.01 * num_workers,
        "memory": {"peak_rss_mb": peak_rss_mb},
        "compute": {"mfu_measured_peak": mfu},
        "distributed": {"distributed_type": distributed_type, "world_size": world_size, "precision": "no",
                        "device": "cuda:0" if (machine or CPU_A).get("gpu_model") else "cpu"},
    }
    report["throughput"]["measured_steps"] = measured_steps
    if contention is not None:
        report.update(_conditions(contention, foreign, torch_threads, world_size, cpus))
    if step_times_ms:
        report["raw"] = {"step_time_ms": list(step_times_ms)}
    return report


def _conditions(verdict: str, foreign: float | None, torch_threads: int, processes: int, cpus: float) -> dict:
    """The ``contention`` and ``threads`` blocks of docs/report.md for one timed window."""
    share = foreign if foreign is not None else (0.62 if verdict == "contended" else 0.02)
    total = torch_threads * processes
    free = cpus * (1 - share)
    return {
        "contention": {"foreign_cpu_fraction": share, "verdict": verdict, "capacity_cpus": cpus,
                       "steal_fraction": 0.0, "load_avg_start": 0.3 + share * cpus,
                       "load_avg_end": 0.4 + share * cpus, "throttled_s": None},
        "threads": {"torch_threads": torch_threads, "interop_threads": torch_threads, "omp_num_threads": None,
                    "processes": processes, "total_threads": total, "cpus_available": cpus,
                    "oversubscribed": total > cpus, "free_cpus": free, "oversubscribed_free": total > free},
    }


def write(folder: Path, name: str, report: dict) -> Path:
    return write_report(Path(folder) / name / "report.yaml", report)


def sides(tmp_path: Path, base: list[dict], cand: list[dict]) -> tuple[Path, Path]:
    """A baseline folder and a candidate folder of compare, one run folder per report."""
    for i, r in enumerate(base):
        write(tmp_path / "base", f"r{i}", r)
    for i, r in enumerate(cand):
        write(tmp_path / "cand", f"r{i}", r)
    return tmp_path / "base", tmp_path / "cand"


def noisy_steps(median_ms: float, n: int, spread: float, seed: int) -> list[float]:
    """``n`` step times spread uniformly ±``spread`` (a fraction) around ``median_ms``."""
    rng = random.Random(seed)
    return [median_ms * (1 + rng.uniform(-spread, spread)) for _ in range(n)]
