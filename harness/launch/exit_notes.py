"""How a launch learns which rank failed first, and why: each rank's exit note.

The launchers (accelerate's, torchrun) end with their own status, 1, whatever a
rank exited with. ``harness launch`` hands each rank a folder in ``EXIT_DIR_ENV``;
a rank notes its start there (``note_start``) and its exit status and one-line
error as it exits (``note_exit``), and the launch ends with the status of the rank
that failed first: 2 for bad input, 3 for a diverged loss, 128+N for a signal, as
`harness run` alone would. A rank that started but left no exit note died silently
(a segfault, the OOM killer, a hang the launcher ended); ``silent_message`` names it,
and ``blame_silent`` puts that blame into the run's report.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path

from harness.errors import BadInput

EXIT_DIR_ENV = "HARNESS_EXIT_DIR"

_FAULT_FILE = None  # kept open for faulthandler for the life of the process


def note_start() -> None:
    """Called by ``harness run`` as it starts: a rank that later ends without an exit note
    (os._exit, a segfault, the OOM killer, or a hang the launcher ended) is then known
    by name; a fatal signal's Python traceback goes to ``rank{N}.fault``."""
    global _FAULT_FILE
    folder = os.environ.get(EXIT_DIR_ENV)
    if not folder:
        return
    import faulthandler

    rank = int(os.environ.get("RANK", "0"))
    try:
        Path(folder, f"rank{rank}.start.json").write_text(
            json.dumps({"rank": rank, "pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}))
        _FAULT_FILE = open(Path(folder, f"rank{rank}.fault"), "w")
        faulthandler.enable(file=_FAULT_FILE)
    except OSError:
        pass


def silent_ranks(folder: Path) -> list[dict]:
    """Ranks that started but never noted an exit, each with its fatal error if Python saw one."""
    out = []
    for start in sorted(folder.glob("rank*.start.json")):
        try:
            record = json.loads(start.read_text())
        except (OSError, ValueError):
            continue
        rank = record["rank"]
        if (folder / f"rank{rank}.json").exists():
            continue
        fault = (folder / f"rank{rank}.fault")
        text = fault.read_text(errors="replace").strip() if fault.is_file() else ""
        record["fault"] = text.splitlines()[0] if text else None
        out.append(record)
    return out


PEER_ERRORS = ("connection", "peer", "timed out", "timeout", "broken pipe", "gloo", "nccl")


def caused_by_a_peer(first: dict) -> bool:
    """Whether the first noted failure reads as another rank's doing (a closed connection, a
    collective that timed out), not its own (bad input, a divergence, a signal, its exception)."""
    message = (first.get("message") or "").lower()
    return first.get("code") == 1 and (not message or any(word in message for word in PEER_ERRORS))


def silent_message(silent: list[dict], first: dict | None) -> str:
    r = silent[0]
    how = f", {r['status']}" if r.get("status") else ""
    noticed = (first or {}).get("message") or ""
    if r["fault"] is None and ("timed out" in noticed.lower() or "timeout" in noticed.lower()):
        after = noticed.removeprefix("error: ")
        return (f"error: rank {r['rank']} (pid {r['pid']}{how}) stopped advancing: rank {first['rank']} timed out "
                f"waiting for it (runtime.collective_timeout_s) and the launcher then stopped it; "
                f"rank {first['rank']}: {after}")
    cause = r["fault"] or ("it died without a word (a signal such as the OOM killer's SIGKILL, or os._exit), "
                           "or it hung and the launcher stopped it")
    text = f"error: rank {r['rank']} (pid {r['pid']}{how}) ended without a note: {cause}"
    if first is not None and first.get("message"):
        after = first["message"].removeprefix("error: ")
        text += f"; then rank {first['rank']} failed: {after}"
    return text


def blame_silent(output: Path | None, silent: list[dict], message: str) -> None:
    """Rank 0's report blamed itself ("connection closed", a receive timeout): name the silent rank.

    The blame goes in through the report's builder and its one writer (validated,
    atomic): a report that cannot be read is left as it is.
    """
    from harness.report.io import write_report
    from harness.run.report_builder import ReportBuilder

    if output is None:
        return
    path = output / "report.yaml"
    try:
        builder = ReportBuilder.reopen(path)
    except BadInput:
        return
    if builder.report.get("status") == "completed":
        return
    failures = [{"rank": s["rank"], "error": s["fault"] or "ended without a note"} for s in silent]
    builder.blame(silent[0]["rank"], message.removeprefix("error: "),
                  failures + list(builder.report.get("rank_failures") or []))
    write_report(path, builder.report)


def note_exit(code: int, message: str | None = None) -> None:
    """Called by ``harness run`` as it exits: record this rank's status for ``harness launch``."""
    folder = os.environ.get(EXIT_DIR_ENV)
    if not folder:
        return
    rank = int(os.environ.get("RANK", "0"))
    record = {"rank": rank, "code": code, "message": message, "time": time.time()}
    try:
        Path(folder, f"rank{rank}.json").write_text(json.dumps(record))
    except OSError:
        pass  # the launch is gone or its folder with it; the exit status still stands


def first_failure(folder: Path) -> dict | None:
    """The record of the rank that failed first (the cause; the others were stopped after)."""
    records = []
    for path in folder.glob("rank*.json"):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    failed = [r for r in records if r.get("code")]
    return min(failed, key=lambda r: r["time"]) if failed else None


def exit_status_in(launcher_stderr: str, pid: int) -> str | None:
    """A worker's exit code or signal from torchrun's failure summary ("exitcode : -9 (pid: N)")."""
    m = re.search(rf"exitcode\s*:\s*(-?\d+)\s*\(pid:\s*{pid}\)", launcher_stderr)
    if m is None:
        return None
    code = int(m.group(1))
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
