"""scripts/gpu-check.sh: what can be checked without a GPU. Without CUDA it says there is
nothing to check and succeeds; the verdicts on recorded figures (no GPU needed to judge
them) fail the exit status whenever one figure does not hold; and every test that needs
CUDA carries the ``gpu`` marker the script selects with ``pytest -m gpu``."""

from __future__ import annotations

import ast
import copy
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from scripts.gpu_check.verdicts import CHECKS, exit_status, judge, table
from support.paths import REPO, TESTS

# The shape of figures.json as a GPU run writes it (synthetic values: no GPU has run it yet).
RECORDED = {
    "device": "NVIDIA H100 80GB HBM3",
    "tests": {"passed": 12, "failed": 0, "errors": 0, "skipped": 1},
    "sleep_step": {"slept_ms": 20.0, "read_ms": 20.3},
    "sleep_data_wait": {"fraction": 0.004, "wait_ms_p50": 0.08, "wait_ms_max": 0.9},
    "phase_blocks": {"train": {"block_mb": 1024, "read_mb": 1027.1}, "eval": {"block_mb": 512, "read_mb": 512.0},
                     "checkpoint": {"block_mb": 256, "read_mb": 256.0}},
    "run_phase_peaks": {"train": 21.5, "eval": 9.2, "checkpoint": 6.1},
    "run_data_wait_fraction": 0.41,
    "bf16": {"status": "completed", "mixed_precision": "bf16", "scaler_skipped_steps": None, "steps": 30},
    "fp16": {"status": "completed", "mixed_precision": "fp16", "scaler_skipped_steps": 2, "steps": 30},
    "compile_default": {"status": "completed", "recompiles_in_window": 0, "compile_time_s": 31.2},
    "compile_reduce_overhead": {"status": "completed", "recompiles_in_window": 0, "compile_time_s": 40.5},
    "resnet50": {"status": "completed", "samples_per_s": 2950.1, "mfu_datasheet": 0.31,
                 "memory_format": "channels_last"},
    "gpt": {"status": "completed", "tokens_per_s": 812345.0, "mfu_datasheet": 0.12},
    "fsdp2": {"status": "completed", "sharding": "fsdp2"},
    "inference": {"status": "completed", "clock": "cuda_events", "p50_ms": 0.41, "p99_ms": 0.52},
    "wall_s": 402.3,
}


def _with(path: str, value):
    figures = copy.deepcopy(RECORDED)
    *parents, last = path.split(".")
    target = figures
    for p in parents:
        target = target[p]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return figures


def test_recorded_figures_that_hold_pass_and_every_check_is_judged():
    verdicts = judge(RECORDED)
    assert [v.name for v in verdicts] == [c.name for c in CHECKS]
    assert all(v.holds is not False for v in verdicts), table(verdicts)
    assert exit_status(verdicts) == 0
    assert table(verdicts).splitlines()[-1] == "every bounded figure holds"


@pytest.mark.parametrize("path, value, row", [
    ("tests.failed", 1, "gpu-marked tests"),
    ("tests.passed", 0, "gpu-marked tests"),
    ("sleep_step.read_ms", 22.3, "torch.cuda._sleep"),  # 11.5% off the 20 ms slept
    ("sleep_data_wait.fraction", 0.2, "data wait fraction"),
    ("phase_blocks.eval.read_mb", 400.0, "eval phase"),
    ("phase_blocks.checkpoint", {"error": "exited 1: CUDA error"}, "checkpoint phase"),
    ("run_phase_peaks.checkpoint", None, "memory.<phase>"),
    ("bf16.scaler_skipped_steps", 0, "run: bf16"),
    ("fp16.scaler_skipped_steps", 30, "fp16"),  # the scaler skipped every step
    ("fp16.scaler_skipped_steps", None, "fp16"),
    ("compile_reduce_overhead.recompiles_in_window", 1, "reduce-overhead"),
    ("compile_default", {"error": "harness run compile_default ran past 300 s"}, "mode default"),
    ("resnet50.memory_format", "contiguous", "images/s"),
    ("resnet50.mfu_datasheet", 1.3, "resnet50_224 bf16 channels-last: MFU"),
    ("gpt.mfu_datasheet", None, "gpt_small bf16: MFU"),  # a GPU missing from the datasheet table
    ("gpt.mfu_datasheet", 0.0, "gpt_small bf16: MFU"),
    ("gpt.status", "failed", "tokens/s"),
    ("fsdp2.sharding", "none", "FSDP2"),
    ("inference.clock", "perf_counter", "bench-inference"),
    ("inference", KeyError, "bench-inference"),  # never measured
    ("wall_s", 481.0, "wall time"),
])
def test_one_figure_that_does_not_hold_fails_the_check(path, value, row):
    verdicts = judge(_with(path, value))
    failed = [v.name for v in verdicts if v.holds is False]
    assert len(failed) == 1 and row in failed[0], failed
    assert exit_status(verdicts) == 1
    assert table(verdicts).splitlines()[-1] == f"1 of {sum(c.bound != '' for c in CHECKS)} bounded figures do not hold"


def test_bounds_at_their_edges():
    assert exit_status(judge(_with("sleep_step.read_ms", 21.9))) == 0  # 9.5% off: within 10%
    assert exit_status(judge(_with("resnet50.mfu_datasheet", 1.0))) == 0  # (0, 1] includes 1
    assert exit_status(judge(_with("sleep_data_wait.fraction", 0.05))) == 1  # < 0.05, strictly


def test_a_figure_reported_without_a_bound_never_fails_the_check():
    for value in (0.97, KeyError, {"error": "exited 1"}):
        verdicts = judge(_with("run_data_wait_fraction", value))
        row = next(v for v in verdicts if "host-bound" in v.name)
        assert row.holds is None and exit_status(verdicts) == 0


def _script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu-check.sh"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHON": sys.executable})


def test_judging_a_recorded_file_prints_the_table_and_its_exit_status(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(RECORDED))
    bad.write_text(json.dumps(_with("fsdp2.sharding", "none")))
    ok = _script("--judge", str(good))
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0] == "device: NVIDIA H100 80GB HBM3" and lines[1].split() == ["figure", "value", "bound", "holds"]
    assert len(lines) == 2 + len(CHECKS) + 1
    failing = _script("--judge", str(bad))
    assert failing.returncode == 1
    row = next(ln for ln in failing.stdout.splitlines() if ln.startswith("FSDP2"))
    assert row.split()[-1] == "NO" and "none (completed)" in row
    assert _script("--judge", str(tmp_path / "missing.json")).returncode == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run the whole check")
def test_without_cuda_the_script_says_there_is_nothing_to_check(tmp_path):
    proc = _script("--output", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "no GPU: nothing to check (torch.cuda.is_available() is False here; the gpu-marked tests skip without CUDA)"]
    assert not (tmp_path / "out").exists()


def _needs_a_gpu(decorator: ast.expr, skips: set[str]) -> bool:
    """A ``skipif`` whose reason says the test needs CUDA or GPUs, or a name bound to one."""
    if isinstance(decorator, ast.Name):
        return decorator.id in skips
    if not (isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("mark.skipif")):
        return False
    reason = next((k.value for k in decorator.keywords if k.arg == "reason"), None)
    text = reason.value if isinstance(reason, ast.Constant) and isinstance(reason.value, str) else ""
    return text.startswith("needs") and ("CUDA" in text or "GPU" in text)


def test_every_test_that_needs_cuda_carries_the_gpu_marker():
    """``pytest -m gpu`` (the script's selection) must find every test that skips without CUDA."""
    unmarked, found = [], 0
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skips = {t.id for node in tree.body if isinstance(node, ast.Assign) and _needs_a_gpu(node.value, set())
                 for t in node.targets if isinstance(t, ast.Name)}
        module_gpu = any(isinstance(node, ast.Assign) and "pytestmark" in ast.unparse(node.targets[0])
                         and "mark.gpu" in ast.unparse(node.value) for node in tree.body)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                if any(_needs_a_gpu(d, skips) for d in node.decorator_list):
                    found += 1
                    if not (module_gpu or any(ast.unparse(d) == "pytest.mark.gpu" for d in node.decorator_list)):
                        unmarked.append(f"{path.name}::{node.name}")
    assert found >= 10  # the scan sees them (10 when this test was written)
    assert unmarked == []


def test_a_step_that_fails_or_finds_the_time_spent_is_recorded_and_the_others_still_run(monkeypatch, tmp_path):
    """The orchestration without a GPU: fake steps stand in for the tests, the meter and the runs."""
    from scripts.gpu_check import __main__ as gpu_main
    from scripts.gpu_check import runs

    def broken(out):
        raise runs.RunFailed("harness run gpt exited 1: CUDA out of memory")

    monkeypatch.setattr(gpu_main, "gpu_tests", lambda out: {"tests": RECORDED["tests"]})
    monkeypatch.setattr(gpu_main, "meter_figures", lambda: {"error": "exited 1: no kernel image"})
    monkeypatch.setattr(runs, "STEPS", [(("gpt",), broken), (("fsdp2",), lambda out: {"fsdp2": RECORDED["fsdp2"]})])
    figures = gpu_main.check(tmp_path)
    assert figures["tests"] == RECORDED["tests"] and figures["fsdp2"] == RECORDED["fsdp2"]
    assert figures["gpt"] == {"error": "RunFailed: harness run gpt exited 1: CUDA out of memory"}
    assert all(figures[k] == {"error": "exited 1: no kernel image"}
               for k in ("sleep_step", "sleep_data_wait", "phase_blocks"))
    assert figures["wall_s"] > 0
    rows = {v.name: v for v in judge(figures)}
    assert rows["gpt_small bf16: tokens/s"].value.startswith("error: RunFailed") and not rows["gpt_small bf16: tokens/s"].holds
    assert rows["meter: device peak, eval phase (MB over the phase's start)"].holds is False

    monkeypatch.setattr(runs, "TOTAL_S", 0.0)
    runs.start_clock(0.0)  # the check's time is spent: the next subprocess is not started
    with pytest.raises(runs.RunFailed, match="not run"):
        runs.time_left(60)


def test_a_subprocess_past_its_limit_is_killed_with_its_whole_session():
    from scripts.gpu_check.runs import bounded

    marker = f"gpu-check-test-{os.getpid()}"
    # The grandchild holds none of the pipes: only the session's kill ends it.
    with pytest.raises(subprocess.TimeoutExpired):
        bounded(["bash", "-c", f"bash -c 'sleep 60; true' {marker} >/dev/null 2>&1 & exec sleep 60"], 1.0)
    for _ in range(50):  # SIGKILL is delivered asynchronously: a moment, never the sleep's minute
        if marker not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the child left in the background outlived the kill")
    assert bounded(["bash", "-c", "echo hi"], 10).stdout == "hi\n"


def test_junit_counts(tmp_path):
    from scripts.gpu_check.__main__ import junit_counts

    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite name="pytest" errors="1" failures="2" skipped="3" tests="10">'
                   "</testsuite></testsuites>")
    assert junit_counts(xml) == {"passed": 4, "failed": 2, "errors": 1, "skipped": 3}


def test_a_failed_step_is_named_by_its_error_line_not_torchruns_summary_box():
    from scripts.gpu_check.runs import last_error

    torchrun = ("error: runtime.sharding: fsdp2 needs a world of at least 2 processes\n"
                "E1206 torch.distributed.elastic.multiprocessing.api: failed (exitcode: 1)\n"
                "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
                "============================================================\n"
                "harness FAILED\n------------------------------------------------------------\n"
                "Failures:\n  <NO_OTHER_FAILURES>\n============================================================\n")
    assert last_error(torchrun) == "error: runtime.sharding: fsdp2 needs a world of at least 2 processes"
    assert last_error("Traceback\n  File x\nRuntimeError: CUDA error: no kernel image\n") == \
        "RuntimeError: CUDA error: no kernel image"
    assert last_error("killed\n\n") == "killed" and last_error("") == "no output"


def test_a_terminated_check_kills_the_step_under_way():
    """SIGTERM to the check (a device lease ending) must not leave a run on the GPU: the step's
    session is its own, so only the check can end it."""
    marker = f"gpu-check-term-{os.getpid()}"
    driver = ("import signal, sys\n"
              "from scripts.gpu_check.__main__ import _terminated\n"
              "from scripts.gpu_check.runs import bounded\n"
              "signal.signal(signal.SIGTERM, _terminated)\n"
              "print('ready', flush=True)\n"
              f"bounded(['bash', '-c', \"bash -c 'sleep 60; true' {marker} & exec sleep 60\"], 120)\n")
    proc = subprocess.Popen([sys.executable, "-c", driver], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline() == "ready\n"
        for _ in range(100):  # until the step's grandchild is up
            if marker in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout:
                break
            time.sleep(0.1)
        proc.terminate()
        assert proc.wait(timeout=30) == 128 + 15
    finally:
        proc.kill()
        proc.wait()
    for _ in range(50):
        if marker not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the step's processes outlived the check")
