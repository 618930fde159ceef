"""harness history check (harness/history/check.py) on constructed store entries."""

import sys
import types

import pytest

from harness.history.check import check, run_check

pytestmark = pytest.mark.usefixtures("one_thread")


def entry(i, samples_per_s, replicates=None, workload="w" * 64, commit=None):
    return {"workload": workload, "workload_name": "digits_cnn", "mode": "cpu ×1", "machine": "vm-2cpu",
            "commit": commit or f"{i:02d}" + "a" * 38, "dirty": False, "branch": "main", "order": i,
            "time": f"2026-12-06T10:{i:02d}:00Z", "added_at": f"2026-12-06T11:{i:02d}:00Z",
            "source": f"runs/{i}/report.yaml", "id": f"id{i}",
            "figures": {"samples_per_s": {"value": samples_per_s, "replicates": replicates or [samples_per_s],
                                          "unit": "samples/s", "higher_is_better": True}}}


NOISE = [1.00, 1.02, 0.98, 1.01, 0.99, 1.00, 1.01, 0.98, 1.02, 0.99, 1.00, 1.01]


def twelve(fall: bool) -> list[dict]:
    return [entry(i, 1000.0 * NOISE[i] * (0.7 if fall and i >= 6 else 1.0)) for i in range(12)]


@pytest.fixture
def store(monkeypatch, tmp_path):
    """A stub harness.history.store whose read_entries returns what the test sets."""
    held = {"entries": [], "warnings": []}
    stub = types.ModuleType("harness.history.store")
    stub.read_entries = lambda path: (held["entries"], held["warnings"])
    monkeypatch.setitem(sys.modules, "harness.history.store", stub)
    return held


def test_a_thirty_percent_fall_from_the_seventh_commit_fails_and_names_it(store, tmp_path, capsys):
    store["entries"] = twelve(fall=True)
    assert run_check(tmp_path, strict=False) == 1
    out = capsys.readouterr().out
    seventh = twelve(True)[6]["commit"]
    assert f"started at commit {seventh}" in out
    assert "regression" in out and out.rstrip().splitlines()[-1].startswith("FAIL")


def test_the_same_twelve_without_the_fall_pass(store, tmp_path, capsys):
    store["entries"] = twelve(fall=False)
    store["warnings"] = ["store/x.yaml: damaged, skipped"]
    assert run_check(tmp_path, strict=False) == 0
    captured = capsys.readouterr()
    assert "ok" in captured.out and captured.out.rstrip().splitlines()[-1].startswith("PASS")
    assert "damaged, skipped" in captured.err


def test_a_fall_at_the_newest_commit_alone_is_suspicious_and_strict_fails_it():
    # One value at the newest commit: the exact test cannot reach p < 0.05 against 11.
    entries = [entry(i, 1000.0 * NOISE[i] * (0.7 if i == 11 else 1.0)) for i in range(12)]
    text, status = check(entries, strict=False)
    assert status == 0 and "suspicious" in text and entries[11]["commit"] in text
    assert check(entries, strict=True)[1] == 1


def test_a_fall_at_the_newest_commit_with_replicates_regresses():
    entries = [entry(i, 1000.0 * NOISE[i], [1000.0 * NOISE[i] * f for f in (0.99, 1.0, 1.01, 1.0, 0.98)])
               for i in range(11)]
    entries.append(entry(11, 700.0, [690.0, 700.0, 705.0, 698.0, 702.0]))
    text, status = check(entries, strict=False)
    assert status == 1 and f"started at commit {entries[11]['commit']}" in text


def test_an_improvement_passes_and_one_commit_is_insufficient():
    entries = [entry(i, 1000.0 * NOISE[i] * (1.4 if i >= 6 else 1.0)) for i in range(12)]
    text, status = check(entries, strict=True)
    assert status == 0 and "improved" in text
    text, status = check(entries[:1], strict=True)
    assert status == 0 and "insufficient data" in text


def test_several_reports_of_one_commit_are_one_point():
    entries = twelve(fall=True)
    extra = [entry(i, e["figures"]["samples_per_s"]["value"] * 1.005, commit=e["commit"])
             for i, e in enumerate(entries)]
    text, status = check(entries + extra, strict=False)
    assert status == 1 and f"started at commit {entries[6]['commit']}" in text
    assert "..0" in text and "(6)" in text  # the baseline segment: six commits


def test_a_series_the_newest_commit_did_not_run_says_so():
    entries = twelve(fall=False) + [entry(12, 50.0, workload="v" * 64)]
    text, status = check(entries, strict=False)
    assert status == 0 and text.count("not run at the store's newest commit 12aaaaa") == 1


def test_lower_is_better_figures_use_the_gates_threshold_or_two_percent():
    entries = twelve(fall=False)
    for i, e in enumerate(entries):
        up = 1.4 if i >= 6 else 1.0  # 40% slower steps, 40% higher loss from the seventh on
        e["figures"] = {"step_time_ms_p50": {"value": 4.0 * NOISE[i] * up, "replicates": [4.0 * NOISE[i] * up],
                                             "unit": "ms", "higher_is_better": False},
                        "test_loss": {"value": 0.5 * NOISE[i] * up, "replicates": [0.5 * NOISE[i] * up],
                                      "unit": "nats", "higher_is_better": False}}
    text, status = check(entries, strict=False)
    assert status == 1 and text.count(f"started at commit {entries[6]['commit']}") == 2
    assert "2 regressed" in text
