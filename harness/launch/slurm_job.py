"""What runs inside a Slurm job: a sweep cell (submitted by harness/sweep/slurm.py through
submitit) and the helpers launch/slurm.sbatch calls.

    python -m harness.launch.slurm_job preflight [CONFIG] [KEY=VALUE ...] [--output DIR]
        refuse bad input once, in one line, before any rank starts
    python -m harness.launch.slurm_job exits DIR
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
    """``... --output DIR`` -> ``... --resume DIR``: the run picks up its last checkpoint
    (and ``--overwrite``, which would delete it, goes)."""
    out = [a for a in cmd if a != "--overwrite"]
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


MAIN_PORT_BASE, MAIN_PORT_SPAN = 20000, 20000


def node_command(cmd: list[str], environ: dict) -> list[str]:
    """``harness launch ... --nnodes N ...`` as this node runs it: its rank and node 0's address.

    srun runs this job's function once per node; node 0 is the job's first node, where the
    batch script (and so srun) runs, so ``SLURM_LAUNCH_NODE_IPADDR`` is its address on every
    node. The port comes from the job id: two cells' rendezvous on one node never share it,
    and a requeued job (same id) meets at the same port again.
    """
    try:
        rank, addr, job = environ["SLURM_NODEID"], environ["SLURM_LAUNCH_NODE_IPADDR"], environ["SLURM_JOB_ID"]
    except KeyError as err:
        raise RuntimeError(f"a multi-node cell must run under srun in a Slurm job ({err.args[0]} is not set)") from None
    port = MAIN_PORT_BASE + int(job) % MAIN_PORT_SPAN
    i = cmd.index("--nnodes") + 2
    return [*cmd[:i], "--node-rank", rank, "--main-address", addr, "--main-port", str(port), *cmd[i:]]


def log_names(node_rank: int) -> tuple[str, str]:
    """The cell's stdout and stderr files; nodes after the first write their own."""
    suffix = "" if node_rank == 0 else f".node{node_rank}"
    return f"stdout{suffix}.log", f"stderr{suffix}.log"


def run_cell_job(cmd: list[str], cell_dir: str) -> dict:
    """The body of one cell's job (on each of its nodes): check the folder, run the cell,
    report how it ended. The sweep reads what node 0 returns.

    The cell's own processes handle SIGTERM (Slurm's time limit, a pre-emption, a requeue):
    every rank stops at the same step boundary, checkpoints and writes its report; the
    scheduler's state names the cause.
    """
    folder = Path(cell_dir)
    host = socket.gethostname()
    multi = "--nnodes" in cmd
    node_rank = int(os.environ.get("SLURM_NODEID") or 0) if multi else 0
    why = check_writable(folder)
    if why is not None:
        return {"exit_code": None, "host": host, "error": why}
    resumed = _resumable(folder)
    if resumed:
        cmd = resume_command(cmd, folder)
    elif node_rank == 0:
        (folder / "report.yaml").unlink(missing_ok=True)  # never read a previous attempt's report
    if multi:
        cmd = node_command(cmd, os.environ)
    # submitit answers its pre-emption signal by requeueing from Python; the run already
    # checkpoints on SIGTERM, and sweep_slurm asks Slurm to send that signal nowhere.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    t0 = time.perf_counter()
    stdout, stderr = log_names(node_rank)
    with open(folder / stdout, "a" if resumed else "w") as out, \
            open(folder / stderr, "a" if resumed else "w") as err:
        code = subprocess.call(cmd, stdout=out, stderr=err, env=thread_env(cmd, dict(os.environ)))
    return {"exit_code": code, "host": host, "seconds": time.perf_counter() - t0, "resumed": resumed,
            "restarts": int(os.environ.get("SLURM_RESTART_COUNT") or 0)}


def preflight(run_args: list[str]) -> int:
    from harness.errors import EXIT_BAD_INPUT, BadInput, error_line
    from harness.launch.command import preflight as check

    try:
        check(run_args)
    except BadInput as err:
        print(error_line(err), file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def exits(folder: Path) -> int:
    """The first failing rank's one-line error, as `harness launch` ends; 0 when none failed."""
    from harness.launch.command import first_failure, silent_ranks

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
    print("usage: python -m harness.launch.slurm_job preflight RUN_ARGS... | exits DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    from harness.process.shutdown import skip_final_collection

    skip_final_collection()  # as the harness command: no full collection on the way out
    sys.exit(main(sys.argv[1:]))
