"""What every surface says of the machine a report's timings were taken on (harness/report/conditions.py)."""

from __future__ import annotations

from pathlib import Path

from harness.report import conditions
from harness.cli import _summary_table
from support.reports import make_report


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


# --------------------------------------------------------------------------- harness sweep's table

def _sweep(tmp_path, cells: list[tuple[str, dict]]):
    from harness.sweep.command import figures
    from support.reports import write

    rows = []
    for cell_id, report in cells:
        write(tmp_path / "cells", cell_id, report)
        rows.append({"id": cell_id, "status": "completed", "report": f"cells/{cell_id}/report.yaml",
                     **figures(report)})
    return rows


def _model(name: str, **kw) -> dict:
    report = make_report(**kw)
    report["config"]["model"] = {"name": name}
    return report


def test_the_sweep_names_each_cells_conditions_and_its_best_per_workload(tmp_path):
    from harness.sweep.table import summary_table

    rows = _sweep(tmp_path, [("digits-a", _model("cnn", samples_per_s=5000.0)),
                             ("digits-b", _model("cnn", samples_per_s=4000.0, batch_size=32)),
                             ("resnet50", _model("resnet50", samples_per_s=40.0, peak_rss_mb=5000.0,
                                                 contention="contended", foreign=0.7))])
    table = summary_table(rows, tmp_path)
    lines = table.splitlines()
    assert "timing conditions" in lines[0]
    assert next(x for x in lines if x.startswith("digits-a")).endswith("quiet")
    assert next(x for x in lines if x.startswith("resnet50")).endswith("contended 70%")
    cnn, resnet = (table.index(f"digits_cnn: {m} on ?") for m in ("cnn", "resnet50"))
    cnn_part, resnet_part = (table[cnn:resnet], table[resnet:]) if cnn < resnet else (table[cnn:], table[resnet:cnn])
    assert "best throughput        digits-a (5,000.0 samples/s)" in cnn_part  # never resnet50 against digits
    assert "best throughput        resnet50 (40.0 samples/s); timed contended 70%: not a finding" in resnet_part
    assert "failed cells           0 of 3" in table


def test_one_workload_keeps_one_best_and_old_reports_read_unknown(tmp_path):
    from harness.sweep.table import summary_table

    rows = _sweep(tmp_path, [("bs32", make_report(batch_size=32, samples_per_s=900.0, contention=None)),
                             ("bs64", make_report(batch_size=64, samples_per_s=1000.0, contention=None))])
    table = summary_table(rows, tmp_path)
    assert "\nbest throughput        bs64 (1,000.0 samples/s); timed contention unknown" in table
    assert next(x for x in table.splitlines() if x.startswith("bs32")).endswith("contention unknown")


def test_an_unknown_verdict_says_why_a_short_window_or_an_unread_one():
    """A window under contention.MIN_WALL_S has a share too coarse to judge: it says so, and
    what to do, rather than blaming an unreadable /proc."""
    report = make_report()
    report["contention"] = {**report["contention"], "verdict": "unknown", "window_s": 0.13}
    (caveat,) = conditions.caveats(report)
    assert caveat.kind == conditions.UNKNOWN
    assert "timed window (0.13 s) is too short" in caveat.advice and "time more passes" in caveat.advice
    report["contention"]["window_s"] = 2.0
    assert "could not be read" in conditions.caveats(report)[0].advice
