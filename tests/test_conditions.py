"""What every surface says of the machine a report's timings were taken on (harness/conditions.py)."""

from __future__ import annotations

from pathlib import Path

from harness import conditions
from harness.cli import _summary_table
from synthetic_reports import make_report


def summary(report: dict) -> str:
    return _summary_table(report, Path("runs/x/report.yaml"))


def test_the_summary_of_a_contended_run_says_so_beside_the_timings():
    text = summary(make_report(contention="contended", foreign=0.62))
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("timing conditions"))
    assert lines[at - 1].startswith("step time p50") and lines[at - 2].startswith("train samples/s")
    assert "other processes took 62% of the 16 CPUs" in lines[at] and "rerun on a quiet machine" in lines[at]


def test_a_report_without_the_blocks_is_unknown_never_quiet():
    report = make_report(contention=None)
    assert conditions.verdict(report) == conditions.UNKNOWN
    text = summary(report)
    assert "contention unknown" in text and "quiet" not in text
    assert "quiet: other processes took 2%" in summary(make_report())


def test_noise_threads_and_a_short_window_are_named():
    report = make_report(noise="unreliable", measured_steps=5, torch_threads=4, cpus=2.0, world_size=2)
    kinds = [c.kind for c in conditions.caveats(report)]
    assert kinds == ["oversubscribed", "noise", "short window"]
    text = summary(report)
    assert "8 threads (4 per process × 2) on 2 CPUs" in text and "unreliable" in text and "5 timed steps" in text


def test_an_inference_report_is_as_contended_as_its_worst_batch_size():
    report = make_report(contention=None)
    report["scenario"] = "inference"
    quiet, busy = make_report()["contention"], make_report(contention="contended", foreign=0.4)["contention"]
    report["inference"] = {"batch_sizes": [{"batch_size": 1, "contention": quiet, "latency_ms": {"noise": "ok"}},
                                           {"batch_size": 8, "contention": busy, "latency_ms": {"noise": "noisy"}}]}
    assert conditions.verdict(report) == conditions.CONTENDED
    assert conditions.tags(report) == "contended 40%, noise noisy"
