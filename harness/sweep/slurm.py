"""``harness sweep --executor slurm``: the cells as Slurm jobs, submitted through submitit.

Cells that ask for the same resources go to the scheduler as one job array (nearly every
sweep: one array), at most ``slurm.array_parallelism`` of them running at once. Each job
runs ``harness run`` (or ``harness launch`` for a multi-process cell) into
``OUTPUT/cells/<id>``, so OUTPUT must be on a file system the nodes share; the job checks
it can write there. This process is the only writer of ``sweep.yaml``: it records each
job id as soon as sbatch answers, then polls the scheduler and rewrites the rows
atomically as jobs finish. Stopping it leaves the jobs running; ``--resume`` finds them
by id and waits for them instead of submitting them again. A row changes only on what the
scheduler said: a controller that does not answer leaves every row as it was.

A cell on several nodes (``slurm.nodes``) is one job of that many nodes: srun starts the
job's function once per node, and each runs ``harness launch --nnodes N --node-rank R``
towards node 0 (harness/launch/slurm_job.py).

At its time limit (or on pre-emption, or ``scontrol requeue``) Slurm sends SIGTERM to every
process of the job; the ranks of a ``harness launch`` cell get it again from their launcher,
and a run inside a Slurm job takes the repeats as the same request (harness/run/guard.py). Every
rank stops at the same step boundary, checkpoints and reports; the row names the
scheduler's reason. A job Slurm requeues runs its cell again with ``--resume``, from the
last checkpoint in its folder, and its row counts the attempts.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import harness
from harness.sweep import slurm_queue
from harness.errors import BadInput
from harness.sweep.slurm_config import SlurmResources, cell_resources, resource_dict
from harness.sweep.cells import cell_command, figures, last_line, pending_row, read_report, run_stoppable, sweep_folder
from harness.files.clock import now
from harness.sweep.file import read_rows, write_sweep

if TYPE_CHECKING:
    from harness.sweep.spec import Cell, SweepSpec

POLL_S = 2.0
UNKNOWN_GRACE_S = 300.0
"""How long a job the scheduler does not name (and that left no result) is waited for."""
SILENCE_GRACE_S = 60.0
"""How long a controller that stopped answering mid-sweep (a restart takes seconds) is waited for."""
EXIT_UNREACHABLE = 1
"""The sweep could not follow its jobs: a failure, not bad input (the rows are still valid)."""
SUBMITIT_DIR = ".submitit"
# Slurm must send submitit's pre-emption signal nowhere: SIGURG to the batch shell alone is
# ignored. A time limit or pre-emption then reaches the run as Slurm's own SIGTERM.
NO_SUBMITIT_SIGNAL = "B:URG@1"


def _submitit():
    try:
        import submitit
    except ImportError:
        raise BadInput("executor slurm: needs the submitit package; install the slurm extra "
                       "(pip install 'harness[slurm]')") from None
    return submitit


def time_limit_min(spec: SweepSpec, res: SlurmResources) -> int:
    """Slurm counts whole minutes: the cell's limit, rounded up."""
    return max(1, math.ceil((res.time_limit_s or spec.time_limit_s) / 60))


def _executor(out: Path, spec: SweepSpec, res: SlurmResources, count: int):
    submitit = _submitit()
    options = spec.slurm
    try:
        ex = submitit.SlurmExecutor(folder=out / SUBMITIT_DIR / "%j", python=options.python)
    except RuntimeError as err:  # no srun on PATH
        raise BadInput(f"executor slurm: {err}") from None
    params = {
        "job_name": f"harness-{spec.name}",
        "time": time_limit_min(spec, res),
        "nodes": res.nodes,
        "array_parallelism": options.array_parallelism or count,
        # One node: the job's own process runs the cell (the launcher, if any, starts the ranks).
        # Several: srun starts the job's function once per node, and each starts its launcher.
        "use_srun": res.nodes > 1,
        # The nodes import this same harness, installed or not (the file system is shared).
        "setup": [f"export PYTHONPATH={Path(harness.__file__).resolve().parent.parent}${{PYTHONPATH:+:$PYTHONPATH}}",
                  # The batch shell must outlive the cell. Killed by the time limit's SIGTERM, it
                  # ended the job step while the run was still checkpointing: the job read as
                  # TIMEOUT before the report was written, and the run went on outside Slurm's
                  # view. Trapped, it waits for the cell (its children get SIGTERM's default).
                  "trap : TERM"],
        "additional_parameters": {"signal": NO_SUBMITIT_SIGNAL, **dict(res.additional_parameters)},
    }
    for ours, theirs in (("partition", "partition"), ("account", "account"), ("qos", "qos"),
                         ("tasks_per_node", "ntasks_per_node"), ("gpus_per_node", "gpus_per_node"),
                         ("cpus_per_task", "cpus_per_task")):
        if getattr(res, ours) is not None:
            params[theirs] = getattr(res, ours)
    if res.mem_gb is not None:
        params["mem"] = f"{math.ceil(res.mem_gb * 1024)}M"
    if res.nodes > 1:
        # The step gets every CPU the job holds on each node (srun would give its one task one
        # CPU), and a node whose task dies takes the others down instead of leaving them waiting.
        params["srun_args"] = ["--whole", "--kill-on-bad-exit=1"]
    try:
        ex.update_parameters(**params)
    except ValueError as err:
        raise BadInput(f"slurm: {last_line(str(err))}") from None
    return ex


def resource_groups(spec: SweepSpec, cells: list[Cell]) -> dict[SlurmResources, list[Cell]]:
    """Cells by the resources they ask for: each group is one job array."""
    groups: dict[SlurmResources, list[Cell]] = defaultdict(list)
    for cell in cells:
        groups[cell_resources(spec.slurm, cell.resources, cell.launch)].append(cell)
    return dict(groups)


def submit_array(out: Path, spec: SweepSpec, res: SlurmResources, cells: list[Cell]) -> list[str]:
    """One job array for these cells; their job ids, in order."""
    from harness.launch.slurm_job import run_cell_job

    python = spec.slurm.python or sys.executable
    ex = _executor(out, spec, res, len(cells))
    with tempfile.TemporaryFile(mode="w+") as said:
        try:
            with _stderr_to(said), ex.batch():
                jobs = [ex.submit(run_cell_job, cell_command(spec, c.overrides, out / "cells" / c.id, c.launch,
                                                             python, c.config_file), str(out / "cells" / c.id))
                        for c in cells]
        except Exception as err:  # sbatch refused (a partition that does not exist, a limit)
            if type(err).__name__ not in ("FailedJobError", "FailedSubmissionError"):
                raise
            said.seek(0)
            why = last_line(said.read()) or last_line(str(err))
            raise BadInput(f"slurm: sbatch refused the array: {why}") from None
    return [str(job.job_id) for job in jobs]


@contextlib.contextmanager
def _stderr_to(file):
    """sbatch writes its refusal to our stderr; bad input is one line, so it is caught here."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _job_result(out: Path, job_id: str) -> tuple[str, object] | None:
    """What the job's function returned (``("success", dict)``) or raised, if it got that far."""
    from submitit.core.utils import JobPaths, pickle_load

    path = JobPaths(out / SUBMITIT_DIR / "%j", job_id=job_id, task_id=0).result_pickle
    try:
        return pickle_load(path)
    except (OSError, EOFError, ValueError):
        return None


def finished_row(out: Path, cell: Cell, row: dict, state: str) -> dict:
    """A job the scheduler no longer runs: its row, from the report, the job's result and the state."""
    cell_dir = out / "cells" / cell.id
    report = read_report(cell_dir)
    result = _job_result(out, row["job_id"])
    info = result[1] if result and result[0] == "success" and isinstance(result[1], dict) else {}
    ok = (state == "COMPLETED" and info.get("exit_code") == 0 and report is not None
          and report["status"] == "completed")
    error = None
    if not ok:
        stderr = cell_dir / "stderr.log"
        stderr_tail = last_line(stderr.read_text(errors="replace")) if stderr.is_file() else None
        raised = last_line(str(result[1])) if result and result[0] == "error" else None
        if state in slurm_queue.KILLED:
            error = f"{state}: {slurm_queue.KILLED[state]}"
            if state == "TIMEOUT":
                error += f" ({(row.get('resources') or {}).get('time_limit_min')} min)"
        else:
            error = (info.get("error") or (report or {}).get("error") or stderr_tail or raised
                     or (f"exit status {info['exit_code']}" if info.get("exit_code") is not None
                         else f"job {state}"))
    seconds = info.get("seconds") or ((report or {}).get("timing") or {}).get("total_wall_s")
    batch = cell.batch_size
    return {**row, "status": "completed" if ok else "failed", "error": error, "scheduler_state": state,
            "host": info.get("host"), "seconds": round(seconds, 3) if seconds else None,
            "attempts": 1 + int(info.get("restarts") or 0),
            "report": f"cells/{cell.id}/report.yaml" if report is not None else None,
            "requested_batch_size": batch, "actual_batch_size": batch, **figures(report)}


def _live_status(state: str | None) -> str | None:
    if state in slurm_queue.QUEUED:
        return "queued"
    if state in slurm_queue.RUNNING:
        return "running"
    return None


def watch(out: Path, spec: SweepSpec, rows: list[dict], started_at: str, waiting: dict[str, int],
          poll_s: float = POLL_S) -> None:
    """Poll the scheduler until every job in ``waiting`` ({job id: row index}) has ended."""
    by_id = {c.id: c for c in spec.cells}
    unknown_since: dict[str, float] = {}
    silent_since = None
    while waiting:
        try:
            known = slurm_queue.states(list(waiting))
        except slurm_queue.Unreachable:
            # No answer says nothing of the jobs: no row changes, and a job's time unnamed
            # counts only while the controller answers. Past the grace, the sweep ends.
            silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since > SILENCE_GRACE_S:
                raise
            unknown_since.clear()
            time.sleep(poll_s)
            continue
        silent_since = None
        changed = False
        for job_id, i in list(waiting.items()):
            state = known.get(job_id)
            if state is None:
                # Forgotten (no accounting and MinJobAge passed), or the controller did not answer:
                # wait a while (longer if the job left no result), then say what the cell left.
                first = unknown_since.setdefault(job_id, time.monotonic())
                grace = 10 * poll_s if _job_result(out, job_id) is not None else UNKNOWN_GRACE_S
                if time.monotonic() - first < grace:
                    continue
                state = "UNKNOWN"
            state = state.rstrip("+")
            live = _live_status(state)
            if live is not None:
                if rows[i].get("scheduler_state") != state:
                    rows[i] = {**rows[i], "status": live, "scheduler_state": state}
                    changed = True
                continue
            rows[i] = finished_row(out, by_id[rows[i]["id"]], rows[i], state)
            del waiting[job_id]
            changed = True
        if changed:
            write_sweep(out, spec, rows, started_at)
        if waiting:
            time.sleep(poll_s)


def run_slurm_sweep(spec: SweepSpec, out: Path, resume: bool, retry_failed: bool) -> list[dict]:
    if spec.oom_backoff:
        raise BadInput("oom_backoff: only with executor local (a Slurm cell runs once, at its batch size)")
    with sweep_folder(out) as created:
        return _run_slurm_sweep(spec, out, resume, retry_failed, created)


def _run_slurm_sweep(spec: SweepSpec, out: Path, resume: bool, retry_failed: bool, created: bool) -> list[dict]:
    previous = read_rows(out) if resume else {}
    if not resume and (out / "sweep.yaml").exists():
        raise BadInput(f"--output: {out} already holds a sweep.yaml; pass --resume to continue it")
    rows, todo, waiting = [], [], {}
    for i, cell in enumerate(spec.cells):
        row = previous.get(cell.id, {})
        same = row.get("config_hash") == cell.config_hash
        if same and row.get("job_id") and row.get("status") in ("queued", "running"):
            rows.append(row)  # still with the scheduler: wait for it, never submit it twice
            waiting[str(row["job_id"])] = i
        elif same and (row.get("status") == "completed" or (row.get("status") == "failed" and not retry_failed)):
            rows.append(row)
        else:
            rows.append(pending_row(cell))
            todo.append(i)
    if waiting:  # asked before anything is written: the rows stay as they are until it answers
        why = slurm_queue.controller_silence()
        if why is not None:
            raise slurm_queue.Unreachable(why)
    started_at = now()
    out.mkdir(parents=True, exist_ok=True)
    index = {spec.cells[i].id: i for i in todo}
    for n, (res, cells) in enumerate(resource_groups(spec, [spec.cells[i] for i in todo]).items()):
        try:
            job_ids = submit_array(out, spec, res, cells)
        except BadInput:
            if n == 0 and created:
                shutil.rmtree(out, ignore_errors=True)  # bad input: nothing left behind
            raise
        for cell, job_id in zip(cells, job_ids):
            i = index[cell.id]
            rows[i] = {"id": cell.id, "config_hash": cell.config_hash, "axes": cell.axes,
                       "nproc": cell.launch.nproc if cell.launch else 1, "nodes": res.nodes,
                       "status": "queued", "job_id": job_id,
                       "scheduler_state": "PENDING", "submitted_at": now(),
                       "resources": {**resource_dict(res), "time_limit_min": time_limit_min(spec, res)}}
            waiting[job_id] = i
        write_sweep(out, spec, rows, started_at)  # the job ids are on disk before anything can stop us
    write_sweep(out, spec, rows, started_at)
    print(f"slurm: {len(waiting)} job(s) with the scheduler ({len(todo)} submitted now); "
          f"following them in {out / 'sweep.yaml'}", file=sys.stderr)
    try:
        watch(out, spec, rows, started_at, waiting)
    except KeyboardInterrupt:
        write_sweep(out, spec, rows, started_at)
        raise
    return rows


def cmd_slurm_sweep(args, spec: SweepSpec, out: Path) -> int:
    """Like the local sweep's command; a signal stops the watching, never the jobs."""
    spec.executor = "slurm"
    spec.raw = {**spec.raw, "executor": "slurm"}
    again = f"harness sweep {args.sweep} --output {out} --resume"
    try:
        return run_stoppable(lambda: run_slurm_sweep(spec, out, resume=args.resume, retry_failed=args.retry_failed),
                             out, f"the jobs go on with the scheduler; follow them with: {again}")
    except slurm_queue.Unreachable as err:
        # Not the user's input, and not the jobs' failure: the rows keep their last known state.
        print(f"error: slurm: the controller does not answer ({err}); {out / 'sweep.yaml'} is left as it "
              f"was and its jobs are not resubmitted; when Slurm answers, follow them with: {again}",
              file=sys.stderr)
        return EXIT_UNREACHABLE
