"""``measure.repeat_unit: run``: the whole run N times, each in a fresh process, in one report.

Window repeats share one process, so they cannot see what changes from one run to
the next: the allocator's state, the OS page cache, a CPU's clock, the placement
of threads. Whole-run repeats can. Each repeat is an ordinary ``harness run`` into
``repeat_NN/`` beside the combined report; the combined report is a copy of the
repeat with the median samples/s (so all its figures come from one real run), and
its ``repeats`` block holds every repeat's figures, their median and the
confidence interval of the median with its exact coverage (``ci_level``).

The parent never imports torch (the config is validated in a forked child, ``plan``): a
parent holding libtorch would share its pages with each repeat and lower the repeat's PSS.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.errors import BadInput
from harness.measure.contention import worst
from harness.measure.stats import median_ci
from harness.report.io import load_report, write_report
from harness.run.report_builder import ReportBuilder


def _child_command(config_path: str | None, overrides: list[str], out: Path) -> list[str]:
    config = [config_path] if config_path else []
    return [sys.executable, "-m", "harness", "run", *config, *overrides,
            "measure.repeats=1", "measure.repeat_unit=window", "--output", str(out)]


def check_can_repeat(resume: bool) -> None:
    if resume:
        raise BadInput("measure.repeat_unit: run repeats whole runs; --resume continues one run, not several")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise BadInput("measure.repeat_unit: run starts its own processes; under a multi-process "
                       "launcher use measure.repeat_unit: window, or launch once per repeat")


def _plan(config_path: str | None, overrides: list[str], output: str | None) -> dict:
    from harness.config.run import config_hash, load_config, recipe_hash, to_dict

    cfg = load_config(config_path, overrides)
    cfg.output.dir = output or cfg.output.dir
    return {"config": to_dict(cfg), "config_hash": config_hash(cfg), "recipe_hash": recipe_hash(cfg),
            "output": cfg.output.dir,
            "repeats": cfg.measure.repeats, "whole_runs": cfg.measure.repeat_unit == "run" and cfg.measure.repeats > 1,
            "scenario": cfg.scenario}


def plan(config_path: str | None, overrides: list[str], output: Path | None) -> dict:
    """The validated config as plain data (resolved dict, hashes, repeat count, output folder:
    ``output`` or the config's), computed in a forked child so that this process stays
    torch-free (harness/process/apart.py)."""
    from harness.process.apart import call_apart

    return call_apart(_plan, config_path, overrides, str(output) if output is not None else None)


def asks_whole_runs(config_path: str | None, overrides: list[str]) -> bool:
    """Whether the config and overrides ask for ``measure.repeat_unit: run`` with repeats > 1,
    read from the YAML alone (torch-free); a value that will not validate is left to the
    normal path, whose error names it."""
    from harness.config.raw import apply_overrides, read_yaml

    try:
        raw = apply_overrides(read_yaml(config_path) if config_path else {}, list(overrides))
    except BadInput:
        return False
    measure = raw.get("measure") if isinstance(raw.get("measure"), dict) else {}
    repeats = measure.get("repeats")
    return measure.get("repeat_unit") == "run" and isinstance(repeats, int) and repeats > 1


def run_repeats(plan: dict, config_path: str | None, overrides: list[str], output: Path) -> tuple[dict, int]:
    n = plan["repeats"]
    reports = []
    for k in range(1, n + 1):
        folder = output / f"repeat_{k:02d}"
        print(f"repeat {k}/{n} -> {folder}", file=sys.stderr, flush=True)
        code = _call_forwarding_signals(_child_command(config_path, overrides, folder))
        if code != 0:
            # The repeat's own report (if any) says why; the combined one points at it.
            try:
                child = load_report(folder)
            except BadInput:
                child = {}
            status = "interrupted" if child.get("status") == "interrupted" else "failed"
            builder = ReportBuilder(dict(child))
            builder.repeat_failed(status, f"repeat {k} of {n} ended with exit status {code}: {child.get('error')}")
            if child:
                write_report(output / "report.yaml", builder.report)
            return builder.report, code
        reports.append(load_report(folder))
    return combine(plan, reports, output), 0


def _call_forwarding_signals(cmd: list[str]) -> int:
    """Run one repeat in its own session; SIGINT/SIGTERM to us are passed on to it, once."""
    from harness.process.children import forwarding_signals

    with forwarding_signals() as started:
        proc = subprocess.Popen(cmd, start_new_session=True)
        started(proc)
        return proc.wait()


def _values(reports: list[dict], *path: str) -> list:
    out = []
    for r in reports:
        node = r
        for key in path:
            node = (node or {}).get(key)
        out.append(node)
    return out


def combine(plan: dict, reports: list[dict], output: Path) -> dict:
    rates = _values(reports, "throughput", "samples_per_s")
    order = sorted(range(len(reports)), key=lambda i: rates[i] or 0.0)
    shown = order[(len(order) - 1) // 2]  # the (lower) median run
    builder = ReportBuilder(dict(reports[shown]))
    numbers = [r for r in rates if r is not None]
    builder.combined(plan, {
        "unit": "run",
        "count": len(reports),
        "shown": shown + 1,
        "folders": [f"repeat_{k:02d}" for k in range(1, len(reports) + 1)],
        "samples_per_s": rates,
        **median_ci(numbers),
        "step_time_ms_p50": _values(reports, "step_time_ms", "p50"),
        "peak_rss_mb": _values(reports, "memory", "peak_rss_mb"),
        "peak_pss_mb": _values(reports, "memory", "peak_pss_mb"),
        "test_accuracy": _values(reports, "accuracy", "test_accuracy"),
        "time_to_target_s": _values(reports, "accuracy", "time_to_target_s"),
        "contention": [r.get("contention") for r in reports],
        "contention_worst": worst([r.get("contention") for r in reports]),
    })
    write_report(output / "report.yaml", builder.report)
    return builder.report
