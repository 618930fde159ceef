"""The headline figures of a report by name, and where each lives in it.

Every reader (compare, sweep, ``harness report``, the benchmarks) takes a figure
through ``figure``; a renamed key is a change here alone.
"""

FIGURES: dict[str, tuple[str, ...]] = {
    "samples_per_s": ("throughput.samples_per_s", "throughput.train_samples_per_s"),
    "tokens_per_s": ("throughput.tokens_per_s",),
    "step_time_p50_ms": ("step_time_ms.p50",),
    "peak_rss_mb": ("memory.peak_rss_mb",),
    "peak_pss_mb": ("memory.peak_pss_mb",),
    "test_accuracy": ("accuracy.test_accuracy",),
    "time_to_target_s": ("accuracy.time_to_target_s",),
    "data_wait_fraction": ("data_wait_fraction",),
    "device_peak_mb": ("memory.device_peak_allocated_mb",),
    "mfu": ("compute.mfu_measured_peak",),
    "flops_per_token": ("compute.flops_per_token",),
}
"""The headline figures by name -> their dotted keys, the first non-null one wins
(the schema-2 name first, then the schema-1 one). Every reader takes them from here."""

COMPLETED_FIGURES = ("samples_per_s", "step_time_p50_ms", "peak_rss_mb", "test_accuracy", "time_to_target_s")
"""A completed report holds a key (its value may be null) for each of these."""

REPLICATES = {
    "samples_per_s": "repeats.samples_per_s",
    "step_time_p50_ms": "repeats.step_time_ms_p50",
    "peak_rss_mb": "repeats.peak_rss_mb",
    "peak_pss_mb": "repeats.peak_pss_mb",
    "test_accuracy": "repeats.test_accuracy",
    "time_to_target_s": "repeats.time_to_target_s",
}
"""Where one report keeps independent replicates of a figure (window or run repeats)."""

_ABSENT = object()


def dig(report: dict, dotted: str, default=None):
    """``report['a']['b']`` for ``'a.b'``; ``default`` when a key is absent, None when a parent is null."""
    node = report
    for part in dotted.split("."):
        if node is None:
            return None
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def figure(report: dict, name: str):
    """The headline figure ``name`` (a FIGURES key), or None when null or absent."""
    return next((v for v in (dig(report, k) for k in FIGURES[name]) if v is not None), None)


def token_repeats(report: dict) -> list[float] | None:
    """A language model's tokens/s replicates: its samples/s repeats (runs or windows) times
    the report's tokens per sample, or None without them. Every sample is a window of
    data.seq_len real tokens, so that ratio is one number per report; the report keeps no
    repeats of tokens/s of its own."""
    tokens, samples = figure(report, "tokens_per_s"), figure(report, "samples_per_s")
    listed = dig(report, REPLICATES["samples_per_s"])
    if tokens is None or not samples or not isinstance(listed, list) or not listed:
        return None
    return [v * tokens / samples if isinstance(v, (int, float)) else None for v in listed]


def figures(report: dict, names=tuple(FIGURES)) -> dict:
    return {name: figure(report, name) for name in names}
