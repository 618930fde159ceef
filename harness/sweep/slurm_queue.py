"""What the Slurm scheduler says about jobs: ``sacct`` where accounting runs, else ``scontrol``.

A cluster with accounting (slurmdbd) answers ``sacct`` for jobs of any age; a small
Slurm without it (scripts/slurm-local.sh) answers ``scontrol show job`` for jobs that
ended less than ``MinJobAge`` ago. Array tasks are named ``ARRAYID_TASK``, as submitit names them.
"""

from __future__ import annotations

import re
import shutil
import subprocess

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESIZING", "CONFIGURING",
          "RESV_DEL_HOLD", "STOPPED"}
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "SPECIAL_EXIT"}
KILLED = {  # the scheduler ended the job, not the run: the row's reason
    "TIMEOUT": "the scheduler stopped the job at its time limit",
    "PREEMPTED": "the scheduler pre-empted the job (and did not requeue it)",
    "NODE_FAIL": "the job's node failed",
    "BOOT_FAIL": "the job's node failed to boot",
    "DEADLINE": "the job reached its deadline",
    "OUT_OF_MEMORY": "the job ran out of memory (the scheduler's limit)",
    "CANCELLED": "the job was cancelled",
}
TIMEOUT_S = 30.0
PING_TIMEOUT_S = 15.0
"""``scontrol ping`` waits for the controller at most its MessageTimeout (10 s by default)."""


class Unreachable(Exception):
    """The controller does not answer: nothing can be said of any job, so no row may change."""


def available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("scontrol") is not None


def _run(cmd: list[str]) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def controller_silence(timeout_s: float | None = None) -> str | None:
    """None when a Slurm controller answers ``scontrol ping``; else why not, in a few words."""
    timeout_s = PING_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        proc = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        return "scontrol is not on PATH"
    except subprocess.TimeoutExpired:
        return f"scontrol ping had no answer in {timeout_s:g} s"
    except OSError as err:
        return f"scontrol ping: {err.strerror or err}"
    # "Slurmctld(primary) at HOST is UP", a line per controller; one that answers is enough,
    # so the exit status is not read (a backup that is down must not make the cluster silent).
    if " is UP" in proc.stdout:
        return None
    # A down controller reads "... is DOWN" under a banner of asterisks: the status line says it.
    said = [ln.strip() for ln in (proc.stdout + "\n" + proc.stderr).splitlines() if ln.strip().strip("*")]
    said = [ln for ln in said if " is DOWN" in ln] or said
    return f"scontrol ping: {said[0][:200] if said else f'exit status {proc.returncode}'}"


def expand_tasks(spec: str) -> list[str]:
    """``0-3%2`` or ``1,4-5`` (a pending array's tasks) -> ['0', '1', ...]."""
    out = []
    for part in spec.split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out += [str(i) for i in range(int(lo), int(hi or lo) + 1)]
    return out


def parse_scontrol(text: str) -> dict[str, str]:
    """``scontrol show job -o`` lines -> {job id: state}; a pending array's record names all its tasks."""
    states = {}
    for line in text.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        state = fields.get("JobState")
        if not state or "JobId" not in fields:
            continue
        array, task = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
        if array and task:
            for t in expand_tasks(task):
                states[f"{array}_{t}"] = state
        else:
            states[fields["JobId"]] = state
    return states


def parse_sacct(text: str) -> dict[str, str]:
    """``sacct -X -n -P -o JobID,State`` lines -> {job id: state} (``CANCELLED by 0`` -> CANCELLED)."""
    states = {}
    for line in text.splitlines():
        job, _, state = line.strip().partition("|")
        if not job or not state:
            continue
        state = state.split()[0]
        m = re.fullmatch(r"(\d+)_\[(.+)\]", job)
        if m:
            for t in expand_tasks(m.group(2)):
                states[f"{m.group(1)}_{t}"] = state
        else:
            states[job] = state
    return states


def states(job_ids: list[str]) -> dict[str, str]:
    """The scheduler's state of each job it still knows; a job missing from the answer is unknown.
    Unreachable when some job is missing and the controller does not answer a ping."""
    if not job_ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    found: dict[str, str] = {}
    text = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(arrays)])
    if text:
        found = parse_sacct(text)
    missing = [a for a in arrays if not any(k.split("_")[0] == a for k in found)]
    for array in missing:  # no accounting, or not yet in it
        text = _run(["scontrol", "show", "job", "-o", array])
        if text:
            found.update(parse_scontrol(text))
    known = {j: found[j] for j in job_ids if j in found}
    if len(known) < len(job_ids):  # forgotten, or no answer at all: only the controller can tell
        why = controller_silence()
        if why is not None:
            raise Unreachable(why)
    return known
