"""metrics.jsonl: the run's time series, one JSON object per line, always written.

Each line is appended and flushed as soon as it is known, so a run killed with
SIGKILL keeps every line it wrote (at worst a torn last line, which readers and
``continue_from`` drop). ``--resume`` continues the stream: the lines past the
checkpoint it resumes from are dropped (the run repeats those steps), the file is
rewritten atomically, and the new lines are appended, so steps never repeat and
never skip.

Reads JSON only: ``harness report`` imports this without torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

FILE = "metrics.jsonl"
KINDS = ("interval", "epoch", "end")


def _clean(value):
    """JSON has no NaN or infinity: a non-finite figure is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read(path: str | Path) -> list[dict]:
    """Every whole line of ``path`` (a torn or unparsable line, as a kill leaves, is skipped)."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE
    rows = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("kind") in KINDS:
            rows.append(row)
    return rows


def _kept(row: dict, steps_done: int, epochs_done: int) -> bool:
    if row["kind"] == "end":
        return False  # the resumed run writes its own end
    if row["kind"] == "epoch":
        return row.get("epoch", 0) <= epochs_done
    return row.get("step", 0) <= steps_done


def continue_from(output: Path, steps_done: int, epochs_done: int) -> None:
    """Keep the lines a resume from (``steps_done``, ``epochs_done``) does not redo; atomically."""
    from harness.atomic import write_text_atomic

    path = output / FILE
    if not path.exists():
        return
    rows = [r for r in read(path) if _kept(r, steps_done, epochs_done)]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


class MetricStream:
    """Appends lines to ``output/metrics.jsonl``; ``fresh`` starts the file anew."""

    def __init__(self, output: Path, fresh: bool):
        self.path = output / FILE
        output.mkdir(parents=True, exist_ok=True)
        # Line-buffered append: each write reaches the OS at its newline, which is all a
        # SIGKILL needs (the kernel keeps the page); fsync would only guard a power cut.
        self._file = open(self.path, "w" if fresh else "a", buffering=1)
        self.error: str | None = None
        """Why lines stopped being written (a full disk): the run goes on, its report warns."""

    def write(self, row: dict) -> None:
        if self.error is not None:
            return
        try:
            self._file.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        except OSError as err:  # the stream is a by-product: losing it must not lose the run
            self.error = f"{self.path}: {err.strerror or err}"

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as err:
            self.error = self.error or f"{self.path}: {err.strerror or err}"
