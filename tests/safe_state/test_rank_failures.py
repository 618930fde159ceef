"""A rank that fails: named with its exit status when it dies without a note, and the launch
preflight probes the model before any rank starts."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial

import pytest

from harness.cli import main
from harness.report.io import load_report
from support.cli import run_in_process
from support.folders import one_error_line
from support.paths import REPO, TESTS_PATH
from support.recipes import SAFE_RECIPE

run = partial(run_in_process, SAFE_RECIPE)


def test_a_rank_without_an_exit_note_is_named(tmp_path):
    import json

    from harness.launch.command import _silent_message, first_failure, silent_ranks

    for rank in (0, 1):
        (tmp_path / f"rank{rank}.start.json").write_text(json.dumps({"rank": rank, "pid": 100 + rank, "time": 1.0}))
    (tmp_path / "rank0.json").write_text(json.dumps(
        {"rank": 0, "code": 1, "message": "error: RuntimeError: Connection closed by peer", "time": 2.0}))
    (tmp_path / "rank1.fault").write_text("Fatal Python error: Segmentation fault\n\nThread 0x01 ...\n")
    silent = silent_ranks(tmp_path)
    assert [(s["rank"], s["fault"]) for s in silent] == [(1, "Fatal Python error: Segmentation fault")]
    message = _silent_message(silent, first_failure(tmp_path))
    assert message == ("error: rank 1 (pid 101) ended without a note: Fatal Python error: Segmentation fault; "
                       "then rank 0 failed: RuntimeError: Connection closed by peer")


def test_a_silent_ranks_exit_status_is_read_from_the_launchers_summary():
    from harness.launch.command import exit_status_in

    summary = """Failures:
[1]:
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 15909)  (SIGKILL)
Root Cause (first observed failure):
[0]:
  rank      : 0 (local_rank: 0)
  exitcode  : 7 (pid: 15908)
"""
    assert exit_status_in(summary, 15909) == "killed by SIGKILL"
    assert exit_status_in(summary, 15908) == "exit code 7"
    assert exit_status_in(summary, 4242) is None


@pytest.mark.slow
@pytest.mark.parametrize("model, cause, status", [("ExitOnRank", "died without a word", "exit code 7"),
                                                  ("SegfaultOnRank", "Segmentation fault", "killed by SIGSEGV")])
def test_a_rank_that_dies_without_a_note_is_blamed(tmp_path, model, cause, status):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "harness", "launch", "--mode", "ddp", "--nproc", "2", *SAFE_RECIPE,
                           f"model.name=fixtures.custom_models:{model}", "model.kwargs={rank: 1, step: 3}",
                           "--output", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": TESTS_PATH})
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: rank 1 (pid ") and cause in last, last
    assert status in last, last
    report = load_report(out)
    assert report["status"] == "failed" and report["failed_rank"] == 1 and cause in report["error"]


def test_the_launch_preflight_probes_the_model(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(TESTS_PATH)
    code = main(["launch", "--mode", "ddp", "--nproc", "2", *SAFE_RECIPE, "model.name=fixtures.custom_models:WrongWidth",
                 "--output", str(tmp_path / "out"), "--dry-run"])
    assert code == 2
    assert "layer 'fc2'" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
