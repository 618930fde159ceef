"""``sweep.yaml``: the sweep's one file, written by its sweep alone and read back on ``--resume``.

The spec as written, then one row per cell. It is rewritten atomically after every change,
so a killed sweep leaves the last one whole.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from harness.config import strict_yaml
from harness.files import safe_yaml
from harness.files.atomic import write_text_atomic
from harness.files.clock import now
from harness.errors import BadInput
from harness.report.io import dump

if TYPE_CHECKING:
    from harness.sweep.spec import SweepSpec

SCHEMA_VERSION = 1


def write_sweep(out: Path, spec: SweepSpec, rows: list[dict], started_at: str) -> None:
    body = {
        "schema_version": SCHEMA_VERSION,
        "name": spec.name,
        "sweep": {"file": str(spec.source), **spec.raw},
        "started_at": started_at,
        "updated_at": now(),
        "cells": rows,
    }
    write_text_atomic(out / "sweep.yaml", dump(body))


def read_rows(out: Path) -> dict[str, dict]:
    """The rows of the folder's sweep.yaml by cell id; BadInput (one line) for anything else.

    The file is the harness's own but may have been edited or replaced: it is read with a cap
    on the bytes read (a device or a symlink to one is refused) and a nesting cap, and each
    row's id and job id are checked before either is used as a key or passed to Slurm.
    """
    path = out / "sweep.yaml"
    if not path.exists() and not path.is_symlink():
        return {}
    # The reader of every file a harness command wrote: no aliases, size and depth capped, and
    # plain scalars resolved as the writer (yaml.safe_dump, YAML 1.1) meant them: under the
    # config reader's 1.2 floats a config hash of hex digits such as ``1234e5678901234`` would
    # read back as a number (inf), and its completed cell would run again. The depth cap is
    # the config's: the spec as written is the deepest thing the file holds.
    data = safe_yaml.loads(safe_yaml.read_text(path, "sweep"), path, "sweep", max_depth=strict_yaml.MAX_DEPTH)
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise BadInput(f"{path}: not a sweep this harness reads (schema_version {SCHEMA_VERSION})")
    cells = data.get("cells") or []
    if not isinstance(cells, list):
        raise BadInput(f"{path}: cells: expected a list of rows, got {type(cells).__name__}")
    rows = {}
    for i, row in enumerate(cells):
        if not isinstance(row, dict):
            raise BadInput(f"{path}: cells[{i}]: expected a row (a mapping), got {type(row).__name__}")
        _check_row(path, i, row)
        rows[row["id"]] = row
    return rows


_JOB_ID = re.compile(r"\d+(_\d+)?")


def _check_row(path: Path, i: int, row: dict) -> None:
    if not isinstance(row.get("id"), str) or not row["id"]:
        raise BadInput(f"{path}: cells[{i}].id: expected a cell id (a string), got {type(row.get('id')).__name__}")
    job = row.get("job_id")
    if job is not None and not (isinstance(job, (str, int)) and not isinstance(job, bool)
                                and _JOB_ID.fullmatch(str(job))):
        raise BadInput(f"{path}: cells[{i}].job_id: expected a Slurm job id (123 or 123_4), "
                       f"got {type(job).__name__} {str(job)[:40]!r}")
