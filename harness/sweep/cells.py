"""What both executors of a sweep (local processes, Slurm jobs) share: a cell's command,
its report and the figures its row copies, a pending row, the sweep's folder held for
one sweep, and the run that a signal stops with a hint to resume."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import BadInput
from harness.files.lock import RunLock
from harness.report.figures import figures as report_figures
from harness.report.io import load_report
from harness.sweep.table import summary_table

if TYPE_CHECKING:  # sweep_config builds configs, which imports torch: only the commands need it
    from harness.sweep.spec import Cell, SweepSpec


def last_line(text: str) -> str | None:
    """The last non-blank line: where a traceback or a scheduler's refusal says what went wrong."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else None


def cell_command(spec: SweepSpec, overrides: list[str], cell_dir: Path, launch=None,
                 python: str = sys.executable, config_file: Path | None = None) -> list[str]:
    """``harness run`` for a one-process cell, ``harness launch`` for a cell with ``launch.*`` axes;
    ``config_file`` is the cell's own config (its ``config`` key) in place of the base's."""
    config_file = config_file or spec.base_config
    config = [str(config_file)] if config_file is not None else []
    if launch is None or launch.mode is None:
        head = ["run"]
    else:
        head = ["launch", "--mode", launch.mode, "--nproc", str(launch.nproc)]
        if launch.nnodes > 1:  # the job on each node adds its --node-rank and the main address
            head += ["--nnodes", str(launch.nnodes)]
    # The cell's folder is the sweep's: a new attempt replaces what an earlier one left.
    return [python, "-m", "harness", *head, *config, *overrides, "--output", str(cell_dir), "--overwrite"]


def read_report(cell_dir: Path) -> dict | None:
    """The cell's report, or None where it wrote none or a torn one (the row then says why)."""
    try:
        return load_report(cell_dir / "report.yaml") if (cell_dir / "report.yaml").is_file() else None
    except BadInput:
        return None


SWEEP_FIGURES = ("samples_per_s", "step_time_p50_ms", "data_wait_fraction", "peak_rss_mb", "peak_pss_mb",
                 "test_accuracy", "time_to_target_s", "tokens_per_s", "flops_per_token")
"""A language model's row adds its tokens/s and FLOPs per token (null for an image cell): what a
sweep over data.seq_len, batch or model size is read by."""


def figures(report: dict | None) -> dict:
    """The key figures a sweep row copies from its cell's report (names from harness.report.figures.FIGURES)."""
    return {**report_figures(report or {}, SWEEP_FIGURES), **scale(report)}


def scale(report: dict | None) -> dict:
    """How many processes the cell ran and the batch each saw: what a scaling table needs."""
    report = report or {}
    world = (report.get("distributed") or {}).get("world_size")
    per_device = ((report.get("config") or {}).get("loader") or {}).get("batch_size")
    total = (report.get("throughput") or {}).get("global_batch_size")
    if total is None and isinstance(world, int) and isinstance(per_device, int):
        total = world * per_device
    return {"world_size": world, "per_device_batch_size": per_device, "global_batch_size": total}


def pending_row(cell: Cell) -> dict:
    return {"id": cell.id, "axes": cell.axes, "status": "pending"}


class SweepStopped(KeyboardInterrupt):
    """SIGTERM/SIGINT to the sweep: the running cell was stopped (and reported) with it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def _stop_on(signum, frame):
    raise SweepStopped(signum)


@contextlib.contextmanager
def sweep_folder(out: Path):
    """The sweep folder for this sweep alone, the way a run holds its folder (harness/files/lock.py):
    a second sweep (or run) on it is refused before it reads or writes anything there; and
    folders this sweep created and left empty (it was refused before writing) are removed."""
    created = [p for p in (out, *out.parents) if not p.exists()]
    lock = RunLock(out)
    lock.acquire()
    try:
        yield bool(created)
    finally:
        lock.release()
        for folder in created:  # innermost first; one that holds anything stops the walk
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                break


def run_stoppable(run, out: Path, resume_hint: str) -> int:
    """``run()`` (the sweep, returning its rows) with SIGINT/SIGTERM raised in it as
    KeyboardInterrupt; then the summary table, or the one-line error and 128+N."""
    old = {sig: signal.signal(sig, _stop_on) for sig in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        rows = run()
    except KeyboardInterrupt as err:
        print(f"error: interrupted ({err or 'SIGINT'}); {resume_hint}", file=sys.stderr)
        return 128 + getattr(err, "signum", signal.SIGINT)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    print(summary_table(rows, out))
    print(f"\nsweep  {out / 'sweep.yaml'}")
    return 0
