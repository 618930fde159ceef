"""SIGTERM and Ctrl-C to the commands that are not a training run (evaluate, predict,
bench-inference): exit 128+N with one line, no traceback, nothing half-written, the lock let go.

Each command runs as a real subprocess whose model marks the start of its eval pass and then
sleeps in it; the signal is sent once the mark is there, so the pass is under way however
fast or loaded the machine is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.cli import run_in_process
from support.groups import one_worker
from support.paths import REPO, TESTS_PATH
from support.recipes import TINY

SLEEP_MS = 60_000  # one eval batch; the signal cuts it short
pytestmark = one_worker(__name__)  # its trained run is made once


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, harness_cache):
    # The commands' input, trained in this process: only the evaluate, predict and
    # bench-inference processes below are signalled.
    out = tmp_path_factory.mktemp("run") / "digits"
    assert run_in_process([str(REPO / "configs/digits_cnn.yaml"), *TINY, "train.epochs=1",
                           "model.name=fixtures.signal_models:MarksEval"], out) == 0
    return out


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def _signalled(args: list[str], marker: Path, signum: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": TESTS_PATH, "HARNESS_TEST_EVAL_MARKER": str(marker),
           "HARNESS_TEST_EVAL_SLEEP_MS": str(SLEEP_MS)}
    # A child inherits an ignored SIGINT (pytest started in the background of a script, as
    # `bash .ci/run &` does), and the commands rightly leave an ignored signal ignored (as
    # nohup asks): the command under test starts with SIGINT at its default.
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{marker} never appeared"
        time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _assert_one_line(proc: subprocess.CompletedProcess, signum: int) -> None:
    assert proc.returncode == 128 + signum, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: stopped by {signal.Signals(signum).name}"], proc.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_evaluate_stopped_mid_pass_exits_128_n_and_writes_nothing(run_dir, tmp_path, signum):
    before = _tree(run_dir)
    proc = _signalled(["evaluate", str(run_dir)], tmp_path / "in-pass", signum)
    _assert_one_line(proc, signum)
    assert _tree(run_dir) == before  # no eval-test.yaml, no temp file beside it


def test_evaluate_stopped_mid_pass_creates_no_output_folder(run_dir, tmp_path):
    out = tmp_path / "eval"
    proc = _signalled(["evaluate", str(run_dir), "--output", str(out)], tmp_path / "in-pass", signal.SIGTERM)
    _assert_one_line(proc, signal.SIGTERM)
    assert not out.exists()


def test_predict_stopped_mid_pass_exits_130(run_dir, tmp_path):
    from PIL import Image

    image = tmp_path / "seven.png"
    Image.new("L", (8, 8), 128).save(image)
    proc = _signalled(["predict", str(run_dir), str(image)], tmp_path / "in-pass", signal.SIGINT)
    _assert_one_line(proc, signal.SIGINT)
    assert proc.stdout == ""  # no half table


def test_bench_inference_stopped_mid_pass_lets_its_lock_go(run_dir, tmp_path):
    out = tmp_path / "inf"
    proc = _signalled(["bench-inference", str(run_dir), "--output", str(out), "inference.batch_sizes=[1]",
                       "inference.warmup_batches=1", "inference.batches=2"], tmp_path / "in-pass", signal.SIGTERM)
    _assert_one_line(proc, signal.SIGTERM)
    assert not (out / ".lock").exists()
    assert not (out / "report.yaml").exists()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
