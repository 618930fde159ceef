"""The ``harness`` command. Parses, builds, runs, closes; the work is elsewhere.

Exit status: 0 success, 1 a run that failed (its report says why), 2 bad input
(one line on stderr naming the key, file or layer; nothing written).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from harness.args import OneLineParser
from harness.errors import EXIT_BAD_INPUT, EXIT_FAILED, BadInput, error_line

# Under the names tests and older callers import from here; each lives in its room now.
from harness.args import split_positionals as _split_positionals  # noqa: F401
from harness.errors import EXIT_OK  # noqa: F401
from harness.run.command import (  # noqa: F401
    _warn_single_process_launch, cmd_env, cmd_run, cmd_validate, summary_table as _summary_table)


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM to a command, raised where the command was: unwinding it lets its
    locks go and its atomic writers drop their temp files, and main exits 128+N. A
    KeyboardInterrupt, so no ``except Exception`` on the way swallows it (DataLoader
    workers, which get a terminal's Ctrl-C too, leave it to the main process)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


@contextlib.contextmanager
def _signals_unwind():
    """While a command runs, SIGINT and SIGTERM raise ``Stopped``. A training run swaps in
    its own handlers (guard.StopSignals: stop at a step boundary and checkpoint), as do
    sweep and launch (passed on to their children), and each puts these back after.

    A repeated SIGTERM is the same request (a scheduler delivers it through several paths,
    guard.py) and lets the unwinding finish; a second Ctrl-C interrupts it. A signal the
    parent set to be ignored stays ignored (``nohup``, a shell's ``&``); only the main
    thread can install handlers (a test calling ``main`` from a worker thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        if signum == signal.SIGTERM and stopping:
            return
        stopping = True
        raise Stopped(signum)

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            old[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="harness", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    # Each room keeps its heavy imports (torch, accelerate) inside its commands, so
    # building the parser (and compare, report) stays cheap.
    from harness import hwreport
    from harness.bisect import command as bisect
    from harness.gate import command as compare
    from harness.history import command as history
    from harness.launch import command as launch
    from harness.infer import commands as model_commands
    from harness.run import command as run
    from harness.sweep import command as sweep

    run.add_parsers(sub)
    model_commands.add_parsers(sub)
    launch.add_parser(sub)
    sweep.add_parser(sub)
    compare.add_parser(sub)
    hwreport.add_parser(sub)
    history.add_parser(sub)
    bisect.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from harness.measure.startup import started_as_harness

    if started_as_harness():
        from harness.process.shutdown import skip_final_collection

        skip_final_collection()  # first registered: runs after every other exit handler
    args, extra = parser().parse_known_args(argv)
    if extra and args.command in ("run", "validate", "evaluate", "bench-inference") \
            and not any(e.startswith("-") for e in extra):
        # Positionals after an option (`run CONFIG --output DIR KEY=VALUE`) are still positionals.
        if args.command in ("run", "evaluate", "bench-inference"):
            args.items, extra = list(args.items) + extra, []
        elif all("=" in e for e in extra):
            args.overrides, extra = list(args.overrides) + extra, []
    if extra and args.command != "launch":
        parser().parse_args(argv)  # reports the unknown arguments and exits 2
    if extra:
        args.items = list(args.items) + extra  # e.g. --output DIR, passed on to `harness run`
    from harness.launch import command as launch

    # Only a run reports its status to `harness launch`, which started it.
    note_exit = launch.note_exit if args.command == "run" else (lambda code, message=None: None)
    if args.command == "run":
        launch.note_start()
    # Each status is noted before the process group is torn down: the teardown is what
    # makes the other ranks fail, and the launch blames the rank whose note came first.
    try:
        with _signals_unwind():
            code = args.func(args)
        note_exit(code, getattr(args, "exit_message", None))
    except BadInput as err:
        note_exit(EXIT_BAD_INPUT, error_line(err))
        print(error_line(err), file=sys.stderr)
        code = EXIT_BAD_INPUT
    except KeyboardInterrupt as err:
        # Stopped, guard.SecondSignal and sweep.SweepStopped carry the signal; a bare one was
        # raised where no handler of ours was installed (a worker thread).
        signum = getattr(err, "signum", signal.SIGINT)
        note_exit(128 + signum)
        if not hasattr(err, "signum"):
            raise
        print(f"error: {err}", file=sys.stderr)
        code = 128 + signum
    except OSError as err:
        if not _is_disk_full(err):
            note_exit(EXIT_FAILED, f"error: {type(err).__name__}: {err}".splitlines()[0])
            raise
        note_exit(EXIT_FAILED, f"error: {err}")
        print(f"error: {err}", file=sys.stderr)  # the run failed; its last good report stays
        code = EXIT_FAILED
    except BaseException as err:
        note_exit(err.code if isinstance(err, SystemExit) and isinstance(err.code, int) else EXIT_FAILED,
                  f"error: {type(err).__name__}: {err}".splitlines()[0])
        raise
    finally:
        _destroy_process_group()
    return code


def _is_disk_full(err: OSError) -> bool:
    from harness.files.atomic import DiskFull

    return isinstance(err, DiskFull)


def _destroy_process_group() -> None:
    if "torch.distributed" not in sys.modules:  # never started one; importing torch costs seconds
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
