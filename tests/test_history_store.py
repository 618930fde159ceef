"""The history store (docs/history.md): reports' git block, `harness history add`, reading back.

Reports are the recorded ones of support/reports.py; one tiny real run checks that a
report records the checkout it ran in. Two real processes add at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.files import git
from harness.history.store import read_entries, series
from harness.hwreport.identity import hardware
from harness.report.io import write_report
from support.paths import REPO
from support.recipes import TINY
from support.reports import make_report, write

pytestmark = pytest.mark.usefixtures("one_thread")

SHA_A, SHA_B = "a" * 40, "b" * 40


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def scratch_repo(tmp_path, monkeypatch) -> Path:
    """A git repository with two commits; git looks no higher than tmp_path."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "model.py").write_text("x = 1\n")
    _git(repo, "add", "model.py")
    _git(repo, "commit", "-qm", "first")
    (repo / "model.py").write_text("x = 2\n")
    _git(repo, "commit", "-qam", "second")
    return repo


def _report(commit: str | None = SHA_A, samples_per_s: float = 1000.0, **kw) -> dict:
    report = make_report(samples_per_s=samples_per_s, **kw)
    report["recipe_hash"] = "recipe-1"
    if commit:
        report["environment"]["git"] = {"commit": commit, "dirty": False, "branch": "main"}
    return report


def _add(*argv) -> int:
    return main(["history", "add", *map(str, argv)])


# --------------------------------------------------------------------------- the git block

def test_git_checkout_names_the_commit_dirt_and_branch_of_a_scratch_repo(scratch_repo, tmp_path):
    head = _git(scratch_repo, "rev-parse", "HEAD")
    assert git.checkout(scratch_repo) == {"commit": head, "dirty": False, "branch": "main"}
    (scratch_repo / "model.py").write_text("x = 3\n")
    assert git.checkout(scratch_repo)["dirty"] is True
    (scratch_repo / "untracked.txt").write_text("a run's output\n")
    _git(scratch_repo, "checkout", "-q", "model.py")
    assert git.checkout(scratch_repo)["dirty"] is False  # untracked files are not dirt
    _git(scratch_repo, "checkout", "-q", "--detach", "HEAD~1")
    assert git.checkout(scratch_repo)["branch"] is None
    assert git.resolve("main", scratch_repo) == head and git.resolve("nope", scratch_repo) is None
    assert git.resolve("--all", scratch_repo) is None
    outside = tmp_path / "outside"
    outside.mkdir()
    assert git.checkout(outside) is None


def test_git_missing_or_hanging_is_null_without_a_traceback(scratch_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert git.checkout(scratch_repo) is None
    slow = tmp_path / "bin"
    slow.mkdir()
    (slow / "git").write_text("#!/bin/sh\nsleep 30\n")
    (slow / "git").chmod(0o755)
    monkeypatch.setenv("PATH", str(slow))
    monkeypatch.setattr(git, "TIMEOUT_S", 0.2)
    assert git.checkout(scratch_repo) is None


@pytest.mark.slow  # one tiny real run
def test_a_run_records_the_checkout_of_its_working_directory(scratch_repo, tmp_path, monkeypatch, capsys):
    from harness.measure import environment
    from harness.report.io import load_report

    monkeypatch.chdir(scratch_repo)
    out = scratch_repo / "runs" / "r"  # untracked: the run's own output leaves the tree clean
    assert main(["run", str(REPO / "configs/digits_mlp.yaml"), *TINY, "data.subset=120", "train.epochs=1",
                 "--output", str(out)]) == 0
    block = load_report(out)["environment"]["git"]
    assert block == {"commit": _git(scratch_repo, "rev-parse", "HEAD"), "dirty": False, "branch": "main"}
    # The harness's own checkout stays where it was: not this repository's commit.
    assert load_report(out)["environment"]["comparability"]["harness_git_sha"] != block["commit"]
    capsys.readouterr()
    assert _add(tmp_path / "store", out) == 0
    [entry], _ = read_entries(tmp_path / "store")
    assert entry["commit"] == block["commit"] and entry["mode"] == "cpu ×1"
    assert entry["workload"] == load_report(out)["recipe_hash"] and entry["workload_name"] == "digits_mlp"
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(outside)
    assert environment.collect()["git"] is None


# --------------------------------------------------------------------------- adding

def test_add_a_run_gives_one_entry_in_the_contracts_format(tmp_path, capsys):
    report = _report(SHA_A)
    report["repeats"] = {"unit": "window", "count": 3, "samples_per_s": [990.0, 1000.0, 1010.0]}
    write(tmp_path / "runs", "a", report)
    assert _add(tmp_path / "store", tmp_path / "runs" / "a") == 0
    assert "1 added" in capsys.readouterr().out
    [entry], warnings = read_entries(tmp_path / "store")
    assert warnings == []
    assert set(entry) == {"workload", "workload_name", "mode", "machine", "commit", "dirty", "branch", "order",
                          "time", "added_at", "source", "id", "figures"}
    assert (entry["workload"], entry["workload_name"], entry["mode"]) == ("recipe-1", "digits_cnn", "cpu ×1")
    assert entry["machine"] == hardware(report) and entry["commit"] == SHA_A and entry["order"] == 0
    assert entry["branch"] == "main" and entry["dirty"] is False
    figs = entry["figures"]
    assert figs["samples_per_s"] == {"value": 1000.0, "replicates": [990.0, 1000.0, 1010.0],
                                     "unit": "samples/s", "higher_is_better": True}
    assert figs["step_time_ms_p50"]["replicates"] == [64.0] and figs["step_time_ms_p50"]["higher_is_better"] is False
    assert set(figs) == {"samples_per_s", "step_time_ms_p50", "peak_rss_mb", "test_accuracy", "time_to_target_s"}


def test_adding_the_same_report_twice_is_a_no_op(tmp_path, capsys):
    write(tmp_path / "runs", "a", _report())
    assert _add(tmp_path / "store", tmp_path / "runs" / "a") == 0
    assert _add(tmp_path / "store", tmp_path / "runs" / "a", tmp_path / "runs" / "a" / "report.yaml") == 0
    assert "0 added, 2 already there" in capsys.readouterr().out
    assert len(read_entries(tmp_path / "store")[0]) == 1
    assert len(list((tmp_path / "store" / "entries").iterdir())) == 1


def test_one_report_under_two_commits_is_two_entries(scratch_repo, tmp_path, monkeypatch, capsys):
    """A synthetic A/A series repeats one report's content, each time for another commit."""
    write(tmp_path / "runs", "a", _report(commit=None))
    monkeypatch.chdir(scratch_repo)
    for rev in ("HEAD~1", "HEAD", "HEAD~1"):
        assert _add(tmp_path / "store", tmp_path / "runs" / "a", "--commit", rev) == 0
    entries, _ = read_entries(tmp_path / "store")
    assert [e["commit"] for e in entries] == [_git(scratch_repo, "rev-parse", r) for r in ("HEAD~1", "HEAD")]
    assert [e["order"] for e in entries] == [0, 1]


def test_add_a_sweep_adds_its_completed_cells_and_names_the_others(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    write(sweep / "cells", "bs32", _report(batch_size=32, config_hash="h32"))
    write(sweep / "cells", "bs64", _report(batch_size=64, config_hash="h64"))
    write(sweep / "cells", "bs128", _report(batch_size=128, config_hash="h128", status="failed"))
    cells = [{"id": c, "status": "completed", "report": f"cells/{c}/report.yaml"} for c in ("bs32", "bs64")]
    cells += [{"id": "bs256", "status": "failed", "error": "out of memory", "report": None}]
    (sweep / "sweep.yaml").write_text(yaml.safe_dump({"cells": cells}))
    assert _add(tmp_path / "store", sweep) == 0
    out, err = capsys.readouterr()
    assert "2 added" in out and "bs128" in err and "status failed, not completed" in err
    assert len(read_entries(tmp_path / "store")[0]) == 2
    assert _add(tmp_path / "s2", sweep / "sweep.yaml") == 0  # the sweep file: its cells, one without a report
    out, err = capsys.readouterr()
    assert "2 added" in out and "out of memory" in err


def test_order_is_the_commits_first_addition_and_series_group_by_figure(tmp_path):
    store = tmp_path / "store"
    for i, (sha, sps) in enumerate([(SHA_B, 900.0), (SHA_A, 1000.0), (SHA_B, 950.0)]):
        write(tmp_path / "runs", f"r{i}", _report(sha, samples_per_s=sps))
        assert _add(store, tmp_path / "runs" / f"r{i}") == 0
    entries, _ = read_entries(store)
    assert [(e["commit"], e["order"]) for e in entries] == [(SHA_B, 0), (SHA_B, 0), (SHA_A, 1)]
    by = series(entries)
    key = ("recipe-1", "cpu ×1", hardware(_report()), "samples_per_s")
    assert [e["figures"]["samples_per_s"]["value"] for e in by[key]] == [900.0, 950.0, 1000.0]


def test_commit_flag_resolves_in_the_working_directory_and_overrides_the_report(scratch_repo, tmp_path,
                                                                               monkeypatch, capsys):
    write(tmp_path / "runs", "a", _report(commit=None))
    monkeypatch.chdir(scratch_repo)
    assert _add(tmp_path / "store", tmp_path / "runs" / "a", "--commit", "HEAD~1", "--branch", "release") == 0
    [entry], _ = read_entries(tmp_path / "store")
    assert entry["commit"] == _git(scratch_repo, "rev-parse", "HEAD~1") and entry["branch"] == "release"


def test_a_damaged_entry_is_named_and_skipped(tmp_path, capsys):
    write(tmp_path / "runs", "a", _report(SHA_A))
    write(tmp_path / "runs", "b", _report(SHA_B, samples_per_s=900.0))
    store = tmp_path / "store"
    assert _add(store, tmp_path / "runs") == 0
    first = sorted((store / "entries").iterdir())[0]
    first.write_text("workload: [unclosed\n")
    odd = store / "entries" / "20260101T000000000000Z-0123456789abcdef.yaml"
    odd.write_text("workload: x\n")
    entries, warnings = read_entries(store)
    assert len(entries) == 1 and entries[0]["order"] == 0
    assert len(warnings) == 2 and any(str(first) in w and "damaged" in w for w in warnings)
    assert any(str(odd) in w and "required key missing" in w for w in warnings)
    capsys.readouterr()
    write(tmp_path / "runs", "c", _report("c" * 40))
    assert _add(store, tmp_path / "runs" / "c") == 0  # a damaged file never stops an add


ADDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness.cli import main
    store, go, *runs = sys.argv[1:]
    while not Path(go).exists():
        time.sleep(0.005)
    for run in runs:
        assert main(["history", "add", store, run]) == 0
""")


@pytest.mark.slow  # two real processes
def test_two_processes_adding_at_once_lose_nothing(tmp_path):
    store, go = tmp_path / "store", tmp_path / "go"
    runs = {side: [write(tmp_path / side, f"r{i}", _report(f"{side}{i:02d}".ljust(40, "0"), samples_per_s=100.0 + i))
                   for i in range(10)] for side in ("a", "b")}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", ADDER, str(store), str(go), *map(str, runs[side])],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for side in runs]
    go.write_text("")
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    entries, warnings = read_entries(store)
    assert warnings == [] and len(entries) == 20
    assert sorted(e["order"] for e in entries) == list(range(20))
    assert not [p for p in (store / "entries").iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- bad input

def _other_schema(inp: Path) -> list:
    (inp / "run").mkdir()
    (inp / "run" / "report.yaml").write_text("cells_done: 3\nsomething: else\n")
    return [inp / "run"]


def _good(inp: Path, commit: str | None = SHA_A) -> Path:
    return write(inp, "run", _report(commit))


BAD = {
    "store_is_a_file": (lambda inp: [(inp / "f").write_text("x") and inp / "f", _good(inp)], ("a file",)),
    "store_is_another_folder": (lambda inp: [(inp / "d").mkdir() or (inp / "d" / "mine.txt").write_text("x")
                                             and inp / "d", _good(inp)], ("not a history store",)),
    "another_schema": (lambda inp: [inp / "store", *_other_schema(inp)], ("report.yaml", "no schema_version")),
    "no_such_run": (lambda inp: [inp / "store", inp / "missing"], ("missing", "no such report")),
    "unknown_revision": (lambda inp: [inp / "store", _good(inp), "--commit", "no-such-rev-xyz"],
                         ("--commit no-such-rev-xyz", "unknown revision")),
    "report_without_commit": (lambda inp: [inp / "store", _good(inp, None)], ("run/report.yaml", "--commit REV")),
}


@pytest.mark.parametrize("row", sorted(BAD))
def test_bad_input(row, tmp_path, capsys, monkeypatch):
    inp = tmp_path / "in"
    inp.mkdir()
    monkeypatch.chdir(REPO)
    argv = BAD[row][0](inp)
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    assert _add(*argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), err
    for part in BAD[row][1]:
        assert part in err, err
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
    assert not (inp / "store").exists()


def test_reading_a_store_that_is_a_file_or_missing_is_bad_input(tmp_path):
    from harness.errors import BadInput

    (tmp_path / "f").write_text("x")
    for path in (tmp_path / "f", tmp_path / "missing"):
        with pytest.raises(BadInput, match=str(path)):
            read_entries(path)


# --------------------------------------------------------------------------- pytest-benchmark

BENCH = textwrap.dedent("""
    import time
    def test_nap(benchmark):
        benchmark.extra_info["samples_per_s"] = [100.0, 120.0, 110.0]
        benchmark.pedantic(time.sleep, args=(0.002,), rounds=3, iterations=1)
    def test_broken(benchmark):
        benchmark(lambda: 1 / 0)
""")


def _outside_xdist() -> dict:
    """This process's environment less pytest-xdist's variables: a pytest session started
    from a worker would otherwise take itself for one and pytest-benchmark turn its
    benchmarks off ("cannot be performed reliably in a parallelized environment")."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}


@pytest.mark.slow  # a pytest session in a subprocess
def test_a_pytest_benchmark_session_feeds_a_store(scratch_repo, tmp_path):
    (scratch_repo / "test_bench.py").write_text(BENCH)
    env = {**_outside_xdist(), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "harness.history.pytest_plugin",
                           "-p", "no:cacheprovider", "test_bench.py", "--history-store", str(tmp_path / "store")],
                          cwd=scratch_repo, env=env, capture_output=True, text=True, timeout=300)
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 benchmark entries added" in proc.stdout
    [entry], warnings = read_entries(tmp_path / "store")
    assert warnings == []
    assert entry["workload"] == "test_bench.py::test_nap" and entry["mode"] == "pytest-benchmark"
    assert entry["commit"] == _git(scratch_repo, "rev-parse", "HEAD")
    times = entry["figures"]["time_median_s"]
    assert len(times["replicates"]) == 3 and all(t >= 0.002 for t in times["replicates"])
    assert entry["figures"]["samples_per_s"]["value"] == 110.0
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "test_bench.py").write_text(BENCH)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "harness.history.pytest_plugin",
                           "test_bench.py", "--history-store", str(tmp_path / "s2")],
                          cwd=outside, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 4 and "--history-commit" in proc.stderr and not (tmp_path / "s2").exists()


def test_the_schema_checks_the_git_block(tmp_path):
    report = _report(None)
    report["environment"]["git"] = None  # outside a checkout
    write_report(tmp_path / "a.yaml", report)
    for block, says in (({"dirty": True}, "environment.git.commit: required key missing"),
                        ({"commit": 5}, "environment.git.commit")):
        report["environment"]["git"] = block
        with pytest.raises(ValueError, match=says):
            write_report(tmp_path / "b.yaml", report)
