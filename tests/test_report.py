"""report.yaml: atomic writes and a strict reader."""

from __future__ import annotations

import pytest
import yaml

from harness.atomic import write_atomic
from harness.errors import BadInput
from harness.report import SCHEMA_VERSION, load_report, write_report


def minimal():
    return {"schema_version": SCHEMA_VERSION, "status": "completed", "config": {}, "environment": {},
            "accuracy": {}, "timing": {}, "throughput": {"train_samples_per_s": float("nan")}}


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
