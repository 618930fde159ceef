"""report.yaml: its schema, atomic writes and a strict reader."""

from __future__ import annotations

import re
import sys

import pytest
import yaml

from harness.observe import metrics_stream
from harness.files.atomic import write_atomic
from harness.errors import BadInput
from harness.report.schema import SCHEMA_VERSION, validate
from harness.report.io import dump, load_report, write_report
from support.reports import make_report, write


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
    (lambda r: r.update(schema_version=1), "schema_version 1 .* is no longer read; this harness reads 2"),
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


# --------------------------------------------------------------------------- reading back what the harness wrote

def _nested(depth: int) -> str:
    return "schema_version: 2\nx: " + "[" * depth + "]" * depth + "\n"


@pytest.mark.parametrize("depth", [73, 5000])  # 73: the composer's own cap; 5000: past libyaml's 1000
def test_a_deeply_nested_report_is_refused_in_one_line(tmp_path, depth):
    path = tmp_path / "report.yaml"
    path.write_text(_nested(depth))
    for raw in (True, False):
        with pytest.raises(BadInput, match=r"report.yaml: not a report \(nested more than 72 levels deep at line 2"):
            load_report(path, raw=raw)


def test_a_report_holds_the_deepest_config_the_config_reader_takes(tmp_path):
    from harness.config import strict_yaml

    def config(levels: int) -> dict:
        deep: dict = {}
        for _ in range(levels):
            deep = {"k": deep}
        return {"model": {"kwargs": deep}}

    levels = 1
    while True:  # the deepest model.kwargs a config file may hold
        try:
            strict_yaml.loads(yaml.safe_dump(config(levels + 1)))
        except BadInput:
            break
        levels += 1
    report = make_report()
    report["config"] = config(levels)
    assert load_report(write(tmp_path, "r", report))["config"] == config(levels)


def test_the_caps_hold_without_libyaml(tmp_path, monkeypatch):
    """PyYAML built without libyaml: the pure-Python parser feeds the same composer."""
    import importlib

    from harness.files import safe_yaml

    monkeypatch.setitem(sys.modules, "yaml.cyaml", None)  # `from yaml.cyaml import ...` now fails
    pure = importlib.reload(safe_yaml)
    try:
        assert pure._Parser.__module__ == "harness.files.safe_yaml"
        for text, match in ((_nested(5000), "nested more than 72"), ("a: &x [1]\nb: *x\n", "alias")):
            with pytest.raises(BadInput, match=match):
                pure.loads(text, "r.yaml")
        assert pure.loads(dump(make_report()), "r.yaml")["status"] == "completed"
    finally:
        monkeypatch.undo()
        importlib.reload(safe_yaml)
    assert safe_yaml._Parser.__module__ != "harness.files.safe_yaml", "libyaml's parser is back"


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    """A writer never repeats a key; PyYAML would keep the last one silently."""
    from harness.files import safe_yaml

    with pytest.raises(BadInput, match=r"sweep.yaml: not a sweep \(the key 'status' is given twice at line 3\)"):
        safe_yaml.loads("cells:\n- status: failed\n  status: completed\n", "sweep.yaml", "sweep")
    assert safe_yaml.loads("a: {status: 1}\nb: {status: 2}\n", "r.yaml") == {"a": {"status": 1}, "b": {"status": 2}}


def test_a_report_that_is_a_list_is_named(tmp_path):
    path = tmp_path / "report.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(BadInput, match="expected a mapping of report keys, got list"):
        load_report(path)


def test_only_regular_files_are_read_and_a_fifo_does_not_block(tmp_path):
    import os
    import threading

    from harness.files.safe_yaml import read_text

    fifo = tmp_path / "report.yaml"
    os.mkfifo(fifo)
    errors = []
    reader = threading.Thread(target=lambda: errors.append(pytest.raises(BadInput, read_text, fifo)), daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert "not a regular file" in str(errors[0].value)
    big = tmp_path / "big.yaml"
    big.write_text("x: 1\n" * 100)
    with pytest.raises(BadInput, match="larger than"):
        read_text(big, max_bytes=64)


def test_raw_false_reads_every_key_but_the_raw_lists(tmp_path):
    path = write(tmp_path, "r", make_report(step_times_ms=[10.0, 11.0, 12.0]))
    full, lean = load_report(path), load_report(path, raw=False)
    assert full.pop("raw") == {"step_time_ms": [10.0, 11.0, 12.0]} and "raw" not in lean
    assert lean == full


def test_raw_false_never_parses_the_raw_block(tmp_path):
    """What keeps compare fast on a long run's report (nearly all of it is the raw lists),
    shown without timing: a raw block the strict read refuses is not even looked at."""
    report = make_report()
    report["raw"] = {"step_time_ms": [1.0]}
    report["memory"] = {"peak_rss_mb": 800.0}  # a key after raw survives the cut
    text = dump(report).replace("step_time_ms: [1.0]", "step_time_ms: " + "[" * 100 + "]" * 100)
    path = tmp_path / "report.yaml"
    path.write_text(text)
    with pytest.raises(BadInput, match="nested more than"):
        load_report(path)
    lean = load_report(path, raw=False)
    assert "raw" not in lean and lean["memory"] == {"peak_rss_mb": 800.0}


def test_a_hand_made_flow_layout_is_read_whole(tmp_path):
    report = make_report(step_times_ms=[10.0, 11.0])
    path = tmp_path / "report.yaml"
    path.write_text(yaml.safe_dump(report, default_flow_style=True))  # `raw:` not at the start of a line
    assert load_report(path, raw=False) == load_report(path)


def test_resume_goes_by_the_checkpoint_when_the_report_is_not_one(tmp_path, capsys):
    from harness.run import resume

    (tmp_path / "report.yaml").write_text(_nested(5000))
    assert resume._read_report(tmp_path) == {}
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning:" in err and "nested more than 72" in err
    assert resume._read_report(tmp_path / "nothing-here") == {}


@pytest.mark.parametrize("scheduler, hint", [
    ("cosine", "cosine spans the epochs, so this run cannot train on"),  # the default recipe's
    ("none", "ask for more with train.epochs=N"),
])
def test_the_hint_after_a_completed_run_is_one_the_resume_would_take(tmp_path, scheduler, hint):
    from harness.run import resume

    report = make_report()
    report["config"].update({"train": {"epochs": 2}, "optim": {"scheduler": {"name": scheduler}}})
    write_report(tmp_path / "report.yaml", report)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(report["config"]))
    done = resume.plan(tmp_path, report["config"]).done
    assert "already completed (2 epochs)" in done and hint in done
    more = {**report["config"], "train": {"epochs": 4}}
    refused = resume.recipe_changes(report["config"], more, 2)
    # The hint offers more epochs exactly where recipe_changes lets them through.
    assert bool(refused) == ("cannot train on" in done)


# --------------------------------------------------------------------------- metrics.jsonl, hand-edited

def _stream(folder, lines: list[bytes]):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / metrics_stream.FILE).write_bytes(b"".join(lines))
    return folder


GOOD = [b'{"kind": "interval", "step": 2, "train_loss": 1.5, "samples_per_s": 10.0}\n',
        b'{"kind": "interval", "step": 4, "train_loss": 1.2, "samples_per_s": 11.0}\n',
        b'{"kind": "epoch", "step": 4, "epoch": 1, "dev_accuracy": 0.5}\n']


@pytest.mark.parametrize("line, why", [
    (b'{"kind": "interval", "step": "abc"}\n', "step is 'abc', expected a whole number"),
    (b'{"kind": "interval", "step": true}\n', "step is True"),
    (b'{"kind": "epoch", "step": 4, "epoch": [1]}\n', "epoch is [1]"),
    (b'{"kind": "interval", "step": 3, "train_loss": "low"}\n', "train_loss is 'low', expected a number"),
    (b'{"kind": "interval", "step": 3\xff}\n', "not UTF-8 text"),
    (b'{"kind": "interval", "st\n', "not a JSON line"),
    (b'[1, 2]\n', "expected a JSON object"),
])
def test_a_bad_line_is_named_by_its_number(tmp_path, line, why):
    folder = _stream(tmp_path, [GOOD[0], line, *GOOD[1:]])
    rows, problems = metrics_stream.parse(folder)
    assert [r["step"] for r in rows] == [2, 4, 4]
    assert len(problems) == 1 and problems[0][0] == 2 and why in problems[0][1]
    with pytest.raises(BadInput, match=f"metrics.jsonl line 2: .*{re.escape(why)}"):
        metrics_stream.check(folder)
    before = (folder / metrics_stream.FILE).read_bytes()
    with pytest.raises(BadInput):
        metrics_stream.continue_from(folder, steps_done=2, epochs_done=0)
    assert (folder / metrics_stream.FILE).read_bytes() == before, "a refused resume rewrote the stream"


def test_a_torn_last_line_and_an_unknown_kind_are_no_problem(tmp_path):
    folder = _stream(tmp_path, [*GOOD, b'{"kind": "newer", "step": "x"}\n', b'{"kind": "interval", "st\xe2'])
    rows, problems = metrics_stream.parse(folder)
    assert len(rows) == 3 and problems == []
    metrics_stream.check(folder)


def test_report_curves_leave_a_bad_line_out_with_one_warning(tmp_path, capsys):
    from harness.hwreport import curves

    bad = _stream(tmp_path / "bad", [GOOD[0], b'{"kind": "interval", "step": "abc"}\n', b"\xff\xfe\n", *GOOD[1:]])
    good = _stream(tmp_path / "good", GOOD)
    runs = curves.load([bad, good])
    assert [len(r.rows) for r in runs] == [3, 3]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"{bad / metrics_stream.FILE} line 2" in err[0] and "(and 1 more)" in err[0]
    md, _ = curves.embed([bad, good], tmp_path / "out", plot=False)
    assert "| bad | 4 | 1.2000 |" in md
