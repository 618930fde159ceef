"""``harness launch``: build the right ``accelerate launch`` command for a mode, and run it.

On a machine without GPUs, ``accelerate launch --cpu --num_processes N`` starts one
process. Real CPU data parallelism goes through accelerate's multi-process
launcher (torchrun underneath): each process then builds a CPU Accelerator, which
joins a gloo process group of N ranks.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys

from harness.errors import BadInput

MODES = ("cpu", "gpu", "ddp")


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
    return cmd + ["-m", "harness", "run", *run_args, *overrides]


def cmd_launch(args) -> int:
    cmd = build_command(args.mode, args.nproc, args.items, args.precision, args.compile)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    return subprocess.call(cmd)


def add_parser(sub) -> None:
    p = sub.add_parser("launch", help="run a recipe under accelerate launch in a given mode")
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--nproc", type=int, default=1, help="processes (ddp: one per GPU, or N gloo ranks on CPU)")
    p.add_argument("--precision", choices=("no", "bf16", "fp16"), help="override runtime.precision")
    p.add_argument("--compile", action="store_true", help="turn on runtime.compile.enabled")
    p.add_argument("--dry-run", action="store_true", help="print the command and exit")
    p.add_argument("items", nargs="*", metavar="[CONFIG] [KEY=VALUE ...] [--output DIR]")
    p.set_defaults(func=cmd_launch)
