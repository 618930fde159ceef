"""``harness launch``: build the right ``accelerate launch`` command for a mode, and run it.

On a machine without GPUs, ``accelerate launch --cpu --num_processes N`` starts one
process. Real CPU data parallelism goes through accelerate's multi-process
launcher (torchrun underneath): each process then builds a CPU Accelerator, which
joins a gloo process group of N ranks.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.errors import BadInput

MODES = ("cpu", "gpu", "ddp")

# The launchers (accelerate's, torchrun) end with their own status, 1, whatever a
# rank exited with. ``harness launch`` hands each rank a folder in this variable;
# a rank notes its exit status and one-line error there, and the launch ends with
# the status of the rank that failed first: 2 for bad input, 3 for a diverged loss,
# 128+N for a signal, as `harness run` alone would.
EXIT_DIR_ENV = "HARNESS_EXIT_DIR"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_command(mode: str, nproc: int, run_args: list[str], precision: str | None = None,
                  compile_model: bool = False, port: int | None = None) -> list[str]:
    if mode not in MODES:
        raise BadInput(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if nproc < 1:
        raise BadInput(f"--nproc: expected an integer >= 1, got {nproc}")
    if mode != "ddp" and nproc != 1:
        raise BadInput(f"--nproc: mode {mode} runs one process; use --mode ddp for {nproc}")
    if mode == "ddp" and nproc < 2:
        raise BadInput("--nproc: ddp needs at least 2 processes")
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    overrides = []
    if mode == "cpu":
        cmd += ["--cpu", "--num_processes", "1"]
        overrides.append("runtime.device=cpu")
    elif mode == "gpu":
        cmd += ["--num_processes", "1"]
        overrides.append("runtime.device=gpu")
    else:
        cmd += ["--multi_gpu", "--num_processes", str(nproc), "--num_machines", "1",
                "--main_process_port", str(port or free_port())]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no"]  # the config decides both
    if precision:
        overrides.append(f"runtime.precision={precision}")
    if compile_model:
        overrides.append("runtime.compile.enabled=true")
    positional, options = split_run_args(run_args)
    # The mode's overrides come after the user's, so the mode wins, and before the
    # options: `harness run`'s parser takes no KEY=VALUE after --output DIR.
    return cmd + ["-m", "harness", "run", *positional, *overrides, *options]


def split_run_args(run_args: list[str]) -> tuple[list[str], list[str]]:
    """``harness run``'s arguments as (CONFIG and KEY=VALUE items, --option VALUE pairs)."""
    positional, options = [], []
    it = iter(run_args)
    for arg in it:
        if not arg.startswith("--"):
            positional.append(arg)
            continue
        options.append(arg)
        if "=" not in arg:
            value = next(it, None)
            if value is not None:
                options.append(value)
    return positional, options


def preflight(run_args: list[str]) -> None:
    """Refuse here what every launched process would refuse: a bad config, or a device or
    precision this machine cannot give. One line and exit 2, instead of N tracebacks
    from the ranks and the launcher's exit 1."""
    from harness import accel
    from harness.cli import _split_positionals, parser
    from harness.config import load_config

    ns = parser().parse_args(["run", *run_args])
    if ns.resume:
        return  # the config lies in the run folder; `harness run --resume` checks it
    config, overrides = _split_positionals(ns.items)
    runtime = load_config(config, overrides).runtime
    accel.resolve_precision(runtime.precision, accel.resolve_device(runtime))


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


def cmd_launch(args) -> int:
    cmd = build_command(args.mode, args.nproc, args.items, args.precision, args.compile)
    preflight(cmd[cmd.index("harness") + 2:])  # what follows `-m harness run`
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    with tempfile.TemporaryDirectory(prefix="harness-launch-") as exits:
        code = subprocess.call(cmd, env={**os.environ, EXIT_DIR_ENV: exits})
        first = first_failure(Path(exits)) if code else None
    if first is None:
        return code
    if first.get("message"):
        # Repeated last, below the launcher's own report, so the cause is the final line.
        print(f"{first['message']} (rank {first['rank']})", file=sys.stderr)
    return int(first["code"])


def add_parser(sub) -> None:
    p = sub.add_parser("launch", help="run a recipe under accelerate launch in a given mode")
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--nproc", type=int, default=1, help="processes (ddp: one per GPU, or N gloo ranks on CPU)")
    p.add_argument("--precision", choices=("no", "bf16", "fp16"), help="override runtime.precision")
    p.add_argument("--compile", action="store_true", help="turn on runtime.compile.enabled")
    p.add_argument("--dry-run", action="store_true", help="print the command and exit")
    p.add_argument("items", nargs="*", metavar="[CONFIG] [KEY=VALUE ...] [--output DIR]")
    p.set_defaults(func=cmd_launch)
