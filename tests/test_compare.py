"""harness compare on recorded figures: every cell accounted for, replicates, verdicts, exit status.

The real-run gate tests (harness run reports, sleeping candidates) are in test_compare_runs.py.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from harness.cli import main
from harness.report.sources import collect
from harness.gate.significance import can_reach, one_sided_p, repeats_needed
from support.reports import GPU_B, make_report, noisy_steps, sides, write


def run(capsys, *argv):
    code = main(["compare", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def rows_of(out: str) -> dict:
    return {r["metric"]: r for r in json.loads(out)["rows"]}


def test_identical_reports_pass(tmp_path, capsys):
    a = write(tmp_path, "a", make_report())
    b = write(tmp_path, "b", make_report())
    code, out, err = run(capsys, a, b)
    assert code == 0, out
    assert "PASS: 1 cell(s) compared: 0 regressed, 0 suspicious, 0 failed, 0 missing, 0 new" in out
    assert err == ""


def test_one_run_against_one_is_suspicious_not_a_regression(tmp_path, capsys):
    """Half the samples/s on one run each: beyond the threshold, but 1 against 1 proves nothing."""
    a = write(tmp_path, "a", make_report(samples_per_s=1000.0))
    b = write(tmp_path, "b", make_report(samples_per_s=500.0))
    code, out, _ = run(capsys, a, b, "--format", "json")
    rows = rows_of(out)
    assert code == 0
    assert rows["samples/s"]["verdict"] == "suspicious"
    assert "needs >=4 repeats per side" in rows["samples/s"]["note"]
    assert json.loads(out)["counts"]["suspicious"] == 1
    code, out, _ = run(capsys, a, b, "--strict")
    assert code == 1 and "FAIL" in out


def test_repeated_reports_are_replicates(tmp_path, capsys):
    base, cand = sides(tmp_path, [make_report(samples_per_s=s) for s in (1000, 990, 1010, 1005)],
                       [make_report(samples_per_s=s) for s in (700, 690, 710, 705)])
    code, out, _ = run(capsys, base, cand, "--format", "json")
    rows = rows_of(out)
    assert code == 1
    assert rows["samples/s"]["verdict"] == "regression" and "n=4/4" in rows["samples/s"]["note"]
    assert "p=0.0143" in rows["samples/s"]["note"]  # 1 / C(8, 4): complete separation


def test_window_repeats_in_one_report_are_replicates(tmp_path, capsys):
    def windows(rates):
        r = make_report(samples_per_s=sorted(rates)[2])
        r["repeats"] = {"unit": "window", "count": len(rates), "samples_per_s": rates}
        return r

    a = write(tmp_path, "a", windows([1000.0, 1010.0, 990.0, 1005.0, 995.0]))
    b = write(tmp_path, "b", windows([800.0, 810.0, 790.0, 805.0, 795.0]))
    code, out, _ = run(capsys, a, b, "--format", "json")
    s = rows_of(out)["samples/s"]
    assert code == 1 and s["verdict"] == "regression" and "n=5/5" in s["note"]


def test_per_step_times_are_not_replicates(tmp_path, capsys):
    """500 steps of each run, 6% apart: one run against one, whatever the step count."""
    a = write(tmp_path, "a", make_report(samples_per_s=1000.0, step_times_ms=noisy_steps(64.0, 500, 0.1, seed=1)))
    b = write(tmp_path, "b", make_report(samples_per_s=940.0, step_times_ms=noisy_steps(68.0, 500, 0.1, seed=2)))
    code, out, _ = run(capsys, a, b, "--format", "json")
    rows = rows_of(out)
    assert code == 0
    assert "n=1/1" in rows["step time p50 (ms)"]["note"] and "n=1/1" in rows["samples/s"]["note"]
    assert "regression" not in {r["verdict"] for r in rows.values()}


def test_change_beyond_threshold_without_significance_is_ok(tmp_path, capsys):
    base, cand = sides(tmp_path, [make_report(samples_per_s=s) for s in (1000, 700, 1100, 950, 1200)],
                       [make_report(samples_per_s=s) for s in (780, 1050, 690, 1150, 800)])
    code, out, _ = run(capsys, base, cand, "--format", "json")
    s = rows_of(out)["samples/s"]
    assert code == 0 and s["verdict"] == "ok" and "not significant" in s["note"] and s["change"] == "-20.0%"


def test_threshold_override(tmp_path, capsys):
    base, cand = sides(tmp_path, [make_report(samples_per_s=s) for s in (1000, 990, 1010, 1005)],
                       [make_report(samples_per_s=s) for s in (930, 920, 940, 935)])
    code, _, _ = run(capsys, base, cand, "--threshold", "samples_per_s=5")
    assert code == 1  # 7% slower in every run, beyond 5%
    code, out, _ = run(capsys, base, cand, "--threshold", "samples_per_s=5",
                       "--threshold", "throughput.samples_per_s=10%")  # the dotted key names it too
    assert code == 0, out


def test_missing_and_new_cells_fail_unless_allowed(tmp_path, capsys):
    write(tmp_path / "base", "bs64", make_report())
    write(tmp_path / "base", "bs128", make_report(batch_size=128))
    write(tmp_path / "cand", "bs64", make_report())
    write(tmp_path / "cand", "bs256", make_report(batch_size=256))
    code, out, _ = run(capsys, tmp_path / "base", tmp_path / "cand", "--format", "json")
    result = json.loads(out)
    verdicts = {r["cell"].split(" ")[1]: r["verdict"] for r in result["rows"] if r["metric"] == "-"}
    assert code == 1 and verdicts == {"bs=128": "missing", "bs=256": "new"}
    assert result["counts"] == {"compared": 1, "regressed": 0, "suspicious": 0, "failed": 0, "missing": 1, "new": 1,
                                "contended": 0}
    assert run(capsys, tmp_path / "base", tmp_path / "cand", "--allow-missing")[0] == 1
    assert run(capsys, tmp_path / "base", tmp_path / "cand", "--allow-new")[0] == 1
    code, out, _ = run(capsys, tmp_path / "base", tmp_path / "cand", "--allow-missing", "--allow-new")
    assert code == 0 and "missing, new allowed" in out


def test_a_failed_candidate_fails_the_gate(tmp_path, capsys):
    for status in ("failed", "diverged", "interrupted"):
        a = write(tmp_path, "a", make_report())
        bad = make_report(status=status)
        bad["error"] = f"the run {status}"
        b = write(tmp_path, status, bad)
        code, out, _ = run(capsys, a, b)
        assert code == 1, out
        assert f"did not complete: {status}: the run {status}" in out and "1 failed" in out


def test_cells_match_on_the_recipe_and_name_the_nearest(tmp_path, capsys):
    base = make_report(config_hash="aaaa", samples_per_s=1000.0)
    base["recipe_hash"] = "recipe-1"
    renamed = make_report(config_hash="bbbb", samples_per_s=1000.0)
    renamed.update(recipe_hash="recipe-1", name="renamed")
    a, b = write(tmp_path, "a", base), write(tmp_path, "b", renamed)
    code, out, _ = run(capsys, a, b)
    assert code == 0 and "1 cell(s) compared" in out

    other = make_report(config_hash="cccc", batch_size=32)
    other["recipe_hash"] = "recipe-2"
    c = write(tmp_path, "c", other)
    code, out, _ = run(capsys, a, c)
    assert code == 1
    assert "nearest digits_cnn bs=32" in out and "differs in loader.batch_size" in out


def test_different_hardware_is_a_comparison_not_a_regression(tmp_path, capsys):
    base, cand = sides(tmp_path, [make_report(samples_per_s=1000.0) for _ in range(4)],
                       [make_report(samples_per_s=500.0, machine=GPU_B) for _ in range(4)])
    code, out, _ = run(capsys, base, cand, "--format", "markdown")
    assert code == 0, out
    assert "hardware comparison, not a regression check" in out and "NVIDIA H100" in out
    assert "regression (other hardware)" in out


def test_sweep_files_as_written_by_harness_sweep(tmp_path, capsys):
    for bs in (32, 64):
        write(tmp_path / "sweep" / "cells", f"bs{bs}", make_report(batch_size=bs))
    sweep = tmp_path / "sweep" / "sweep.yaml"
    rows = [{"id": "bs32", "status": "completed", "report": "cells/bs32/report.yaml"},
            {"id": "bs64", "status": "completed", "report": "cells/bs64/report.yaml"}]
    sweep.write_text(yaml.safe_dump({"schema_version": 1, "name": "s", "cells": rows}))
    assert len(collect(sweep)) == 2
    code, out, _ = run(capsys, sweep, tmp_path / "sweep")
    assert code == 0 and "2 cell(s) compared" in out, out

    broken = tmp_path / "broken.yaml"
    rows[1] = {"id": "bs64", "status": "failed", "error": "OOM", "report": None}
    broken.write_text(yaml.safe_dump({"schema_version": 1, "name": "s", "cells": rows}))
    broken.rename(tmp_path / "sweep" / "broken.yaml")
    code, out, _ = run(capsys, sweep, tmp_path / "sweep" / "broken.yaml")
    assert code == 1 and "sweep cell bs64: failed: OOM" in out and "1 missing" in out


def test_time_to_target_counts_the_misses(tmp_path, capsys):
    def runs(times):
        r = make_report(time_to_target_s=times[0])
        r["repeats"] = {"unit": "run", "count": len(times), "time_to_target_s": times}
        return r

    a = write(tmp_path, "a", runs([4.0, 4.1, 3.9]))
    b = write(tmp_path, "b", runs([3.0, None, None]))  # faster, the one time it got there
    code, out, _ = run(capsys, a, b, "--format", "json")
    t = rows_of(out)["time to target (s)"]
    assert t["verdict"] == "suspicious" and "reached the target 3/3 vs 1/3" in t["note"]
    assert t["candidate"] == "inf" and t["change"] == "never"

    a = write(tmp_path, "a5", runs([4.0, 4.1, 3.9, 4.2, 4.0]))
    b = write(tmp_path, "b5", runs([3.0, None, None, None, None]))
    code, out, _ = run(capsys, a, b, "--format", "json")
    assert code == 1 and rows_of(out)["time to target (s)"]["verdict"] == "regression"

    a = write(tmp_path, "a6", runs([4.0, 4.1, 3.9, 4.2, 4.0]))
    b = write(tmp_path, "b6", runs([4.0, 4.0, 4.1, 3.9, None]))  # same median, one miss in five
    code, out, _ = run(capsys, a, b, "--format", "json")
    t = rows_of(out)["time to target (s)"]
    assert t["verdict"] != "ok" or "not significant" in t["note"]
    assert "reached the target 5/5 vs 4/5" in t["note"]


BOMB = """schema_version: 2
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
status: *h
"""


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r.update(schema_version=99), "unknown report schema_version 99"),
    (lambda r: r.pop("memory"), "lacks the metric memory.peak_rss_mb"),
    (lambda r: r["throughput"].pop("train_samples_per_s"), "lacks the metric throughput.samples_per_s"),
    (lambda r: r.pop("schema_version"), "not a report"),
    (lambda r: r["throughput"].update(train_samples_per_s="fast"),
     "throughput.train_samples_per_s: expected a number or null, got 'fast'"),
    (lambda r: r.update(distributed=5), "distributed: expected a mapping, got 5"),
    (lambda r: r.update(config_hash=["a", "b"]), "config_hash: expected a string, got ['a', 'b']"),
    (lambda r: r["accuracy"].update(test_accuracy=True), "accuracy.test_accuracy: expected a number or null"),
    (lambda r: r.pop("config_hash"), "lacks the key 'config_hash'"),
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


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path, capsys):
    bad = tmp_path / "bomb.yaml"
    bad.write_text(BOMB)
    t0 = time.perf_counter()
    code, out, err = run(capsys, bad, bad)
    assert time.perf_counter() - t0 < 2.0
    assert code == 2 and "YAML aliases are refused" in err and str(bad) in err and len(err) < 300


def test_bad_threshold_exits_2(tmp_path, capsys):
    a = write(tmp_path, "a", make_report())
    code, _, err = run(capsys, a, a, "--threshold", "speed=5")
    assert code == 2 and err.count("\n") == 1 and "--threshold speed=5" in err


def test_the_exact_test():
    assert not can_reach(3, 3) and can_reach(3, 4) and can_reach(200, 200)
    assert repeats_needed(0.05) == 4 and not can_reach(2, 2)
    assert one_sided_p([6, 7, 8, 9, 10], [1, 2, 3, 4, 5], candidate_greater=True) == pytest.approx(1 / 252)
    assert one_sided_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], candidate_greater=True) == 1.0
    # Ties: two seeded runs with identical accuracies on each side, every value equal: no evidence.
    assert one_sided_p([0.9] * 5, [0.9] * 5, candidate_greater=False) == 1.0


def test_calibrate_prints_spread_and_detectable_change(tmp_path, capsys):
    for i, s in enumerate((1000, 1020, 980, 1010, 990, 1005)):
        write(tmp_path / "aa", f"r{i}", make_report(samples_per_s=float(s)))
    code = main(["compare", "--calibrate", str(tmp_path / "aa")])
    out = capsys.readouterr().out
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("samples_per_s"))
    assert line.split()[1] == "6" and "4.0%" in line  # (1020 - 980) / 1002.5


def test_every_command_answers_help_and_exits_0(capsys):
    from harness.cli import parser

    commands = parser()._subparsers._group_actions[0].choices
    assert "compare" in commands and len(commands) >= 10
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        out = capsys.readouterr()
        assert exit_.value.code == 0, f"{command} --help: {out.err[-300:]}"
        assert out.out.startswith("usage: harness " + command), command
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "samples_per_s (default 15%)" in " ".join(capsys.readouterr().out.split())


def test_rows_name_the_mode_as_every_other_surface_does(tmp_path, capsys):
    a = write(tmp_path, "a", make_report())
    code, out, _ = run(capsys, a, a)
    assert code == 0 and "cpu ×1" in out and "NO x1" not in out


def test_a_folder_of_symlinks_to_runs_is_followed_once_and_never_loops(tmp_path, capsys):
    runs, links = tmp_path / "runs", tmp_path / "links"
    for name, sps in (("a", 1000.0), ("b", 1000.0)):
        write(runs, name, make_report(samples_per_s=sps))
    links.mkdir()
    for name in ("a", "b"):
        (links / name).symlink_to(runs / name, target_is_directory=True)
    (links / "again").symlink_to(runs / "a", target_is_directory=True)  # the same run twice: counted once
    (links / "loop").symlink_to(links, target_is_directory=True)  # a link to its own folder
    (links / "a" / "up").symlink_to(tmp_path, target_is_directory=True)  # and one to an ancestor
    found = collect(links)
    assert sorted(str(x.path.parent.resolve()) for x in found) == [str(runs / "a"), str(runs / "b")]
    code, out, err = run(capsys, links, links)
    assert code == 0, err
    from harness.hwreport.identity import MachineNaming  # --label links=laptop names what lies behind its links

    naming = MachineNaming(labels=((links.resolve(), "laptop"),))
    assert {naming(x.report, x.path) for x in found} == {"laptop"}


def test_a_timing_from_a_contended_machine_is_marked_and_strict_fails_it(tmp_path, capsys):
    base, cand = sides(tmp_path, [make_report()], [make_report(contention="contended", foreign=0.62)])
    code, out, _ = run(capsys, base, cand)
    samples = next(line for line in out.splitlines() if "samples/s" in line and "cpu ×1" in line)
    rss = next(line for line in out.splitlines() if "peak RSS" in line and "cpu ×1" in line)
    assert code == 0  # the same figures: the gate passes without --strict
    assert "ok (contended)" in samples and "candidate: contended 62%: rerun on a quiet machine" in samples
    assert "contended" not in rss  # memory is not a timing
    assert "1 cell(s) timed on a contended machine" in out and "--strict would fail them" in out
    code, out, _ = run(capsys, base, cand, "--strict", "--format", "json")
    result = json.loads(out)
    assert code == 1 and result["counts"]["contended"] == 1
    assert {r["metric"] for r in result["rows"] if r["contended"]} == {
        "samples/s", "step time p50 (ms)", "time to target (s)"}


def test_reports_without_the_contention_block_are_unknown_not_quiet(tmp_path, capsys):
    base, cand = sides(tmp_path, [make_report(contention=None)], [make_report()])
    code, out, _ = run(capsys, base, cand, "--strict")
    samples = next(line for line in out.splitlines() if "samples/s" in line and "cpu ×1" in line)
    assert code == 0 and "baseline: contention unknown" in samples and "candidate" not in samples


def test_calibration_from_contended_runs_says_so(tmp_path, capsys):
    for i, share in enumerate((0.02, 0.7, 0.02)):
        verdict = "contended" if share > 0.5 else "quiet"
        write(tmp_path / "aa", f"r{i}", make_report(samples_per_s=1000.0 + i, contention=verdict, foreign=share))
    code, out, _ = run(capsys, "--calibrate", tmp_path / "aa")
    assert code == 0 and "1 of 3 runs contended" in out and "calibrate on a quiet machine" in out


def test_one_table_helper_lines_up_left_words_and_right_numbers():
    from harness.report.columns import aligned

    lines = aligned([["metric", "n", "median"], ["samples_per_s", 5, "1,234"], ["test_accuracy", 12, "0.97"]],
                    right={1, 2})
    assert lines == ["metric          n  median",
                     "samples_per_s   5   1,234",
                     "test_accuracy  12    0.97"]
    assert aligned([["a", "b"], ["long", ""]]) == ["a     b", "long"], "no trailing spaces"
