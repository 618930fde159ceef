"""``harness launch``: build the right ``accelerate launch`` command for a mode, and run it.

On a machine without GPUs, ``accelerate launch --cpu --num_processes N`` starts one
process. Real CPU data parallelism goes through accelerate's multi-process
launcher (torchrun underneath): each process then builds a CPU Accelerator, which
joins a gloo process group of N ranks.
"""

from __future__ import annotations

import collections
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
# The ranks' exit notes live in exit_notes.py; `harness run` (note_start, note_exit), the
# Slurm job side (first_failure, silent_ranks) and the tests still find them here.
from harness.launch.exit_notes import (EXIT_DIR_ENV, blame_silent, caused_by_a_peer, exit_status_in,  # noqa: F401
                                       first_failure, note_exit, note_start, silent_message, silent_ranks)
from harness.launch.exit_notes import silent_message as _silent_message  # noqa: F401
from harness.launch.nodes import TIMEOUT_SOURCE, Nodes, meet

MODES = ("cpu", "gpu", "ddp", "fsdp")
MULTI = ("ddp", "fsdp")
"""The modes of several processes: fsdp is ddp's launch with runtime.sharding=fsdp2."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_command(mode: str, nproc: int, run_args: list[str], precision: str | None = None,
                  compile_model: bool = False, port: int | None = None,
                  nodes: Nodes | None = None) -> list[str]:
    """``nproc`` counts the processes on this node; the world is ``nodes.nnodes * nproc``."""
    nodes = nodes or Nodes(main_port=port)
    if mode not in MODES:
        raise BadInput(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
    nodes.check()
    if nproc < 1:
        raise BadInput(f"--nproc: expected an integer >= 1, got {nproc}")
    if mode not in MULTI and nproc != 1:
        raise BadInput(f"--nproc: mode {mode} runs one process; use --mode ddp for {nproc}")
    if mode not in MULTI and nodes.nnodes > 1:
        raise BadInput(f"--nnodes: mode {mode} runs one process on one node; use --mode ddp for {nodes.nnodes} nodes")
    if mode in MULTI and nproc * nodes.nnodes < 2:
        raise BadInput(f"--nproc: {mode} needs at least 2 processes (--nproc per node times --nnodes)")
    cmd = [sys.executable, "-m", "harness.launch.accelerate_launch"]  # `accelerate launch`, started as we start
    overrides = []
    if mode == "cpu":
        cmd += ["--cpu", "--num_processes", "1"]
        overrides.append("runtime.device=cpu")
    elif mode == "gpu":
        cmd += ["--num_processes", "1"]
        overrides.append("runtime.device=gpu")
    elif nodes.nnodes == 1:
        cmd += ["--multi_gpu", "--num_processes", str(nproc), "--num_machines", "1",
                "--main_process_port", str(nodes.main_port or free_port())]
    else:
        # As launch/slurm.sbatch: accelerate counts processes over all machines, and a
        # static rendezvous needs no store beyond rank 0's port.
        cmd += ["--multi_gpu", "--num_machines", str(nodes.nnodes), "--machine_rank", str(nodes.node_rank),
                "--num_processes", str(nodes.nnodes * nproc), "--main_process_ip", nodes.main_address,
                "--main_process_port", str(nodes.main_port), "--rdzv_backend", "static", "--same_network",
                *nodes.launcher_flags()]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no"]  # the config decides both
    if mode == "fsdp":
        overrides.append("runtime.sharding=fsdp2")
    if precision:
        overrides.append(f"runtime.precision={precision}")
    if compile_model:
        overrides.append("runtime.compile.enabled=true")
    positional, options = split_run_args(run_args)
    # The mode's overrides come after the user's, so the mode wins, and before the
    # options: `harness run`'s parser takes no KEY=VALUE after --output DIR.
    return cmd + ["-m", "harness", "run", *positional, *overrides, *options]


RUN_FLAGS = ("--overwrite",)
"""``harness run``'s options that take no value."""


def split_run_args(run_args: list[str]) -> tuple[list[str], list[str]]:
    """``harness run``'s arguments as (CONFIG and KEY=VALUE items, --option VALUE pairs, flags)."""
    positional, options = [], []
    it = iter(run_args)
    for arg in it:
        if not arg.startswith("--"):
            positional.append(arg)
            continue
        options.append(arg)
        if "=" not in arg and arg not in RUN_FLAGS:
            value = next(it, None)
            if value is not None:
                options.append(value)
    return positional, options


def preflight(run_args: list[str], check_folder: bool = True) -> Path:
    """Refuse here what every launched process would refuse: a bad config, an output folder
    holding another run (without --overwrite), or a device or precision this machine cannot
    give. One line and exit 2, instead of N tracebacks from the ranks and the launcher's
    exit 1. ``check_folder``: false on nodes other than node 0, which may find node 0's
    run already started in the shared folder. Returns the run's output folder."""
    return check_run(run_args, check_folder)[0]


def check_run(run_args: list[str], check_folder: bool = True, world: int = 1):
    """``preflight``, returning (the output folder, the config); ``world``: the processes the
    launch starts on every node together."""
    from harness.measure import startup

    # torch, torchvision and the model's build: the heap growth `harness run` pauses the
    # collector over. `harness launch --dry-run` of the digits recipe, idle: 2.8-3.0 s of
    # CPU without the pause, 2.5-2.8 s with it (the collector off throughout: 2.3-2.5 s).
    with startup.collector_paused():
        return _check_run(run_args, check_folder, world)


def _check_run(run_args: list[str], check_folder: bool, world: int):
    from harness.run import accel
    from harness.args import split_positionals
    from harness.config.run import load_config
    from harness.run.command import parse_run_args

    ns = parse_run_args(run_args)
    config, overrides = split_positionals(ns.items)
    if ns.resume:
        from harness.run import resume
        from harness.config.run import to_dict

        config = config or str(Path(ns.resume) / "config.yaml")
        cfg = load_config(config, overrides)
        cfg.output.dir = ns.resume
        resume.plan(Path(ns.resume), to_dict(cfg), ns.resume_from)  # refuses what every rank would
    else:
        cfg = load_config(config, overrides)
        if check_folder:
            from harness.files import run_folder

            run_folder.check_unused(Path(ns.output or cfg.output.dir), ns.overwrite,
                                    resumable=cfg.scenario != "inference")
    runtime = cfg.runtime
    accel.resolve_precision(runtime.precision, accel.resolve_device(runtime))
    # The model and its probe batch, as `harness validate` builds them: a layer that
    # does not fit is named here once, not by every rank.
    from harness.data.preprocess import recipe_data
    from harness.run.build import check_grad_accum_of, recipe_model

    data = recipe_data(cfg)
    recipe_model(cfg, data)
    check_grad_accum_of(cfg, data, world)
    return Path(ns.resume or ns.output or cfg.output.dir), cfg


PREFLIGHT_ENV = "HARNESS_LAUNCH_PREFLIGHT"
"""JSON handed to accelerate_launch.py, which runs the preflight before the launcher:
{"run_args": [...], "world": N, "report": PATH}."""

GROUP_GRACE_S = 60.0
"""After the launcher exits, how long its process group may take to finish checkpointing."""


def _run_forwarding_signals(cmd: list[str], env: dict, exits: Path | None = None) -> tuple[int, str]:
    """Run the launcher in its own process group; SIGINT/SIGTERM to us reach all of it.

    The ranks stop at a step boundary, checkpoint and report (torchrun's agent passes
    the signal on to its workers and waits for them); we wait for the whole group, so
    nothing is left running re-parented to PID 1.
    """
    import signal
    import threading

    from harness.process.children import forwarding_signals

    tail: collections.deque[str] = collections.deque(maxlen=400)

    def pump(stderr):  # the launcher's stderr passes through; its tail holds each rank's exit code
        for raw in iter(stderr.readline, b""):
            line = raw.decode(errors="replace")
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line)

    with forwarding_signals() as started:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.PIPE)
        started(proc)
        reader = threading.Thread(target=pump, args=(proc.stderr,), daemon=True)
        reader.start()
        code = proc.wait()
        deadline = time.monotonic() + GROUP_GRACE_S
        # A single-process launcher can die before its child has reported; torchrun's agent
        # dies at a second SIGTERM (Slurm signals it and we forward ours) while its ranks,
        # in their own sessions, still checkpoint. Ending now would end a Slurm step under them.
        while (_group_alive(proc.pid) or _ranks_running(exits)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        reader.join(timeout=5)
    return code, "".join(tail)


def _ranks_running(folder: Path | None) -> bool:
    """Whether a rank of this machine noted its start in ``folder`` but not yet its exit, and lives."""
    from harness.process.pids import same_process

    if folder is None:
        return False
    host = socket.gethostname()
    for record in silent_ranks(folder):
        if record.get("host") != host:
            continue
        if same_process(record["pid"], record["time"]):
            return True  # (not a later process that was given the same pid)
    return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def cmd_launch(args) -> int:
    for flag, value in (("--output", args.output), ("--resume", args.resume), ("--resume-from", args.resume_from)):
        if value is not None:
            args.items = [*args.items, flag, value]
    if args.overwrite:
        args.items = [*args.items, "--overwrite"]  # rank 0 clears the folder, under its lock
    nodes = Nodes(args.nnodes, args.node_rank, args.main_address, args.main_port, args.rendezvous_timeout)
    cmd = build_command(args.mode, args.nproc, args.items, args.precision, args.compile, nodes=nodes)
    run_args = cmd[cmd.index("harness") + 2:]  # what follows `-m harness run`
    world = args.nproc * nodes.nnodes
    # The folder is looked at once, before any rank starts. On one node the launcher's own
    # process does it (accelerate_launch.py), so torch is imported once per launch, not
    # also here: about 1.5 s less wall before the first step and 1.5-2 s less CPU (idle,
    # docs/performance.md). Several nodes check here, before they meet, and a dry run
    # prints a command that passed.
    here = args.dry_run or nodes.nnodes > 1
    output = None
    if here:
        output, cfg = check_run(run_args, check_folder=nodes.node_rank == 0, world=world)
    if nodes.nnodes > 1 and nodes.rendezvous_timeout_s is None:
        nodes.rendezvous_timeout_s = cfg.runtime.collective_timeout_s
        cmd = build_command(args.mode, args.nproc, args.items, args.precision, args.compile, nodes=nodes)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    if nodes.nnodes > 1 and not meet(nodes):
        return 1
    with tempfile.TemporaryDirectory(prefix="harness-launch-") as exits:
        env = {**os.environ, EXIT_DIR_ENV: exits}
        report = Path(exits) / "preflight.json"
        if not here:
            env[PREFLIGHT_ENV] = json.dumps({"run_args": run_args, "world": world, "report": str(report)})
        code, launcher_stderr = _run_forwarding_signals(cmd, env, Path(exits))
        if output is None and report.is_file():
            output = Path(json.loads(report.read_text())["output"])
        first = first_failure(Path(exits)) if code else None
        silent = silent_ranks(Path(exits)) if code else []
        for r in silent:
            r["status"] = exit_status_in(launcher_stderr, r["pid"])
        never_met = code and nodes.nnodes > 1 and not any(Path(exits).glob("rank*.start.json")) \
            and "Timed out" in launcher_stderr
    if never_met:
        print(f"error: the {nodes.nnodes} nodes did not all meet at {nodes.endpoint} within "
              f"{nodes.rendezvous_timeout_s:g} s ({TIMEOUT_SOURCE}): a node never started, or cannot reach "
              "node 0 there", file=sys.stderr)
        return 1
    if silent and (first is None or caused_by_a_peer(first)):
        message = silent_message(silent, first)
        if output is not None:  # a rank started, so the preflight passed and named the folder
            blame_silent(output, silent, message)
        print(message, file=sys.stderr)  # last, below the launcher's own report
        return 1
    if first is None:
        if code < 0:  # a forwarded signal ended the launcher (in its preflight, say): end as `harness` does
            import signal

            print(f"error: stopped by {signal.Signals(-code).name}", file=sys.stderr)
            return 128 - code
        return code
    if first.get("message"):
        # Repeated last, below the launcher's own report, so the cause is the final line.
        print(f"{first['message']} (rank {first['rank']})", file=sys.stderr)
    return int(first["code"])


def add_parser(sub) -> None:
    p = sub.add_parser("launch", help="run a recipe under accelerate launch in a given mode")
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--nproc", type=int, default=1,
                   help="processes on this node (ddp, fsdp: one per GPU, or N gloo ranks on CPU)")
    p.add_argument("--nnodes", type=int, default=1, help="machines in the run, each running this command")
    p.add_argument("--node-rank", type=int, default=0, help="this machine's rank, 0 .. nnodes-1")
    p.add_argument("--main-address", default="127.0.0.1", help="the address of the node with rank 0")
    p.add_argument("--main-port", type=int,
                   help="the port node 0 listens on (default: a free one; required with --nnodes > 1)")
    p.add_argument("--rendezvous-timeout", type=float, metavar="S",
                   help="with --nnodes > 1: how long the nodes wait for one another "
                        "(default: runtime.collective_timeout_s)")
    p.add_argument("--precision", choices=("no", "bf16", "fp16"), help="override runtime.precision")
    p.add_argument("--compile", action="store_true", help="turn on runtime.compile.enabled")
    p.add_argument("--dry-run", action="store_true", help="print the command and exit")
    p.add_argument("--output", help="passed on to `harness run`")
    p.add_argument("--resume", metavar="DIR", help="passed on to `harness run`: continue the run in DIR")
    p.add_argument("--resume-from", metavar="epoch_NNNN", help="passed on to `harness run`")
    p.add_argument("--overwrite", action="store_true",
                   help="passed on to `harness run`: the output folder holds an earlier run; delete its files first")
    p.add_argument("items", nargs="*", metavar="[CONFIG] [KEY=VALUE ...] [--output DIR]")
    p.set_defaults(func=cmd_launch)
