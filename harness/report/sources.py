"""Which reports a path stands for: a report.yaml, a sweep.yaml or a folder of reports.

What ``harness compare`` and ``harness report`` read. A sweep file is any file with a
top-level ``cells:`` list naming each cell's ``report``; a cell without one is still a
cell (``Loaded.report`` None). A folder is every report.yaml below it, less the
whole-run repeats a combined report holds.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BadInput
from harness.report.io import checked, load_report, read_yaml_of


@dataclass
class Loaded:
    path: Path
    report: dict | None
    """None for a sweep cell that wrote no report (it failed before, or never ran)."""
    stub: str = ""
    """What the sweep says of a cell without a report."""


def _load_sweep(path: Path, data: dict) -> list[Loaded]:
    cells = data["cells"]
    out = []
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise BadInput(f"{path}: cells[{i}]: expected a mapping, got {type(cell).__name__}")
        report = cell.get("report")
        if report is None:
            # A cell that failed before writing anything, or never ran: still a cell.
            what = f"sweep cell {cell.get('id', i)}: {cell.get('status', 'no status')}"
            error = cell.get("error")
            out.append(Loaded(path, None, f"{what}: {error}" if error else what))
            continue
        if not isinstance(report, str):
            raise BadInput(f"{path}: cells[{i}].report: expected a path, got {type(report).__name__}")
        out.append(_load_one(path.parent / report))
    return out


def _load_one(path: Path) -> Loaded:
    report = load_report(path, raw=False)  # the per-step lists: no verdict reads them
    return Loaded(path / "report.yaml" if path.is_dir() else path, report)


_REPEAT = re.compile(r"repeat_\d+")


def _walk(folder: Path) -> list[Path]:
    """Every report.yaml below ``folder``. A symlinked folder is followed (a folder of links
    to run folders is how runs get gathered), but each real folder is entered once, so a
    link to an ancestor ends the walk there instead of looping."""
    found, seen = [], set()
    for here, dirs, files in os.walk(folder, followlinks=True, onerror=None):
        try:
            st = os.stat(here)
        except OSError:  # gone or unreadable since it was listed
            dirs.clear()
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs.clear()
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        if "report.yaml" in files:
            found.append(Path(here) / "report.yaml")
    return found


def _found_in(folder: Path) -> list[Path]:
    """report.yaml files below ``folder``, less the whole-run repeats a combined report holds."""
    found = sorted(_walk(folder))
    kept = set(found)
    return [p for p in found
            if not (_REPEAT.fullmatch(p.parent.name) and p.parent.parent / "report.yaml" in kept)]


def collect(path: str | Path) -> list[Loaded]:
    """Every report a report file, sweep file or folder stands for."""
    path = Path(path)
    if path.is_dir():
        found = _found_in(path)
        if not found:
            raise BadInput(f"{path}: no report.yaml below this folder")
        return [_load_one(p) for p in found]
    if not path.exists():
        raise BadInput(f"{path}: no such report, sweep or folder")
    data = read_yaml_of(path, raw=False, what="report or sweep")
    if isinstance(data, dict) and isinstance(data.get("cells"), list) and "config_hash" not in data:
        return _load_sweep(path, data)
    return [Loaded(path, checked(data, path))]
