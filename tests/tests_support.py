"""Constants shared by tests."""

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
