"""The ``harness`` command. Parses, builds, runs, closes; the work is elsewhere.

Exit status: 0 success, 1 a run that failed (its report says why), 2 bad input
(one line on stderr naming the key, file or layer; nothing written).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from harness.errors import BadInput

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _split_positionals(items: list[str]) -> tuple[str | None, list[str]]:
    """``[CONFIG] [KEY=VALUE ...]``: the config is the one positional without '='."""
    config = None
    overrides = []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif config is None:
            config = item
        else:
            raise BadInput(f"{item}: a second config file; give one CONFIG and KEY=VALUE overrides")
    return config, overrides


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


def _summary_table(report: dict, path: Path) -> str:
    from harness.report.run_mode import mode_label  # "cpu ×1", "ddp gloo ×2 bf16": the names the report uses
    acc, thr, mem = report["accuracy"], report["throughput"], report.get("memory", {})
    step = report.get("step_time_ms") or {}

    def fmt(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) else "-"

    rows = [
        ("status", report["status"]),
        ("mode", mode_label(report)),
        ("best dev accuracy", fmt(acc.get("best_dev_accuracy"), ".4f")),
        ("test accuracy", fmt(acc.get("test_accuracy"), ".4f")),
        ("train samples/s", fmt(thr.get("train_samples_per_s"), ",.1f") + _why_no_throughput(thr)),
        ("step time p50 (ms)", fmt(step.get("p50"), ".3f")),
        *_conditions_rows(report),
        ("data wait fraction", fmt(report.get("data_wait_fraction"), ".3f")),
        ("peak RSS (MB)", fmt(mem.get("peak_rss_mb"), ",.1f") + " (main process)"),
        ("peak PSS (MB)", fmt(mem.get("peak_pss_mb"), ",.1f") + " (with workers)"),
        ("total wall (s)", fmt(report["timing"].get("total_wall_s"), ".2f")),
        ("report", str(path)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _conditions_rows(report: dict) -> list[tuple[str, str]]:
    """Beside the timings: whether the machine was quiet, and what to do when it was not."""
    from harness.report import conditions

    found = conditions.caveats(report)
    if not found:
        quiet = conditions.quiet_line(report)
        return [("timing conditions", quiet)] if quiet else []
    return [("timing conditions" if i == 0 else "", c.advice) for i, c in enumerate(found)]


def _why_no_throughput(thr: dict) -> str:
    if thr.get("train_samples_per_s") is not None or thr.get("measured_steps") != 0:
        return ""
    return (f" (warm-up took all {thr.get('warmup_steps')} steps: lower measure.warmup_steps "
            "or train longer)")


def _warn_single_process_launch() -> None:
    """``accelerate launch --cpu --num_processes N`` starts one process, not N: its simple
    launcher sets MASTER_ADDR for N > 1 but no WORLD_SIZE, and nothing else says so."""
    import os

    if "MASTER_ADDR" in os.environ and "ACCELERATE_USE_CPU" in os.environ and "WORLD_SIZE" not in os.environ:
        print("warning: this is a single process although accelerate launch was given --num_processes > 1 "
              "(with --cpu it starts one); for several CPU processes use `harness launch --mode ddp --nproc N`",
              file=sys.stderr)


def _run_whole_runs(args, config_path: str | None, overrides: list[str]) -> int:
    """``measure.repeat_unit: run``: N fresh runs and one combined report; this process
    stays torch-free, so each run's PSS is its own (harness/run/repeats.py)."""
    from harness.run import repeats
    from harness.files import run_folder
    from harness.files.lock import RunLock

    repeats.check_can_repeat(bool(args.resume))
    plan = repeats.plan(config_path, overrides, Path(args.output) if args.output else None)
    output = Path(plan["output"])
    if not plan["whole_runs"] or plan["scenario"] != "training":
        return -1  # the YAML asked for whole runs but the validated config does not: the normal path
    run_folder.check_unused(output, args.overwrite, resumable=False)
    with RunLock(output):  # each repeat locks its own repeat_NN/, which --overwrite has cleared
        run_folder.claim(output, args.overwrite, resumable=False)
        report, code = repeats.run_repeats(plan, config_path, overrides, output)
    if report.get("throughput"):
        print(_summary_table(report, output / "report.yaml"))
    return code


def cmd_run(args) -> int:
    _warn_single_process_launch()
    config_path, overrides = _split_positionals(args.items)
    if config_path is None and not overrides and not args.resume:
        # A bare `harness run` (typed by mistake, or to see the usage) must not start a training
        # of the built-in defaults into runs/latest; overrides alone still ask for them.
        raise BadInput("harness run: needs CONFIG (e.g. configs/digits_cnn.yaml), KEY=VALUE overrides "
                       "of the built-in defaults, or --resume DIR (see harness run --help)")
    if args.overwrite and args.resume:
        raise BadInput("--overwrite: not with --resume (a resume continues the run in DIR; "
                       "--overwrite deletes it to start a new one)")
    if not args.resume:
        from harness.run.repeats import asks_whole_runs

        if asks_whole_runs(config_path, overrides):
            code = _run_whole_runs(args, config_path, overrides)
            if code >= 0:
                return code
    from harness.config.run import load_config
    from harness.run.runner import execute

    if args.resume:
        output = Path(args.resume)
        if config_path is None:
            saved = output / "config.yaml"
            if not saved.is_file():
                raise BadInput(f"--resume: {output} holds no config.yaml from an earlier run")
            config_path = str(saved)
    cfg = load_config(config_path, overrides)
    output = Path(args.resume or args.output or cfg.output.dir)
    cfg.output.dir = str(output)
    if cfg.scenario == "inference" and args.resume:
        raise BadInput("--resume: scenario: inference has nothing to resume; run it again")
    if not args.resume and os.environ.get("RANK", "0") == "0":
        # Refused before anything is built; under a launcher rank 0 alone looks (the
        # others would find its config.yaml), and `harness launch` looked already.
        from harness.files import run_folder

        run_folder.check_unused(output, args.overwrite, resumable=cfg.scenario != "inference")
    if cfg.scenario == "inference":
        from harness.infer import bench as inference

        return inference.run_and_print(cfg, output, overwrite=args.overwrite)
    if cfg.measure.repeat_unit == "run" and cfg.measure.repeats > 1:
        # --resume of whole runs is refused there in one line; torch is loaded here: a plain call.
        return _run_whole_runs(args, config_path, overrides)
    resume = _plan_resume(args, cfg, output)
    if resume is None:
        return EXIT_OK
    report, code = execute(cfg, output, resume=resume, overwrite=args.overwrite)
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(_summary_table(report, output / "report.yaml"))
        if report.get("error"):
            print(f"error: {report['error']}", file=sys.stderr)
    if code and report.get("error"):
        args.exit_message = f"error: {report['error']}".splitlines()[0]  # for `harness launch`
    return code


def _plan_resume(args, cfg, output: Path):
    """``execute``'s ``resume``: False (a new run), the checkpoint to load, or True (this run's
    own folder with no complete checkpoint yet: it starts from the first step there, and is
    not refused as another run's folder); None: nothing to do."""
    if not args.resume:
        if args.resume_from:
            raise BadInput("--resume-from: needs --resume DIR (the run to continue)")
        return False
    from harness.run import resume
    from harness.config.run import to_dict

    plan = resume.plan(output, to_dict(cfg), args.resume_from)
    if plan.done:
        resume.say(plan.done)
        return None
    if plan.note:
        resume.say(plan.note)
    return plan.checkpoint or True


def cmd_validate(args) -> int:
    from harness.config.run import load_config
    from harness.run.build import build

    cfg = load_config(args.config, args.overrides)
    b = build(cfg)
    sizes = b.data.sizes()
    print(f"{args.config}: ok — {b.data.source}, {b.data.num_classes} classes, sample shape "
          f"{tuple(b.data.sample_shape)}, split {sizes['train']}/{sizes['dev']}/{sizes['test']}; "
          f"model {cfg.model.name} with {b.model_info['parameters']:,} parameters")
    return EXIT_OK


def cmd_env(args) -> int:
    from harness.measure import environment
    from harness.report.io import dump

    print(dump({"environment": environment.collect()}), end="")
    return EXIT_OK


class OneLineParser(argparse.ArgumentParser):
    """A usage error is bad input like any other: one line naming the option, exit 2 (argparse
    prints the whole usage first, eight lines for `launch`). Subcommands inherit the class."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="harness", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train and measure one recipe, write report.yaml")
    run.add_argument("items", nargs="*", metavar="[CONFIG] [KEY=VALUE ...]",
                     help="a YAML config and dotted overrides such as loader.batch_size=128")
    run.add_argument("--output", help="output folder (default: output.dir of the config)")
    run.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    run.add_argument("--resume-from", metavar="epoch_NNNN",
                     help="with --resume: continue from this (older) checkpoint of DIR instead")
    run.add_argument("--overwrite", action="store_true",
                     help="the output folder holds an earlier run: delete its files first (README: One run per folder)")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="check a config and build its data and model; train nothing")
    val.add_argument("config")
    val.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    val.set_defaults(func=cmd_validate)

    env = sub.add_parser("env", help="print the environment block of a report")
    env.set_defaults(func=cmd_env)

    # Each module keeps its heavy imports (torch, accelerate) inside its commands, so
    # building the parser (and compare, report) stays cheap.
    from harness import hwreport
    from harness.gate import command as compare
    from harness.launch import command as launch
    from harness.infer import commands as model_commands
    from harness.sweep import command as sweep

    model_commands.add_parsers(sub)
    launch.add_parser(sub)
    sweep.add_parser(sub)
    compare.add_parser(sub)
    hwreport.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
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
        one_line = " ".join(str(err).splitlines())  # the contract: one line, whatever the input held
        note_exit(EXIT_BAD_INPUT, f"error: {one_line}")
        print(f"error: {one_line}", file=sys.stderr)
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
