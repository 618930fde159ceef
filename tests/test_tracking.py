"""Trackers, metrics.jsonl and profiler traces: what a run leaves to watch it over time.

One small profiled run with TensorBoard is read back with TensorBoard's own reader;
a run killed with SIGKILL and resumed must leave a metric stream with no repeated
and no missing step; a tracker that is not installed is bad input.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.observe import metrics_stream

from harness.observe import tracking
from harness.cli import main
from harness.measure.config import MeasureConfig, ProfileConfig
from harness.measure.profile import first_step
from harness.report.io import load_report
from support.paths import REPO, TESTS_PATH
from support.recipes import TINY

EVERY = 2
CNN = ["configs/digits_cnn.yaml", *TINY, f"tracking.every_n_steps={EVERY}"]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> Path:
    """digits_cnn for two epochs, TensorBoard on, three steps profiled after the window."""
    from accelerate.state import AcceleratorState, PartialState

    out = tmp_path_factory.mktemp("tracked") / "run"
    assert main(["run", *CNN, "tracking.log_with=[tensorboard]", "measure.profile={steps: 3}",
                 "--output", str(out)]) == 0
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    return out


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return ea


def _hparams(ea) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    out = {}
    for key, value in info.hparams.items():
        kind = value.WhichOneof("kind")
        out[key] = getattr(value, kind)
    return out


def test_tensorboard_events_read_back_match_the_report(tracked_run):
    report = load_report(tracked_run)
    steps = sum(1 for r in metrics_stream.read(tracked_run) if r["kind"] == "interval") * EVERY
    total = report["throughput"]["warmup_steps"] + report["throughput"]["measured_steps"] + report["profile"]["steps"]
    ea = _events(tracked_run / "harness")
    loss = ea.Scalars("train/train_loss")
    assert len(loss) == total // EVERY and steps == len(loss) * EVERY
    assert [e.step for e in loss] == list(range(EVERY, total + 1, EVERY))
    dev = ea.Scalars("epoch/dev_accuracy")
    assert len(dev) == report["config"]["train"]["epochs"]
    assert dev[-1].value == pytest.approx(report["accuracy"]["final_dev_accuracy"], abs=1e-6)
    assert ea.Scalars("final/test_accuracy")[-1].value == pytest.approx(report["accuracy"]["test_accuracy"],
                                                                         abs=1e-6)
    expected = tracking.hparams(report["config"])
    got = _hparams(ea)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == (pytest.approx(float(value)) if isinstance(value, (int, float)) and
                            not isinstance(value, bool) else value), key


def test_metrics_jsonl_lines_parse_and_agree_with_the_report(tracked_run):
    lines = (tracked_run / metrics_stream.FILE).read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line is JSON
    report = load_report(tracked_run)
    intervals = [r for r in rows if r["kind"] == "interval"]
    assert all(r["steps"] == EVERY and r["samples"] > 0 and r["train_loss"] > 0 and r["lr"] >= 0
               and r["samples_per_s"] > 0 and 0 <= r["data_wait_fraction"] <= 1 and r["rss_mb"] > 100
               for r in intervals), intervals
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [(r["epoch"], r["dev_accuracy"]) for r in epochs] == \
        [(d["epoch"], d["accuracy"]) for d in report["accuracy"]["dev"]]
    assert rows[-1]["kind"] == "end" and rows[-1]["test_accuracy"] == report["accuracy"]["test_accuracy"]


def test_the_trace_parses_names_the_convolutions_and_stays_out_of_the_window(tracked_run):
    report = load_report(tracked_run)
    prof = report["profile"]
    with gzip.open(tracked_run / prof["chrome_trace"], "rt") as f:
        trace = json.load(f)
    names = {e.get("name", "") for e in trace["traceEvents"]}
    assert any("convolution" in n for n in names), sorted(names)[:50]
    assert prof["tensorboard_traces"] and all((tracked_run / p).is_file() for p in prof["tensorboard_traces"])
    assert prof["top_ops"] and all(op["self_time_ms"] > 0 and 0 < op["share"] <= 1 for op in prof["top_ops"])
    assert prof["steps"] == 3 == prof["last_step"] - prof["first_step"] + 1
    thr = report["throughput"]
    # The window times every step after warm-up except the traced ones, which are the run's last.
    assert prof["first_step"] >= thr["warmup_steps"]
    assert thr["warmup_steps"] + thr["measured_steps"] + prof["steps"] == prof["last_step"] + 1


def test_profiled_steps_are_never_in_a_window():
    from harness.measure.meter import Meter

    cfg = MeasureConfig(warmup_steps=2, window_steps=4, repeats=2, profile=ProfileConfig(steps=3))
    assert first_step(cfg, total_steps=100) == 10  # after both windows
    assert first_step(MeasureConfig(warmup_steps=2, profile=ProfileConfig(steps=3)), total_steps=20) == 17
    assert first_step(MeasureConfig(profile=ProfileConfig(steps=3, after=4)), total_steps=20) == 4
    meter = Meter(MeasureConfig(warmup_steps=1), torch.device("cpu"))
    meter.untimed = range(4, 7)
    assert [meter.window_of(s) for s in range(8)] == [None, 0, 0, 0, None, None, None, 0]


def test_a_trace_that_cannot_be_written_costs_a_warning_not_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "profile").mkdir(parents=True)
    (out / "profile" / "tensorboard").write_text("a file where the trace folder goes\n")
    assert main(["run", *CNN, "measure.profile={steps: 2}", "--output", str(out)]) == 0, capsys.readouterr().err
    report = load_report(out)
    assert report["status"] == "completed" and report["profile"] is None
    assert any(w.startswith("profile is null: FileExistsError") and "tensorboard" in w for w in report["warnings"])


def test_a_profiled_cpu_run_prints_no_kineto_lines(tmp_path):
    """Kineto probes for GPUs when it writes the trace and logs an ERROR line without one."""
    proc = subprocess.run([sys.executable, "-m", "harness", "run", *CNN, "train.epochs=1",
                           "measure.profile={steps: 2}", "--output", str(tmp_path / "run")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"})
    assert proc.returncode == 0, proc.stderr
    assert load_report(tmp_path / "run")["profile"]["steps"] == 2
    assert "gpuGetDeviceCount" not in proc.stderr and "ERROR:" not in proc.stderr, proc.stderr
    assert "profiler_start" not in proc.stderr, proc.stderr


def test_a_resume_drops_the_lines_past_its_checkpoint_and_a_torn_line(tmp_path):
    rows = [{"kind": "interval", "step": 2}, {"kind": "interval", "step": 4}, {"kind": "epoch", "step": 5, "epoch": 1},
            {"kind": "interval", "step": 6}, {"kind": "interval", "step": 8}, {"kind": "epoch", "step": 9, "epoch": 2},
            {"kind": "end", "step": 9}]
    path = tmp_path / metrics_stream.FILE
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "interval", "st')
    metrics_stream.continue_from(tmp_path, steps_done=5, epochs_done=1)
    assert metrics_stream.read(tmp_path) == rows[:3]
    assert path.read_text().endswith("\n")


@pytest.mark.slow
def test_sigkill_then_resume_leaves_every_step_once(tmp_path):
    """Killed once lines past its first checkpoint exist; resumed, the stream has each step once."""
    common = [*CNN, "train.epochs=3", "model.name=fixtures.custom_models:Slow", "model.kwargs={sleep_ms: 30}",
              "tracking.log_with=[tensorboard]"]
    env = {**os.environ, "PYTHONPATH": TESTS_PATH}
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *common, "--output", str(out)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            rows = metrics_stream.read(out)
            first = next((r["step"] for r in rows if r["kind"] == "epoch"), None)
            if first is not None and any(r["kind"] == "interval" and r["step"] > first + EVERY for r in rows):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the run wrote no line past its first epoch in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--resume", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = metrics_stream.read(out)
    assert load_report(out)["status"] == "completed"
    steps = [r["step"] for r in rows if r["kind"] == "interval"]
    assert steps == list(range(EVERY, steps[-1] + 1, EVERY)), steps  # no repeat, no gap
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2, 3]
    assert [r["kind"] for r in rows].count("end") == 1
    ea = _events(out / "harness")  # TensorBoard purged what the killed run wrote past the checkpoint
    assert [e.step for e in ea.Scalars("train/train_loss")] == steps


def test_a_tracker_that_is_not_installed_is_bad_input(tmp_path, capsys, monkeypatch):
    real = tracking.installed
    monkeypatch.setattr(tracking, "installed", lambda name: name != "aim" and real(name))
    out = tmp_path / "run"
    assert main(["run", *CNN, "tracking.log_with=[tensorboard, aim]", "--output", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "tracking.log_with[1]" in err[0] and "pip install 'harness[aim]'" in err[0], err
    assert not out.exists()


def test_an_unknown_tracker_is_named():
    from harness.config.run import load_config
    from harness.errors import BadInput

    with pytest.raises(BadInput, match=r"tracking.log_with\[0\]: expected one of tensorboard"):
        load_config(None, ["tracking.log_with=[tensorbored]"])
    with pytest.raises(BadInput, match=r"measure.profile.steps: expected an integer > 0"):
        load_config(None, ["measure.profile={steps: 0}"])


def test_report_curves_put_several_runs_on_one_axis(tmp_path):
    from harness.hwreport import curves

    for name, slope in (("a", 0.1), ("b", 0.2)):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        rows = [{"kind": "interval", "step": s, "train_loss": 2 - slope * s, "samples_per_s": 100.0 + s}
                for s in (2, 4, 6)] + [{"kind": "epoch", "step": 6, "epoch": 1, "dev_accuracy": slope}]
        (folder / metrics_stream.FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "runs" / "old").mkdir()  # a run from before metrics.jsonl: left out
    runs = curves.load(sorted((tmp_path / "runs").iterdir()))
    assert [r.label for r in runs] == ["a", "b"]
    assert runs[1].series("interval", "step", "train_loss") == ([2, 4, 6], [1.6, 1.2, pytest.approx(0.8)])
    md, page = curves.embed(sorted((tmp_path / "runs").iterdir()), tmp_path / "out")
    assert "| a | 6 | 1.4000 | 104.0 | 0.1000 |" in md and "| b | 6 | 0.8000 | 104.0 | 0.2000 |" in md
    pytest.importorskip("matplotlib")
    assert {p.name for p in (tmp_path / "out" / "plots").iterdir()} == \
        {"curve_train_loss.png", "curve_samples_per_s.png", "curve_dev_accuracy.png"}
    assert page.count("data:image/png;base64,") == 3


def test_trackers_stay_local_unless_the_user_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:5000")
    init = tracking.local_defaults(["wandb", "mlflow", "comet_ml"], tmp_path, {"wandb": {"dir": "/elsewhere"}})
    assert os.environ["WANDB_MODE"] == "offline"
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://example.invalid:5000"  # the user's own, kept
    assert init["wandb"] == {"dir": "/elsewhere"} and init["comet_ml"] == {"online": False}
    monkeypatch.setattr(tracking, "installed", lambda name: name in ("tensorboard", "mlflow"))
    assert tracking.TrackingConfig(log_with=["all"]).names() == ["tensorboard", "mlflow"]
    assert tracking.accelerator_kwargs(tracking.TrackingConfig(), tmp_path) == {}
    hp = tracking.hparams({"a": {"b": None, "c": [1, 2], "d": 0.5}, "e": True})
    assert hp == {"a.b": "null", "a.c": "[1, 2]", "a.d": 0.5, "e": True}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_a_gpu_the_lines_hold_device_memory_and_the_trace_device_time(tmp_path):
    """fp16 on a GPU: CUDA memory and the scaler's scale in every interval; the trace's top ops by device time."""
    out = tmp_path / "run"
    assert main(["run", *CNN, "runtime.device=gpu", "runtime.precision=fp16", "measure.profile={steps: 3}",
                 "--output", str(out)]) == 0
    intervals = [r for r in metrics_stream.read(out) if r["kind"] == "interval"]
    assert intervals and all(r["device_allocated_mb"] > 0 and r["device_reserved_mb"] >= r["device_allocated_mb"]
                             and r["scaler_scale"] > 0 for r in intervals)
    prof = load_report(out)["profile"]
    assert prof["time_kind"] == "cuda" and prof["top_ops"] and prof["top_ops"][0]["self_time_ms"] > 0
