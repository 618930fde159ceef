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

from harness.errors import BadInput
from harness.config.typecheck import short

FILE = "metrics.jsonl"
KINDS = ("interval", "epoch", "end")


def _clean(value):
    """JSON has no NaN or infinity: a non-finite figure is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _whole_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _problem(row) -> str | None:
    """Why a parsed line is not one the writer could have written; None when it is."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {short(row)}"
    if row.get("kind") not in KINDS:
        return None  # a kind of line this version does not know: left out, not an error
    axes = ("step", "epoch") if row["kind"] == "epoch" else ("step",)
    for axis in axes:
        if not _whole_number(row.get(axis)):
            return f"{axis} is {short(row.get(axis))}, expected a whole number"
    for key, value in row.items():
        if key not in ("kind", "status") and value is not None \
                and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{key} is {short(value)}, expected a number or null"
    return None


def parse(path: str | Path) -> tuple[list[dict], list[tuple[int, str]]]:
    """The lines of ``path`` (a folder: its metrics.jsonl) as rows, and (line number, why)
    for each line that is not one the writer writes (hand-edited, damaged).

    A last line without its newline is what a kill or a full disk leaves mid-write: it
    is kept when whole and dropped silently when torn. A missing file has no lines; one
    that cannot be read at all is BadInput.
    """
    path = Path(path)
    if path.is_dir():
        path = path / FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], []
    except OSError as err:
        raise BadInput(f"{path}: cannot read the metric stream ({err.strerror or err.__class__.__name__})") from None
    lines = data.split(b"\n")
    last = lines.pop()  # b"" after a final newline, else the last line, perhaps torn
    rows, problems = [], []
    for number, raw in enumerate(lines + [last], 1):
        if not raw.strip():
            continue
        torn = number == len(lines) + 1
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            why = "not UTF-8 text"
        except ValueError:
            why = "not a JSON line"
        else:
            why = _problem(row)
            if why is None:
                if row.get("kind") in KINDS:
                    rows.append(row)
                continue
        if not torn:
            problems.append((number, why))
    return rows, problems


def read(path: str | Path) -> list[dict]:
    """Every well-formed line of ``path``; the others are left out (``parse`` says which)."""
    return parse(path)[0]


def check(output: Path) -> None:
    """BadInput naming the first bad line of ``output``'s stream, which a resume rewrites."""
    problems = parse(output)[1]
    if problems:
        number, why = problems[0]
        more = f" (and {len(problems) - 1} more such lines)" if len(problems) > 1 else ""
        raise BadInput(f"{output / FILE} line {number}: {why}{more}; --resume rewrites the stream up to "
                       "its checkpoint and will not guess what the line meant: correct or delete it")


def _kept(row: dict, steps_done: int, epochs_done: int) -> bool:
    if row["kind"] == "end":
        return False  # the resumed run writes its own end
    if row["kind"] == "epoch":
        return row.get("epoch", 0) <= epochs_done
    return row.get("step", 0) <= steps_done


def continue_from(output: Path, steps_done: int, epochs_done: int) -> None:
    """Keep the lines a resume from (``steps_done``, ``epochs_done``) does not redo; atomically."""
    from harness.files.atomic import write_text_atomic

    path = output / FILE
    if not path.exists():
        return
    check(output)  # resume.plan checked it before anything was written; a file changed since is still refused
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
