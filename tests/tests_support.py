"""Constants shared by tests."""

# Every key the foundation promises in report.yaml (dotted paths).
REPORT_KEYS = [
    "schema_version", "status", "config", "config_hash",
    "environment.comparability.python", "environment.comparability.torch",
    "environment.comparability.torchvision", "environment.comparability.accelerate",
    "environment.comparability.cpu_model", "environment.comparability.cpu_count",
    "environment.comparability.gpu_model", "environment.comparability.harness_git_sha",
    "environment.info.ram_total_mb", "environment.info.os", "environment.seed",
    "accuracy.dev", "accuracy.best_dev_accuracy", "accuracy.test_accuracy", "accuracy.test_loss",
    "timing.epoch_wall_s", "timing.total_wall_s",
    "throughput.train_samples_per_s",
    "distributed.world_size",
]
