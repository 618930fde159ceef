"""report.yaml: its schema, atomic writes and a strict reader."""

from __future__ import annotations

import pytest
import yaml

from harness.atomic import write_atomic
from harness.errors import BadInput
from harness.report import SCHEMA_VERSION, load_report, validate, write_report
from synthetic_reports import make_report


def minimal():
    """The least a completed report holds: the required keys and a key per guarded figure."""
    return {"schema_version": SCHEMA_VERSION, "status": "completed", "config_hash": "0123", "config": {},
            "environment": {}, "accuracy": {"test_accuracy": None, "time_to_target_s": None}, "timing": {},
            "throughput": {"train_samples_per_s": float("nan")}, "step_time_ms": None,
            "memory": {"peak_rss_mb": None}}


def test_round_trip_and_nan_becomes_null(tmp_path):
    path = write_report(tmp_path / "report.yaml", minimal())
    data = load_report(path)
    assert data["throughput"]["train_samples_per_s"] is None
    assert load_report(tmp_path)["status"] == "completed"  # a folder means its report.yaml


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "report.yaml"
    write_report(path, minimal())
    before = path.read_text()

    def explode(f):
        f.write("schema_version: 1\nstatus: compl")  # a torn half of a report
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomic(path, explode)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["report.yaml"], "no temporary file left behind"


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r.update(schema_version=99), "unknown report schema_version 99"),
    (lambda r: r.pop("throughput"), "lacks the key 'throughput'"),
    (lambda r: r.pop("schema_version"), "not a report"),
    (lambda r: r.update(status="exploded"), "status 'exploded'"),
])
def test_reader_refuses_what_it_does_not_know(tmp_path, mutate, match):
    report = minimal()
    mutate(report)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(report))
    with pytest.raises(BadInput, match=match):
        load_report(path)


def test_reader_refuses_non_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("{{{")
    with pytest.raises(BadInput, match="malformed YAML"):
        load_report(path)


@pytest.mark.parametrize("key", ["schema_version", "status", "config_hash", "config", "environment",
                                 "accuracy", "timing", "throughput"])
def test_a_fixture_missing_a_required_key_fails_validation(tmp_path, key):
    report = make_report()
    report.pop(key)
    with pytest.raises(ValueError, match=key):
        validate(report)
    with pytest.raises(ValueError, match=key):
        write_report(tmp_path / "report.yaml", report)
    assert not (tmp_path / "report.yaml").exists()


@pytest.mark.parametrize("dotted, value, expected", [
    ("throughput.samples_per_s", "fast", "a number or null"),
    ("distributed", 5, "a mapping"),
    ("config_hash", ["a"], "a string"),
    ("repeats.samples_per_s", [1.0, "x"], "a number or null"),
    ("memory.peak_rss_mb", True, "a number or null"),
    ("status", "exploded", "one of completed"),
    ("environment.comparability.cpu_count", 2.5, "an integer or null"),
])
def test_wrong_types_name_the_key(dotted, value, expected):
    report = make_report()
    *parents, last = dotted.split(".")
    node = report
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    with pytest.raises(ValueError, match=f"{dotted.replace('.', '[.]')}.*: expected {expected}"):
        validate(report)


def test_blocks_are_open_to_new_keys():
    report = make_report()
    report["memory"]["peak_pss_mb"] = 12.0  # a newer writer's key: read, not refused
    report["timing"]["wall_clock"] = {"anything": 1}
    validate(report)
