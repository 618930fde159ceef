"""report.yaml: its schema, written atomically, read back strictly.

Every key that holds a quantity carries its unit in its name (``_s``, ``_ms``,
``_mb``, ``samples_per_s``). docs/report.md documents each key.

The schema is the TypedDicts below, and it is the one place that says what a
report holds: the writer validates against it before writing, and every reader
(compare, sweep, ``harness report``, the benchmarks, the test fixtures) reads
through ``load_report`` and ``figure``. Blocks are open: a key the schema does not
name passes (a newer writer may add one), but a named key of the wrong type is
refused. Adding a key: declare it, with its type, in its block's TypedDict.
"""

# No ``from __future__ import annotations``: TypedDict reads Required[...] from live annotations.
import sys
from typing import Any, Literal, Union

if sys.version_info >= (3, 11):
    from typing import NotRequired, Required, TypedDict
else:  # typing_extensions comes with torch
    from typing_extensions import NotRequired, Required, TypedDict

from harness.config.typecheck import check_block, short
from harness.report.figures import _ABSENT, COMPLETED_FIGURES, FIGURES, dig

SCHEMA_VERSION = 2
STATUSES = ("completed", "failed", "interrupted", "diverged", "running")

Num = Union[int, float]
"""A number; YAML writes 3.0 as 3.0 but a hand-made fixture may say 3."""
OptNum = Union[int, float, None]


# --------------------------------------------------------------------------- the schema

class Comparability(TypedDict, total=False):
    """What must match for two reports' numbers to be comparable (environment.py)."""
    cpu_model: str | None
    cpu_count: int | None
    gpu_model: str | None
    gpu_count: int | None
    python: str | None
    torch: str | None
    torchvision: str | None
    accelerate: str | None
    cuda: str | None
    harness_git_sha: str | None


class Git(TypedDict, total=False):
    """The git checkout of the run's working directory (files/git.py)."""
    commit: Required[str]
    dirty: bool | None
    branch: str | None


class Environment(TypedDict, total=False):
    comparability: Comparability
    switches: dict[str, Any]
    seed: int | None
    info: dict[str, Any]
    git: NotRequired[Union[Git, None]]
    """Null outside a git checkout; absent in older reports."""


class Accuracy(TypedDict, total=False):
    dev: list[dict[str, Any]]
    best_dev_accuracy: OptNum
    best_epoch: int | None
    final_dev_accuracy: OptNum
    test_accuracy: OptNum
    test_loss: OptNum
    test_samples: int | None
    target_accuracy: OptNum
    time_to_target_s: OptNum
    """Training and dev-evaluation seconds until the target was first reached; null when never
    reached (or none was set)."""
    time_to_target_wall_s: OptNum
    """Wall seconds since training started until then, checkpoint writes and compile included."""
    # A language model's run (task: causal_lm): its losses are in nats per token.
    target_loss: NotRequired[OptNum]
    """train.target_loss: time_to_target_s then times the first dev loss at or below it."""
    final_dev_loss: NotRequired[OptNum]
    test_perplexity: NotRequired[OptNum]
    test_bits_per_byte: NotRequired[OptNum]
    """test_loss / ln 2 / the corpus's bytes per token: comparable across tokenizers."""
    test_tokens: NotRequired[Union[int, None]]


class SetupPhases(TypedDict, total=False):
    """Seconds of each start-up phase, consecutive, up to the first train step (measure/startup.py)."""
    import_s: OptNum
    config_s: OptNum
    accelerator_s: OptNum
    data_s: OptNum
    model_s: OptNum
    prepare_s: OptNum
    observers_s: OptNum


class Timing(TypedDict, total=False):
    setup_s: OptNum
    process_start_to_first_step_s: NotRequired[OptNum]
    """From the process's start to the first train step's; absent in older reports."""
    setup: NotRequired[Union[SetupPhases, None]]
    epoch_wall_s: list[OptNum]
    train_wall_s: OptNum
    total_wall_s: OptNum
    """Every process of the run, across resumes (up to each one's last checkpoint)."""
    process_wall_s: OptNum
    """This process alone."""


class Throughput(TypedDict, total=False):
    samples_per_s: OptNum
    train_samples_per_s: OptNum
    """The schema-1 name of samples_per_s, still written for its readers."""
    samples_per_s_per_device: OptNum
    steps_per_s: OptNum
    global_batch_size: int | None
    measured_steps: int | None
    measured_samples: int | None
    warmup_steps: int | None
    window_s: OptNum
    # A workload measured in tokens (a language model): real tokens, never padding.
    tokens_per_s: NotRequired[OptNum]
    tokens_per_s_per_device: NotRequired[OptNum]
    measured_tokens: NotRequired[Union[int, None]]
    tokens_per_step: NotRequired[OptNum]


class Distribution(TypedDict, total=False):
    """measure/stats.py ``distribution``: a sample of timings summarised."""
    count: int
    mean: Num
    p25: Num
    p50: Num
    p75: Num
    p90: Num
    p99: Num
    min: Num
    max: Num
    iqr: Num
    cv: Num
    iqr_over_median: Num
    noise: str


class PhaseMemory(TypedDict, total=False):
    """The peaks of one phase (train window, evaluation, checkpoint writes)."""
    peak_rss_mb: OptNum
    peak_pss_mb: OptNum
    peak_uss_mb: OptNum
    device_peak_allocated_mb: OptNum
    device_peak_reserved_mb: OptNum


class Memory(TypedDict, total=False):
    peak_rss_mb: OptNum
    """The main process's RSS (DataLoader workers left out)."""
    peak_pss_mb: OptNum
    """The process tree's PSS: pages shared with forked workers counted once."""
    peak_uss_mb: OptNum
    device_peak_allocated_mb: OptNum
    device_peak_reserved_mb: OptNum
    alloc_retries: int | None
    saved_for_backward_mb: NotRequired[OptNum]
    """Activations one training forward of the probe batch keeps for its backward."""
    train: PhaseMemory | None
    eval: PhaseMemory | None
    checkpoint: PhaseMemory | None
    model_state_mb: NotRequired[OptNum]
    """Parameters, gradients and optimizer state the largest rank holds (measure/model_state.py)."""
    model_state: NotRequired[dict[str, Any]]
    """That rank's params_mb, grads_mb, optimizer_mb."""


class Contention(TypedDict, total=False):
    """What other processes took of the run's CPUs during a timed window (measure/contention.py)."""
    foreign_cpu_fraction: OptNum
    verdict: Literal["quiet", "contended", "unknown"]
    capacity_cpus: OptNum
    steal_fraction: OptNum
    window_s: OptNum
    load_avg_start: OptNum
    load_avg_end: OptNum
    throttled_s: OptNum
    device_processes: NotRequired[Union[list[dict[str, Any]], None]]
    """On a GPU with pynvml: other processes holding the run's device (pid, used_memory_mb)."""


class Compute(TypedDict, total=False):
    flops_per_sample: OptNum
    forward_flops_per_sample: OptNum
    """The train-mode forward alone (docs/report.md: what each FLOPs figure counts)."""
    achieved_tflops: OptNum
    achieved_tflops_per_device: OptNum
    measured_peak_tflops: OptNum
    datasheet_peak_tflops: OptNum
    mfu_measured_peak: OptNum
    mfu_datasheet: OptNum
    mfu_peak_contended: NotRequired[Union[bool, None]]
    """The measured peak was taken under contention (not cached): mfu_measured_peak is inflated."""
    measured_peak_contention: NotRequired[Union[Contention, None]]
    peak_precision: str | None
    """The datasheet column the work runs at: bf16, fp16, tf32 or fp32."""
    tf32: dict[str, Any] | None
    # A language model's run: FLOPs per token, counted and by the published formula.
    flops_per_token: NotRequired[OptNum]
    flops_per_token_formula: NotRequired[OptNum]
    flops_per_token_formula_source: NotRequired[Union[str, None]]
    # HFU beside MFU: hardware FLOPs add the forward activation checkpointing runs again.
    recomputed_flops_per_sample: NotRequired[OptNum]
    hardware_flops_per_sample: NotRequired[OptNum]
    hardware_flops_per_token: NotRequired[OptNum]
    hfu_measured_peak: NotRequired[OptNum]
    hfu_datasheet: NotRequired[OptNum]


class Distributed(TypedDict, total=False):
    distributed_type: str
    world_size: int
    backend: str | None
    device: str | None
    mixed_precision: str | None
    precision: str | None
    scaler_skipped_steps: int | None
    non_blocking_copies: bool | None
    sharding: NotRequired[Literal["none", "fsdp2"]]
    """What ran, read from the live model (run/sharding.py)."""
    sharded_modules: NotRequired[int]


class Batch(TypedDict, total=False):
    """What one optimizer step trains on (run/report_builder.py batch_block)."""
    micro_batch_size: int
    grad_accum_steps: int
    world_size: int
    global_batch_size: int


class Threads(TypedDict, total=False):
    """Threads against cores (measure/threads.py)."""
    torch_threads: int
    interop_threads: int
    omp_num_threads: str | None
    processes: int
    total_threads: int
    cpus_available: OptNum
    oversubscribed: bool
    free_cpus: OptNum
    oversubscribed_free: bool | None


class Repeats(TypedDict, total=False):
    """Independent replicates of the run's figures: timed windows or whole runs (repeats.py)."""
    unit: Literal["window", "run"]
    count: int
    shown: int
    folders: list[str]
    samples_per_s: list[OptNum]
    step_time_ms_p50: list[OptNum]
    peak_rss_mb: list[OptNum]
    peak_pss_mb: list[OptNum]
    test_accuracy: list[OptNum]
    time_to_target_s: list[OptNum]
    median: OptNum
    ci_low: OptNum
    ci_high: OptNum
    confidence: OptNum
    """The level asked for (0.95)."""
    ci_level: OptNum
    """The interval's exact coverage; below ``confidence`` when there are too few repeats."""
    contention: list[Union[Contention, None]]
    """Each repeat's contention block (window or run), in order."""
    contention_worst: Union[Contention, None]


class Raw(TypedDict, total=False):
    step_time_ms: list[OptNum]
    data_wait_ms: list[OptNum]


class Profile(TypedDict, total=False):
    """measure.profile: the torch.profiler trace (measure/profile.py); steps count this process's."""
    folder: str
    chrome_trace: str
    tensorboard_traces: list[str]
    first_step: int
    last_step: int
    steps: int
    record_shapes: bool
    profile_memory: bool
    time_kind: Literal["cpu", "cuda"]
    top_ops: list[dict[str, Any]]
    """Top 10 ops by self time: name, calls, self_time_ms, share (of all ops' self time)."""


class Report(TypedDict, total=False):
    schema_version: Required[int]
    status: Required[Literal["completed", "failed", "interrupted", "diverged", "running"]]
    config_hash: Required[str]
    """Hash of the resolved config without ``output``."""
    config: Required[dict[str, Any]]
    environment: Required[Environment]
    accuracy: Required[Accuracy]
    timing: Required[Timing]
    throughput: Required[Throughput]
    recipe_hash: NotRequired[str]
    """Hash of what the run computes (harness/config/recipe.py); absent in older reports."""
    error: str | None
    name: str | None
    started_at: str | None
    finished_at: str | None
    data: dict[str, Any]
    model: dict[str, Any]
    distributed: Distributed
    batch: NotRequired[Batch]
    """micro_batch_size x grad_accum_steps x world_size = global_batch_size; absent in older reports."""
    stop_reason: str | None
    step_time_ms: Distribution | None
    data_wait_ms: Distribution | None
    data_wait_fraction: OptNum
    memory: Memory
    per_rank: list[dict[str, Any]]
    per_node: NotRequired[list[dict[str, Any]]]
    """The ranks grouped by node: node_rank, hostname, ranks, samples_per_s (its slowest rank's window)."""
    imbalance: OptNum
    repeats: Repeats
    contention: NotRequired[Union[Contention, None]]
    threads: NotRequired[Threads]
    nonfinite: dict[str, Any] | None
    compute: Compute | None
    compile: dict[str, Any] | None
    warnings: list[str]
    raw: Raw
    failed_rank: int | None
    """A distributed run: the rank whose failure came first (or that died without a note)."""
    rank_failures: list[dict[str, Any]]
    # The inference scenario (harness/infer/bench.py, docs/report.md); a report without
    # ``scenario`` is a training one.
    scenario: NotRequired[Literal["training", "inference"]]
    inference: NotRequired[dict[str, Any]]
    profile: NotRequired[Union[Profile, None]]
    """measure.profile's trace; absent when none was asked for."""


# --------------------------------------------------------------------------- validation

def validate(report) -> None:
    """Raise ValueError naming the dotted key when ``report`` does not fit the schema."""
    if not isinstance(report, dict):
        raise ValueError(f"expected a mapping of report keys, got {short(report)}")
    if "schema_version" not in report:
        raise ValueError("schema_version: required key missing")
    if report["schema_version"] == 1:  # docs/report.md: refused, not read with fallbacks
        raise ValueError("schema_version: report schema_version 1 (the harness's first format) is no longer "
                         f"read; this harness reads {SCHEMA_VERSION}: run the recipe again")
    if report["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"schema_version: unknown report schema_version {short(report['schema_version'])} "
                         f"(this harness reads {SCHEMA_VERSION})")
    check_block(report, Report, "")
    if report["status"] == "completed" and report.get("scenario", "training") == "training":
        for name in COMPLETED_FIGURES:
            if all(dig(report, k, _ABSENT) is _ABSENT for k in FIGURES[name]):
                raise ValueError(f"{FIGURES[name][0]}: report lacks the metric (a completed report holds it)")
