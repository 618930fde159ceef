"""report.yaml: write it atomically, read it back strictly.

Every key that holds a quantity carries its unit in its name (``_s``, ``_ms``,
``_mb``, ``samples_per_s``). docs/report.md documents each key.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from harness.atomic import write_text_atomic
from harness.errors import BadInput

SCHEMA_VERSION = 2
REQUIRED_KEYS = ("schema_version", "status", "config", "environment", "accuracy", "timing", "throughput")
STATUSES = ("completed", "failed", "interrupted", "diverged", "running")


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
    return write_text_atomic(path, dump(report))


def load_report(path: str | Path) -> dict:
    """Read a report, refusing anything that is not one this version understands."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{path}: no such report") from None
    except yaml.YAMLError:
        raise BadInput(f"{path}: not a report (malformed YAML)") from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise BadInput(f"{path}: not a report (no schema_version)")
    if data["schema_version"] != SCHEMA_VERSION:
        raise BadInput(
            f"{path}: unknown report schema_version {data['schema_version']!r} "
            f"(this harness reads {SCHEMA_VERSION})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise BadInput(f"{path}: report lacks the key {missing[0]!r}")
    if data["status"] not in STATUSES:
        raise BadInput(f"{path}: status {data['status']!r} is not one of {', '.join(STATUSES)}")
    return data
