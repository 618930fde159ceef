"""``harness sweep SWEEP.yaml``: run a grid of recipes, one process per cell.

A cell that crashes, hangs past its time limit or runs out of memory is a row
with ``status: failed`` and the error; the sweep goes on. ``sweep.yaml`` is
rewritten atomically after every cell, so a killed sweep can ``--resume``. One sweep
holds its folder at a time, with the lock a run holds its own folder by (harness/files/lock.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import harness
from harness.files.atomic import write_text_atomic
from harness.errors import BadInput
from harness.files.lock import live_owner
from harness.sweep.cells import (  # noqa: F401  (cell_command, sweep_folder, SweepStopped: imported from here too)
    SweepStopped, cell_command, figures, last_line, pending_row, read_report, run_stoppable, sweep_folder)
from harness.files.clock import now
from harness.sweep.file import read_rows, write_sweep

if TYPE_CHECKING:  # sweep_config builds configs, which imports torch: only the commands need it
    from harness.sweep.spec import Cell, SweepSpec

OOM_MARKER = "out of memory"


@dataclass
class Attempt:
    status: str
    error: str | None
    seconds: float
    report: dict | None
    stderr: str


def _child_env() -> dict:
    """The cell's process imports this same harness, installed or not."""
    env = dict(os.environ)
    root = str(Path(harness.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


GRACE_S = 20.0
"""After SIGTERM, how long a cell may take to checkpoint and write its report."""


def _kill_group(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """SIGTERM first, so the run stops at a step boundary and reports; SIGKILL if it hangs."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def run_cell(spec: SweepSpec, overrides: list[str], cell_dir: Path, launch=None,
             config_file: Path | None = None) -> Attempt:
    """One attempt of one cell in its own process group, killed at the time limit."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    (cell_dir / "report.yaml").unlink(missing_ok=True)  # never read a previous attempt's report
    cmd = cell_command(spec, overrides, cell_dir, launch, config_file=config_file)
    write_text_atomic(cell_dir / "command.txt", " ".join(cmd) + "\n")
    t0 = time.perf_counter()
    with open(cell_dir / "stdout.log", "w") as out, open(cell_dir / "stderr.log", "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=_child_env(), start_new_session=True)
        try:
            proc.wait(timeout=spec.time_limit_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            timed_out = True
        except BaseException:  # Ctrl-C: take the cell down with the sweep
            _kill_group(proc)
            raise
    seconds = time.perf_counter() - t0
    stderr = (cell_dir / "stderr.log").read_text(errors="replace")
    report = read_report(cell_dir)
    if timed_out:
        return Attempt("failed", f"timed out after {spec.time_limit_s:g} s", seconds, report, stderr)
    if proc.returncode == 0 and report is not None and report["status"] == "completed":
        return Attempt("completed", None, seconds, report, stderr)
    error = (report or {}).get("error") or last_line(stderr) or f"exit status {proc.returncode}"
    return Attempt("failed", error, seconds, report, stderr)


def _is_oom(attempt: Attempt) -> bool:
    text = f"{attempt.stderr}\n{attempt.error or ''}".lower()
    return attempt.status == "failed" and OOM_MARKER in text


def run_with_backoff(spec: SweepSpec, cell: Cell, cell_dir: Path) -> dict:
    """Run a cell (halving the batch size after an out-of-memory error if asked); its row."""
    requested = batch = cell.batch_size
    overrides, seconds, attempts = list(cell.overrides), 0.0, 0
    while True:
        try:
            attempt = run_cell(spec, overrides, cell_dir, cell.launch, cell.config_file)
        except SweepStopped as stop:
            # The cell got the signal too and checkpointed: the row says so, never "pending".
            report = read_report(cell_dir)
            stop.row = {"id": cell.id, "config_hash": cell.config_hash, "axes": cell.axes,
                        "status": "interrupted", "error": f"the sweep was {stop}", "attempts": attempts + 1,
                        "report": f"cells/{cell.id}/report.yaml" if report is not None else None,
                        **figures(report)}
            raise
        seconds += attempt.seconds
        attempts += 1
        if not (spec.oom_backoff and _is_oom(attempt) and batch > 1):
            break
        batch = max(1, batch // 2)
        from harness.sweep.spec import override_text

        overrides = list(cell.overrides) + [override_text("loader.batch_size", batch)]
    return {
        "id": cell.id,
        "config_hash": cell.config_hash,
        "axes": cell.axes,
        "nproc": cell.launch.nproc if cell.launch else 1,
        "status": attempt.status,
        "error": attempt.error,
        "seconds": round(seconds, 3),
        "attempts": attempts,
        "report": f"cells/{cell.id}/report.yaml" if attempt.report is not None else None,
        "requested_batch_size": requested,
        "actual_batch_size": batch,
        **figures(attempt.report),
    }


class _CellLines:
    """The bar's stand-in when stderr is a log: one plain line per finished cell, no carriage returns."""

    def __init__(self, total: int, name: str):
        self.total, self.name, self.done, self.cell = total, name, 0, ""

    def set_postfix_str(self, cell_id: str) -> None:
        self.cell = cell_id

    def update(self, n: int) -> None:
        self.done += n
        print(f"sweep {self.name}: {self.done}/{self.total} cells run (last: {self.cell})", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _progress(total: int, name: str):
    """A bar on a terminal; in a log, a line per cell (a bar there is one line of carriage returns)."""
    if not sys.stderr.isatty():
        return _CellLines(total, name)
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="cell", desc=name, file=sys.stderr)


def run_sweep(spec: SweepSpec, out: Path, resume: bool, retry_failed: bool) -> list[dict]:
    with sweep_folder(out):
        return _run_sweep(spec, out, resume, retry_failed)


def _run_sweep(spec: SweepSpec, out: Path, resume: bool, retry_failed: bool) -> list[dict]:
    previous = read_rows(out) if resume else {}
    if not resume and (out / "sweep.yaml").exists():
        raise BadInput(f"--output: {out} already holds a sweep.yaml; pass --resume to continue it")
    out.mkdir(parents=True, exist_ok=True)

    def keep(cell: Cell) -> bool:
        row = previous.get(cell.id, {})
        if row.get("config_hash") != cell.config_hash:
            return False  # the base config or an override changed since: the row is another recipe's
        return row.get("status") == "completed" or (row.get("status") == "failed" and not retry_failed)

    rows = [previous[c.id] if keep(c) else pending_row(c) for c in spec.cells]
    todo = [i for i, c in enumerate(spec.cells) if not keep(c)]
    for i in todo:  # a killed sweep's cell may still run on, orphaned: never run a second beside it
        owner = live_owner(out / "cells" / spec.cells[i].id)
        if owner is not None:
            raise BadInput(f"--resume: {out / 'cells' / spec.cells[i].id} is still being run by pid "
                           f"{owner.get('pid')} on {owner.get('host')} (left by a killed sweep?); "
                           "stop it or let it finish, then resume")
    started_at = now()
    write_sweep(out, spec, rows, started_at)
    bar = _progress(len(todo), spec.name)
    try:
        for i in todo:
            cell = spec.cells[i]
            bar.set_postfix_str(cell.id)
            try:
                rows[i] = run_with_backoff(spec, cell, out / "cells" / cell.id)
            except SweepStopped as stop:
                rows[i] = stop.row
                write_sweep(out, spec, rows, started_at)
                raise
            write_sweep(out, spec, rows, started_at)
            bar.update(1)
    finally:
        bar.close()
    return rows


def cmd_sweep(args) -> int:
    if args.retry_failed and not args.resume:
        raise BadInput("--retry-failed: only with --resume (it reruns the failed cells of an earlier sweep)")
    from harness.sweep.spec import load_sweep_apart

    spec = load_sweep_apart(args.sweep)  # torch stays out of this process (a cell's PSS is its own)
    out = Path(args.output or Path("sweeps") / spec.name)
    if (args.executor or spec.executor) == "slurm":
        from harness.sweep.slurm import cmd_slurm_sweep

        return cmd_slurm_sweep(args, spec, out)
    for cell in spec.cells:
        if cell.launch is not None and cell.launch.nnodes > 1:
            raise BadInput(f"{args.sweep}: cell {cell.id}: slurm.nodes: {cell.launch.nnodes} nodes need "
                           "--executor slurm (the local executor runs every cell on this machine)")
    return run_stoppable(lambda: run_sweep(spec, out, resume=args.resume, retry_failed=args.retry_failed), out,
                         f"continue with: harness sweep {args.sweep} --output {out} --resume")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="run a grid of recipes, one process per cell; write sweep.yaml")
    p.add_argument("sweep", metavar="SWEEP.yaml")
    p.add_argument("--output", help="output folder (default: sweeps/<name>)")
    p.add_argument("--resume", action="store_true", help="skip cells already completed in the folder's sweep.yaml")
    p.add_argument("--retry-failed", action="store_true", help="with --resume, rerun failed cells too")
    p.add_argument("--executor", choices=("local", "slurm"),
                   help="where cells run (default: the sweep file's executor, else local): "
                        "slurm submits them as a job array through submitit")
    p.set_defaults(func=cmd_sweep)
