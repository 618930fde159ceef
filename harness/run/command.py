"""``harness run``, ``harness validate`` and ``harness env``: their arguments and what each does.

A run's heavy imports (torch, accelerate) stay inside the commands, so building the
parser costs nothing (``harness --help``, ``harness compare``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.args import OneLineParser, split_positionals
from harness.report.columns import aligned
from harness.errors import EXIT_OK, BadInput


def add_parsers(sub) -> None:
    """``run``, ``validate`` and ``env`` on the ``harness`` parser's subcommands."""
    run_parser(sub)

    val = sub.add_parser("validate", help="check a config and build its data and model; train nothing")
    val.add_argument("config")
    val.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    val.set_defaults(func=cmd_validate)

    env = sub.add_parser("env", help="print the environment block of a report")
    env.set_defaults(func=cmd_env)


def run_parser(sub) -> argparse.ArgumentParser:
    """The ``run`` subcommand and its arguments, added to ``sub``."""
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
    return run


def parse_run_args(run_args: list[str]) -> argparse.Namespace:
    """``harness run RUN_ARGS`` parsed as the ``harness`` command would (same one-line
    errors, same exit 2), for a launcher that passes them on to its ranks."""
    p = OneLineParser(prog="harness")
    run_parser(p.add_subparsers(dest="command", required=True))
    return p.parse_args(["run", *run_args])


def cmd_run(args) -> int:
    _warn_single_process_launch()
    config_path, overrides = split_positionals(args.items)
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
    from harness.measure import startup

    with startup.collector_paused():  # the heavy imports: torch, torchvision, the run's code
        from harness.config.run import load_config
        from harness.run.runner import execute
    startup.mark_imported()  # the interpreter, torch, accelerate and the run's code: timing.setup.import_s
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
        print(summary_table(report, output / "report.yaml"))
        if report.get("error"):
            print(f"error: {report['error']}", file=sys.stderr)
    if code and report.get("error"):
        args.exit_message = f"error: {report['error']}".splitlines()[0]  # for `harness launch`
    return code


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
        print(summary_table(report, output / "report.yaml"))
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


def summary_table(report: dict, path: Path) -> str:
    """The table `harness run` prints as it ends: the headline figures and where the report is."""
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
        *([("train tokens/s", fmt(thr["tokens_per_s"], ",.1f"))] if "tokens_per_s" in thr else []),
        *([("test loss (nats/token)", fmt(acc["test_loss"], ".4f"))] if "test_perplexity" in acc else []),
        ("step time p50 (ms)", fmt(step.get("p50"), ".3f")),
        *_conditions_rows(report),
        ("data wait fraction", fmt(report.get("data_wait_fraction"), ".3f")),
        ("peak RSS (MB)", fmt(mem.get("peak_rss_mb"), ",.1f") + " (main process)"),
        ("peak PSS (MB)", fmt(mem.get("peak_pss_mb"), ",.1f") + " (with workers)"),
        ("total wall (s)", fmt(report["timing"].get("total_wall_s"), ".2f")),
        ("report", str(path)),
    ]
    return "\n".join(aligned([list(row) for row in rows]))


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
    if "MASTER_ADDR" in os.environ and "ACCELERATE_USE_CPU" in os.environ and "WORLD_SIZE" not in os.environ:
        print("warning: this is a single process although accelerate launch was given --num_processes > 1 "
              "(with --cpu it starts one); for several CPU processes use `harness launch --mode ddp --nproc N`",
              file=sys.stderr)


def cmd_validate(args) -> int:
    from harness.config.run import load_config
    from harness.run.build import build

    cfg = load_config(args.config, args.overrides)
    # One process checks the recipe; sharding is the launch's to give (fsdp2 needs its ranks).
    cfg.runtime.sharding = "none"
    b = build(cfg)
    sizes = b.data.sizes()
    if b.text:
        c = b.data.corpus
        print(f"{args.config}: ok — {c['source']} ({c['size_bytes']:,} bytes, {c['tokens']:,} tokens of "
              f"{c['tokenizer']}), vocabulary {b.data.vocab_size}, windows of {b.data.seq_len} tokens, split "
              f"{sizes['train']}/{sizes['dev']}/{sizes['test']} windows; model {cfg.model.name} with "
              f"{b.model_info['parameters']:,} parameters")
        return EXIT_OK
    print(f"{args.config}: ok — {b.data.source}, {b.data.num_classes} classes, sample shape "
          f"{tuple(b.data.sample_shape)}, split {sizes['train']}/{sizes['dev']}/{sizes['test']}; "
          f"model {cfg.model.name} with {b.model_info['parameters']:,} parameters")
    return EXIT_OK


def cmd_env(args) -> int:
    from harness.measure import environment
    from harness.report.io import dump

    print(dump({"environment": environment.collect()}), end="")
    return EXIT_OK
