"""The report builder on its own: phases' results in, a report the schema accepts out.

No training: each phase's result is made by hand (or by the real meter over a few
tensors), handed to ``ReportBuilder``, and the report is checked, written and read
back through the one writer and reader.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from support.paths import REPO
from harness.config.run import load_config
from harness.errors import BadInput
from harness.files.run_folder import RunFolder
from harness.launch.exit_notes import blame_silent
from harness.measure import compile_stats, threads
from harness.measure.aggregate import aggregate
from harness.measure.config import MeasureConfig
from harness.measure.meter import Meter
from harness.report.io import load_report
from harness.report.schema import validate
from harness.run.report_builder import Outcome, ReportBuilder, data_block

CONFIG = REPO / "configs" / "digits_cnn.yaml"


@pytest.fixture(scope="module")
def cfg():
    return load_config(CONFIG, ["output.progress=false"])


def fake_data():
    return SimpleNamespace(source="digits", num_classes=3, classes=["a", "b", "c"], sample_shape=(1, 8, 8),
                           sizes=lambda: {"train": 8, "dev": 2, "test": 2}, skipped=[])


def measured_figures() -> dict:
    """The real meter over eight batches of four, one warm-up step: the figures aggregate makes."""
    meter = Meter(MeasureConfig(warmup_steps=1), torch.device("cpu"))
    for _ in meter.steps([(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))] * 8):
        pass
    return aggregate([meter.summary()], 4)


def accuracy(test_accuracy: float | None) -> dict:
    return {"dev": [{"epoch": 1, "train_loss": 0.9, "accuracy": 0.5, "loss": 1.0}], "best_dev_accuracy": 0.5,
            "best_epoch": 1, "final_dev_accuracy": 0.5, "test_accuracy": test_accuracy, "test_loss": 1.1,
            "test_samples": 2, "target_accuracy": None, "time_to_target_s": None, "time_to_target_wall_s": None}


def built(cfg, outcome: Outcome) -> ReportBuilder:
    """A training run's report, every phase's result handed over in the runner's order."""
    builder = ReportBuilder.start(cfg)
    builder.setup(data_block(fake_data()), {"name": "tiny", "parameters": 10},
                  {"world_size": 1, "device": "cpu", "precision": "no"}, resumed=(1, 3))
    builder.trained(outcome)
    figures = measured_figures()
    compiled = compile_stats.combine(cfg.runtime.compile, [compile_stats.CompileTracker(cfg.runtime.compile).summary()])
    builder.measured(figures, threads.threads_block(2.0, 1), nonfinite=None, compute={}, compiled=compiled,
                     scaler_skipped_steps=None, warnings=["a phase's own warning"])
    builder.profiled(None, "profile is null: the run ended before step 9 (measure.profile.after)")
    builder.finished(outcome.status, {"setup_s": 1.0, "epoch_wall_s": [2.0], "train_wall_s": 2.0,
                                      "total_wall_s": 3.0, "process_wall_s": 3.0})
    return builder


def completed() -> Outcome:
    return Outcome("completed", 0, True, stop_reason="epochs", accuracy=accuracy(0.75),
                   artifacts={"model": "model.pt", "classes": "classes.json"})


def test_a_report_built_from_the_phases_results_fits_the_schema(cfg, tmp_path):
    report = built(cfg, completed()).report
    validate(report)
    assert report["status"] == "completed" and report["error"] is None and report["finished_at"]
    assert report["resumed_from_epoch"] == 1 and report["resumed_from_step_in_epoch"] == 3
    assert report["data"]["sizes"] == {"train": 8, "dev": 2, "test": 2} and report["data"]["sample_shape"] == [1, 8, 8]
    assert report["throughput"]["measured_steps"] == 7 and report["throughput"]["measured_samples"] == 28
    assert report["accuracy"]["test_accuracy"] == 0.75 and report["stop_reason"] == "epochs"
    assert report["raw"]["step_time_ms"] and "raw" not in report["throughput"]
    # The phases' own warnings come after what the figures warn of, the profile's last.
    assert report["warnings"][-2:] == ["a phase's own warning",
                                       "profile is null: the run ended before step 9 (measure.profile.after)"]
    # The keys in the order the phases happen: the base, setup, training, figures, the end.
    keys = list(report)
    assert keys[:3] == ["schema_version", "status", "error"]
    assert keys.index("data") < keys.index("distributed") < keys.index("resumed_from_epoch") \
        < keys.index("stop_reason") < keys.index("artifacts") < keys.index("per_rank") < keys.index("threads") \
        < keys.index("compile") < keys.index("warnings") < keys.index("raw") < keys.index("profile")
    folder = RunFolder(tmp_path)
    folder.write_report(report)
    assert load_report(tmp_path) == load_report(tmp_path / "report.yaml") and load_report(tmp_path)["data"] \
        == report["data"]


def test_a_completed_report_without_its_test_accuracy_is_refused(cfg):
    outcome = completed()
    outcome.accuracy.pop("test_accuracy")
    with pytest.raises(ValueError, match="test_accuracy"):
        validate(built(cfg, outcome).report)


def test_a_failed_outcome_places_its_error_and_traceback_and_still_validates(cfg):
    outcome = Outcome("failed", 1, False, accuracy=accuracy(None), error="RuntimeError: boom",
                      traceback="Traceback (most recent call last): ...")
    report = built(cfg, outcome).report
    validate(report)
    assert report["status"] == "failed" and report["error"] == "RuntimeError: boom"
    assert report["traceback"].startswith("Traceback") and "artifacts" not in report and "stop_reason" not in report


def test_a_silent_ranks_blame_after_the_run_keeps_every_other_key(cfg, tmp_path):
    outcome = Outcome("failed", 1, False, accuracy=accuracy(None), error="RuntimeError: connection closed by peer",
                      traceback="Traceback ...")
    report = built(cfg, outcome).report
    report["rank_failures"] = [{"rank": 0, "error": "connection closed by peer"}]
    RunFolder(tmp_path).write_report(report)
    before = load_report(tmp_path)

    silent = [{"rank": 1, "pid": 4242, "fault": None}]
    blame_silent(tmp_path, silent, "error: rank 1 (pid 4242) ended without a note: it died without a word")
    after = load_report(tmp_path)
    assert after["status"] == "failed" and after["failed_rank"] == 1
    assert after["error"] == "rank 1 (pid 4242) ended without a note: it died without a word"
    assert after["rank_failures"] == [{"rank": 1, "error": "ended without a note"},
                                      {"rank": 0, "error": "connection closed by peer"}]
    blamed = {"status", "failed_rank", "error", "rank_failures"}
    assert {k: v for k, v in after.items() if k not in blamed} == {k: v for k, v in before.items() if k not in blamed}
    assert [k for k in after if k != "failed_rank"] == list(before)  # nothing moved, one key added


def test_a_completed_report_is_never_blamed_and_a_missing_one_is_left_alone(cfg, tmp_path):
    RunFolder(tmp_path).write_report(built(cfg, completed()).report)
    text = (tmp_path / "report.yaml").read_bytes()
    blame_silent(tmp_path, [{"rank": 1, "pid": 1, "fault": None}], "error: rank 1 ended without a note")
    assert (tmp_path / "report.yaml").read_bytes() == text
    blame_silent(tmp_path / "none", [{"rank": 1, "pid": 1, "fault": None}], "error: rank 1 ended without a note")
    assert not (tmp_path / "none").exists()
    with pytest.raises(BadInput):
        ReportBuilder.reopen(tmp_path / "none" / "report.yaml")


def test_the_blame_of_the_first_failed_rank_names_it_and_keeps_its_traceback(cfg):
    builder = built(cfg, Outcome("failed", 1, False, accuracy=accuracy(None), error="rank 0's own error"))
    builder.blame(2, "rank 2: ValueError: bad shard", [{"rank": 2, "error": "ValueError: bad shard"},
                                                        {"rank": 0, "error": "rank 0's own error"}],
                  traceback="Traceback (rank 2)")
    report = builder.report
    validate(report)
    assert (report["status"], report["failed_rank"], report["error"], report["traceback"]) == \
        ("failed", 2, "rank 2: ValueError: bad shard", "Traceback (rank 2)")
    assert [f["rank"] for f in report["rank_failures"]] == [2, 0]


def test_a_write_that_fails_leaves_the_old_report_whole(cfg, tmp_path, monkeypatch):
    folder = RunFolder(tmp_path)
    folder.write_report(built(cfg, completed()).report)
    old = (tmp_path / "report.yaml").read_bytes()

    newer = built(cfg, completed()).report
    newer["name"] = "the newer run"

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)  # the bytes are written, the rename fails
    from harness.files.atomic import DiskFull

    with pytest.raises(DiskFull):
        folder.write_report(newer)
    monkeypatch.undo()
    assert (tmp_path / "report.yaml").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.yaml"]  # no temporary file left

    broken = dict(newer, status="no such status")  # refused by the schema before the disk is touched
    with pytest.raises(ValueError):
        folder.write_report(broken)
    assert (tmp_path / "report.yaml").read_bytes() == old


def test_a_folder_held_for_a_run_discards_what_it_wrote_when_stopped(tmp_path):
    target = tmp_path / "new" / "run"
    with pytest.raises(KeyboardInterrupt):
        with RunFolder(target, discard_on_error=True) as folder:
            folder.claim(overwrite=False, resumable=False)
            folder.write_config({"name": "x"})
            assert (target / "config.yaml").is_file()
            raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()

    with RunFolder(target) as folder:  # a run's: what it wrote stays, the lock goes
        folder.claim(overwrite=False)
        folder.write_config({"name": "x"})
    assert sorted(p.name for p in target.iterdir()) == ["config.yaml"]
    with pytest.raises(BadInput, match="holds an earlier run"):
        with RunFolder(target) as folder:
            folder.claim(overwrite=False)
    assert Path(target / "config.yaml").is_file()
