"""report.yaml on disk: written atomically after validation, read back strictly.

Every reader of a report.yaml goes through ``load_report``: it refuses anything that
is not a report this version reads, with one line naming the file (BadInput).
"""

import math
import re
from pathlib import Path

import yaml

from harness.errors import BadInput
from harness.files.atomic import write_text_atomic
from harness.files.safe_yaml import loads, read_text
from harness.config.typecheck import short
from harness.report.schema import STATUSES, validate

def _plain(value):
    """YAML-safe values: tuples to lists, NaN/inf to null (YAML readers disagree on them)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str) and type(value) is not str:  # e.g. torch.__version__
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _plain(value.item())
    return value


def dump(report: dict) -> str:
    return yaml.safe_dump(_plain(report), sort_keys=False, default_flow_style=None, width=100)


def write_report(path: str | Path, report: dict) -> Path:
    """Validate, then write atomically. A report that does not fit the schema is a bug here."""
    plain = _plain(report)
    validate(plain)
    return write_text_atomic(path, dump(plain))


_RAW_BLOCK = re.compile(r"^raw:[^\n]*(?:\n(?:[ \t#][^\n]*)?)*\n?", re.M)
"""The top-level ``raw:`` block as ``dump`` lays it out: its key at column 0, every line
below it indented (a hand-made layout that differs is simply read whole)."""


def read_yaml_of(path: str | Path, raw: bool = True, what: str = "report"):
    """The YAML of a report file (a folder: its report.yaml), not yet checked to be one.

    ``raw=False`` drops the ``raw`` lists unread: two figures per measured step, they
    are nearly all of a long run's report (a 60 MB report is 99.99% ``raw``), and only
    the benchmarks read them; compare, ``harness report``, evaluate and resume do not.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "report.yaml"
    text = read_text(path, what)
    return loads(text if raw else _RAW_BLOCK.sub("", text), path, what)


def checked(data, path: str | Path) -> dict:
    """``data`` (a report file's YAML) when it is a report this version reads; else BadInput."""
    if not isinstance(data, dict):
        raise BadInput(f"{path}: not a report (expected a mapping of report keys, got {type(data).__name__})")
    if "schema_version" not in data:
        raise BadInput(f"{path}: not a report (no schema_version)")
    if "status" in data and data["status"] not in STATUSES:
        raise BadInput(f"{path}: status {short(data['status'])} is not one of {', '.join(STATUSES)}")
    try:
        validate(data)
    except ValueError as err:
        key, _, why = str(err).partition(": ")
        if why.startswith("required key missing"):
            raise BadInput(f"{path}: report lacks the key {key!r}") from None
        if why.startswith("report lacks the metric"):
            raise BadInput(f"{path}: report lacks the metric {key}") from None
        if key == "schema_version":
            raise BadInput(f"{path}: {why}") from None
        raise BadInput(f"{path}: {err}") from None
    return data


def load_report(path: str | Path, raw: bool = True) -> dict:
    """Read a report, refusing anything that is not one this version understands (BadInput)."""
    path = Path(path)
    return checked(read_yaml_of(path, raw), path / "report.yaml" if path.is_dir() else path)
