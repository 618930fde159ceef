"""What a run folder holds, and what a failed command said: for asserting that nothing changed."""

from __future__ import annotations

import shutil
from pathlib import Path


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes: "intact" means equal snapshots."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def copy_of(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst
