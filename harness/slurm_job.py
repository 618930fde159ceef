"""What runs inside a Slurm job: a sweep cell (submitted by harness/sweep_slurm.py through
submitit) and the helpers launch/slurm.sbatch calls.

    python -m harness.slurm_job preflight [CONFIG] [KEY=VALUE ...] [--output DIR]
        refuse bad input once, in one line, before any rank starts
    python -m harness.slurm_job exits DIR
        after the ranks: the first failing rank's one-line error, printed last; its exit status

Torch-free at import: the job's own process only starts `harness run` or `harness launch`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

NOT_SHARED = ("the sweep folder must be on a file system the submitting machine and the nodes share "
              "(not /tmp or a local disk)")


def check_writable(folder: Path) -> str | None:
    """None, or why this node cannot write the cell's folder."""
    host = socket.gethostname()
    probe = folder / f".writable-{host}-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_text(host)
        probe.unlink()
    except OSError as err:
        return f"{folder} is not writable from the job on {host} ({err.strerror or err}); {NOT_SHARED}"
    return None


def _resumable(cell_dir: Path) -> bool:
    """A requeued job (pre-empted, or a node failure) continues its run instead of starting over."""
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    return restarts > 0 and (cell_dir / "config.yaml").is_file()


def resume_command(cmd: list[str], cell_dir: Path) -> list[str]:
    """``... --output DIR`` -> ``... --resume DIR``: the run picks up its last checkpoint."""
    out = list(cmd)
    i = out.index("--output")
    out[i] = "--resume"
    return out


def thread_env(cmd: list[str], environ: dict) -> dict:
    """The cell's environment, with torch's threads set to the CPUs Slurm gave this job,
    shared among the cell's processes.

    Without it each process starts a thread per core of the node: two cells of an array on
    one 2-core node then run four busy threads on two cores, and their steps were measured
    ~25x slower (125 ms against 5 ms). A user's own OMP_NUM_THREADS is kept.
    """
    env = dict(environ)
    cpus = env.get("SLURM_CPUS_ON_NODE", "")
    if "OMP_NUM_THREADS" in env or not cpus.isdigit():
        return env
    nproc = int(cmd[cmd.index("--nproc") + 1]) if "--nproc" in cmd[:-1] else 1
    env["OMP_NUM_THREADS"] = str(max(1, int(cpus) // max(1, nproc)))
    return env


def run_cell_job(cmd: list[str], cell_dir: str) -> dict:
    """The body of one cell's job: check the folder, run the cell, report how it ended.

    The cell's own process handles SIGTERM (Slurm's time limit, a pre-emption): it stops at a
    step boundary, checkpoints and writes its report; the scheduler's state names the cause.
    """
    folder = Path(cell_dir)
    host = socket.gethostname()
    why = check_writable(folder)
    if why is not None:
        return {"exit_code": None, "host": host, "error": why}
    resumed = _resumable(folder)
    if resumed:
        cmd = resume_command(cmd, folder)
    else:
        (folder / "report.yaml").unlink(missing_ok=True)  # never read a previous attempt's report
    # submitit answers its pre-emption signal by requeueing from Python; the run already
    # checkpoints on SIGTERM, and sweep_slurm asks Slurm to send that signal nowhere.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    t0 = time.perf_counter()
    with open(folder / "stdout.log", "a" if resumed else "w") as out, \
            open(folder / "stderr.log", "a" if resumed else "w") as err:
        code = subprocess.call(cmd, stdout=out, stderr=err, env=thread_env(cmd, dict(os.environ)))
    return {"exit_code": code, "host": host, "seconds": time.perf_counter() - t0, "resumed": resumed}


def preflight(run_args: list[str]) -> int:
    from harness.cli import EXIT_BAD_INPUT
    from harness.errors import BadInput
    from harness.launch import preflight as check

    try:
        check(run_args)
    except BadInput as err:
        print(f"error: {' '.join(str(err).splitlines())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def exits(folder: Path) -> int:
    """The first failing rank's one-line error, as `harness launch` ends; 0 when none failed."""
    from harness.launch import first_failure, silent_ranks

    first = first_failure(folder)
    if first is None:
        silent = silent_ranks(folder)
        if silent:
            r = silent[0]
            print(f"error: rank {r['rank']} (pid {r['pid']} on {r['host']}) ended without a note: "
                  f"{r['fault'] or 'killed by a signal, or its node failed'}", file=sys.stderr)
            return 1
        return 0
    if first.get("message"):
        print(f"{first['message']} (rank {first['rank']})", file=sys.stderr)
    return int(first["code"])


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "preflight":
        return preflight(argv[1:])
    if len(argv) == 2 and argv[0] == "exits":
        return exits(Path(argv[1]))
    print("usage: python -m harness.slurm_job preflight RUN_ARGS... | exits DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
