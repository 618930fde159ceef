"""harness compare: matched cells, thresholds, the U test, and its exit status."""

from __future__ import annotations

import json

import pytest
import yaml

from harness.cli import main
from harness.compare import can_reach, collect
from synthetic_reports import GPU_B, make_report, noisy_steps, write

BASE_STEPS = [60.0, 70.0, 80.0, 90.0, 100.0, 110.0, 120.0, 130.0, 140.0]
# Median 8% above the baseline's, every value inside the baseline's range: noise, not a regression.
CAND_STEPS = [62.0, 72.0, 82.0, 95.0, 108.0, 112.0, 121.0, 131.0, 141.0]


def run(capsys, *argv):
    code = main(["compare", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_identical_reports_pass(tmp_path, capsys):
    a = write(tmp_path, "a", make_report())
    b = write(tmp_path, "b", make_report())
    code, out, err = run(capsys, a, b)
    assert code == 0, out
    assert "no regression" in out and "worse" not in out and err == ""


def test_half_the_samples_per_s_is_a_regression(tmp_path, capsys):
    a = write(tmp_path, "a", make_report(samples_per_s=1000.0))
    b = write(tmp_path, "b", make_report(samples_per_s=500.0))
    code, out, _ = run(capsys, a, b, "--format", "json")
    result = json.loads(out)
    assert code == 1 and result["exit_status"] == 1
    worse = {r["metric"] for r in result["rows"] if r["verdict"] == "worse"}
    assert worse == {"samples/s", "step time p50 (ms)"}
    assert all("threshold only" in r["note"] for r in result["rows"] if r["verdict"] == "worse")


def test_significant_slowdown_in_raw_step_times_is_a_regression(tmp_path, capsys):
    a = write(tmp_path, "a", make_report(step_times_ms=noisy_steps(64.0, 200, 0.1, seed=1)))
    b = write(tmp_path, "b", make_report(samples_per_s=500.0, step_times_ms=noisy_steps(128.0, 200, 0.1, seed=2)))
    code, out, _ = run(capsys, a, b)
    assert code == 1
    assert "Mann-Whitney" in out and "REGRESSED" in out


def test_difference_inside_the_noise_stays_quiet(tmp_path, capsys):
    a = write(tmp_path, "a", make_report(samples_per_s=64_000 / 100.0, step_times_ms=BASE_STEPS))
    b = write(tmp_path, "b", make_report(samples_per_s=64_000 / 108.0, step_times_ms=CAND_STEPS))
    code, out, _ = run(capsys, a, b, "--format", "json")
    result = json.loads(out)
    assert code == 0, out
    rows = {r["metric"]: r for r in result["rows"]}
    for metric in ("samples/s", "step time p50 (ms)"):
        assert rows[metric]["verdict"] == "within noise"
        assert "not significant" in rows[metric]["note"]
    assert rows["step time p50 (ms)"]["change"] == "+8.0%"


def test_repeated_reports_are_pooled_per_cell(tmp_path, capsys):
    for i, sps in enumerate([1000, 990, 1010, 1005]):
        write(tmp_path / "base", f"r{i}", make_report(samples_per_s=sps))
    for i, sps in enumerate([700, 690, 710, 705]):
        write(tmp_path / "cand", f"r{i}", make_report(samples_per_s=sps))
    code, out, _ = run(capsys, tmp_path / "base", tmp_path / "cand")
    assert code == 1
    assert "n=4/4" in out


def test_threshold_override_and_unmatched_cells(tmp_path, capsys):
    write(tmp_path / "base", "bs64", make_report(samples_per_s=1000.0))
    write(tmp_path / "base", "bs128", make_report(batch_size=128))
    write(tmp_path / "cand", "bs64", make_report(samples_per_s=930.0))
    write(tmp_path / "cand", "bs256", make_report(batch_size=256))
    code, out, _ = run(capsys, tmp_path / "base", tmp_path / "cand",
                       "--threshold", "samples_per_s=10", "--threshold", "step_time_p50_ms=10%")
    assert code == 0, out
    assert "only in" in out and "bs=128" in out and "bs=256" in out
    code, out, _ = run(capsys, tmp_path / "base", tmp_path / "cand")
    assert code == 1  # 7% slower is beyond the default 5%


def test_different_hardware_is_a_comparison_not_a_regression(tmp_path, capsys):
    a = write(tmp_path, "a", make_report(samples_per_s=1000.0))
    b = write(tmp_path, "b", make_report(samples_per_s=500.0, machine=GPU_B))
    code, out, _ = run(capsys, a, b, "--format", "markdown")
    assert code == 0
    assert "hardware comparison, not a regression check" in out and "NVIDIA H100" in out


def test_sweep_file_names_its_reports(tmp_path, capsys):
    for bs in (32, 64):
        write(tmp_path / "sweep", f"bs{bs}", make_report(batch_size=bs))
    sweep = tmp_path / "sweep" / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"cells": [{"report": "bs32/report.yaml"}, {"report": "bs64/report.yaml"},
                                               {"status": "failed", "error": "OOM"}]}))
    assert len(collect(sweep)) == 2
    code, out, _ = run(capsys, sweep, tmp_path / "sweep")
    assert code == 0 and "only in" not in out


def test_candidate_that_never_reaches_the_target_regresses(tmp_path, capsys):
    a = write(tmp_path, "a", make_report(time_to_target_s=4.0))
    b = write(tmp_path, "b", make_report(time_to_target_s=None))
    code, out, _ = run(capsys, a, b)
    assert code == 1 and "never reached the target" in out


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r.update(schema_version=99), "unknown report schema_version 99"),
    (lambda r: r.pop("memory"), "lacks the metric memory.peak_rss_mb"),
    (lambda r: r["throughput"].pop("train_samples_per_s"), "lacks the metric throughput.samples_per_s"),
    (lambda r: r.pop("schema_version"), "not a report"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, mutate, match):
    good = write(tmp_path, "good", make_report())
    report = make_report()
    mutate(report)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(report))
    code, out, err = run(capsys, good, bad)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and str(bad) in err and match in err


def test_bad_threshold_exits_2(tmp_path, capsys):
    a = write(tmp_path, "a", make_report())
    code, _, err = run(capsys, a, a, "--threshold", "speed=5")
    assert code == 2 and err.count("\n") == 1 and "--threshold speed=5" in err


def test_the_u_test_needs_enough_samples_to_reach_significance():
    assert not can_reach(3, 3) and can_reach(3, 4) and can_reach(200, 200)


@pytest.mark.slow
def test_real_runs_a_slower_candidate_regresses(tmp_path):
    """Two real ``harness run``s of one recipe; the candidate's steps sleep 150 ms more."""
    from pathlib import Path

    from conftest import TINY, run_cli

    tests = str(Path(__file__).parent)
    common = ["configs/digits_cnn.yaml", *TINY, "model.name=custom_models:SlowByEnv"]
    for name, sleep_ms in (("base", "0"), ("cand", "150")):
        proc = run_cli("run", *common, "--output", str(tmp_path / name),
                       env={"PYTHONPATH": tests, "HARNESS_TEST_STEP_SLEEP_MS": sleep_ms})
        assert proc.returncode == 0, proc.stderr
    proc = run_cli("compare", str(tmp_path / "base"), str(tmp_path / "cand"), "--format", "json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {r["metric"]: r for r in json.loads(proc.stdout)["rows"]}
    s = rows["samples/s"]
    assert s["verdict"] == "worse" and s["candidate"] < 0.5 * s["baseline"]
    assert rows["step time p50 (ms)"]["verdict"] == "worse"
    assert rows["test accuracy"]["verdict"] != "worse"  # the same training, only slower

    proc = run_cli("compare", str(tmp_path / "base"), str(tmp_path / "base"))
    assert proc.returncode == 0, proc.stdout
