"""Run modes without starting processes: launch files, mode settings, compile and scaler counting."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from support.paths import REPO
from support.recipes import CONFIG
from harness.cli import main
from harness.run.accel import CompileConfig, RuntimeConfig, resolve_device
from harness.config.run import load_config
from harness.errors import BadInput
from harness.measure.compile_stats import CompileTracker

LAUNCH_FILES = sorted((REPO / "launch").glob("*.yaml"))


# -- launch/ ---------------------------------------------------------------------------

def test_launch_folder_has_every_mode():
    names = {p.name for p in LAUNCH_FILES}
    assert names == {"cpu.yaml", "cpu-ddp.yaml", "single-gpu.yaml", "multi-gpu.yaml", "multi-node.yaml"}
    assert (REPO / "launch" / "slurm.sbatch").is_file() and (REPO / "launch" / "README.md").is_file()


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.stem)
def test_accelerate_accepts_the_launch_file(path):
    """accelerate's own loader reads it (unknown keys are refused there), and its launch
    validation turns it into launcher arguments without complaint."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    cfg = load_config_from_file(str(path))
    assert isinstance(cfg, ClusterConfig)
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "harness", "run"])
    args, defaults, _ = _validate_launch_command(args)
    assert defaults is not None and args.mixed_precision == "no" and args.dynamo_backend == "no"
    # Which launcher accelerate picks decides how many processes really start.
    many = path.stem in ("cpu-ddp", "multi-gpu", "multi-node")
    assert args.multi_gpu is many, "only the multi-process launcher starts N processes"
    assert (args.num_processes >= 2) is many
    assert args.use_cpu is path.stem.startswith("cpu")
    if path.stem == "multi-node":
        assert args.num_machines == 2 and args.num_processes % args.num_machines == 0


def test_slurm_script_is_valid_bash():
    proc = subprocess.run(["bash", "-n", str(REPO / "launch" / "slurm.sbatch")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _run_slurm_script(tmp_path: Path, **slurm_env: str) -> list[list[str]]:
    """The script under stand-ins for srun, scontrol and python: each python call's arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir / "scontrol", 'printf "gpu-node-07\\ngpu-node-08\\n"\n')
    # srun: drop its own options and run the command as node 1 would.
    _stub(bin_dir / "srun", 'while [[ $1 == --* ]]; do shift; done\nSLURM_NODEID=1 SLURM_PROCID=1 exec "$@"\n')
    _stub(bin_dir / "python", 'printf "CALL\\n"; printf "%s\\n" "$@"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update({"PATH": f"{bin_dir}:{os.environ['PATH']}", "HARNESS_PYTHON": str(bin_dir / "python"),
                "SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": "gpu-node-[07-08]",
                "HARNESS_EXIT_ROOT": str(tmp_path / "exits"), **slurm_env})
    proc = subprocess.run(["bash", str(REPO / "launch" / "slurm.sbatch"), CONFIG, "train.epochs=1",
                           "--output", "runs/x"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    calls = [c.strip("\n").splitlines() for c in proc.stdout.split("CALL\n") if c.strip()]
    assert calls[0][:3] == ["-m", "harness.launch.slurm_job", "preflight"]  # bad input refused once, first
    assert calls[-1][:3] == ["-m", "harness.launch.slurm_job", "exits"]  # the failing rank's line, last
    return calls


def test_slurm_script_builds_each_nodes_launch_line(tmp_path):
    calls = _run_slurm_script(tmp_path, SLURM_NNODES="2", SLURM_GPUS_ON_NODE="4", SLURM_NTASKS_PER_NODE="1")
    args = calls[1]
    assert args[:2] == ["-m", "accelerate.commands.launch"]
    flag = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
    assert flag["--num_machines"] == "2"
    assert flag["--num_processes"] == "8"  # 2 nodes x 4 GPUs, not x 1 task
    assert flag["--machine_rank"] == "1"
    assert flag["--main_process_ip"] == "gpu-node-07"
    assert flag["--main_process_port"] == str(29500 + 456)
    assert args[-6:] == ["harness", "run", CONFIG, "train.epochs=1", "--output", "runs/x"]


@pytest.mark.parametrize("slurm_env,per_node", [
    ({"SLURM_NTASKS_PER_NODE": "2", "SLURM_CPUS_ON_NODE": "2"}, 2),  # a CPU node: one per task asked
    ({"SLURM_CPUS_ON_NODE": "3"}, 3),                                # else one per CPU the job holds
    ({"SLURM_GPUS_ON_NODE": "0", "SLURM_CPUS_ON_NODE": "1"}, 1),     # one CPU: a plain harness run
])
def test_slurm_script_counts_processes_from_the_allocation_never_eight(tmp_path, slurm_env, per_node):
    calls = _run_slurm_script(tmp_path, SLURM_NNODES="1", **slurm_env)
    args = calls[1]
    if per_node == 1:
        assert args == ["-m", "harness", "run", CONFIG, "train.epochs=1", "--output", "runs/x"]
    else:
        assert args[args.index("--num_processes") + 1] == str(per_node)


# -- bad modes are bad input -------------------------------------------------------------

def test_fp16_without_cuda_exits_2_with_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", CONFIG, "runtime.device=cpu", "runtime.precision=fp16", "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: runtime.precision: fp16 needs a CUDA GPU; on the CPU use bf16 or no"]
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_without_cuda_exits_2(tmp_path, capsys):
    assert main(["launch", "--mode", "gpu", CONFIG, "--output", str(tmp_path / "out")]) == 2
    assert "runtime.device: gpu was asked for but CUDA is not available" in capsys.readouterr().err


def test_launch_checks_the_config_before_starting_ranks(tmp_path, capsys, monkeypatch):
    """On one node the launcher's process runs the preflight (accelerate_launch.py) before
    accelerate's launcher: a bad config is its one line and exit 2, and no rank starts."""
    import subprocess

    from harness.launch.command import PREFLIGHT_ENV

    started, popen = [], subprocess.Popen

    def counted(cmd, **kwargs):
        started.append((cmd, kwargs.get("env") or {}))
        return popen(cmd, **kwargs)

    monkeypatch.setattr("subprocess.Popen", counted)
    assert main(["launch", "--mode", "ddp", "--nproc", "2", CONFIG, "loader.batch_size=-4",
                 "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: override 'loader.batch_size=-4': loader.batch_size: expected an integer > 0, got -4"]
    ((cmd, env),) = started  # the launcher alone: the ranks would be its children, and fail otherwise
    assert cmd[1:3] == ["-m", "harness.launch.accelerate_launch"] and PREFLIGHT_ENV in env
    assert not (tmp_path / "out").exists()


def test_launch_puts_the_modes_overrides_before_run_options():
    from harness.launch.command import build_command

    cmd = build_command("cpu", 1, [CONFIG, "--output", "runs/x", "train.epochs=1"], precision="bf16")
    run = cmd[cmd.index("harness") + 1:]
    assert run == ["run", CONFIG, "train.epochs=1", "runtime.device=cpu", "runtime.precision=bf16",
                   "--output", "runs/x"]


def test_a_cpu_launcher_overrides_device_auto(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    assert resolve_device(RuntimeConfig(device="auto")) is False
    with pytest.raises(BadInput, match="the launcher asked for the CPU"):
        resolve_device(RuntimeConfig(device="gpu"))


def test_the_optimizer_step_asks_importlib_about_lomo_once(monkeypatch):
    import accelerate.optimizer as optimizer_module
    import importlib.util

    from harness.run.accel import keep_lomo_answer

    original = optimizer_module.is_lomo_available
    monkeypatch.setattr(optimizer_module, "is_lomo_available", getattr(original, "__wrapped__", original))
    asked = []
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: asked.append(name) or find_spec(name, *a))
    keep_lomo_answer()
    answers = {bool(optimizer_module.is_lomo_available()) for _ in range(3)}
    assert asked.count("lomo_optim") == 1
    assert answers == {find_spec("lomo_optim") is not None}


@pytest.mark.parametrize("overrides, key", [
    (["runtime.compile.fail_on_recompile=true"], "runtime.compile.fail_on_recompile: needs"),
    (["runtime.compile.enabled=true", "runtime.compile.backend=eager", "runtime.compile.mode=max-autotune"],
     "runtime.compile.mode: max-autotune needs backend inductor"),
    (["runtime.compile.enabled=true", "measure.warmup_steps=0"], "measure.warmup_steps: expected >= 1"),
    (["runtime.compile.backend=tvm"], "runtime.compile.backend: expected one of"),
])
def test_compile_settings_are_validated(overrides, key):
    with pytest.raises(BadInput, match=key):
        load_config(CONFIG, overrides)


# -- the meter's window edges -----------------------------------------------------------

def test_meter_tells_its_hooks_where_the_window_opens_and_closes():
    """Hooks see the window's segments only: warm-up steps and the steps after it are outside."""
    from harness.measure.config import MeasureConfig
    from harness.measure.meter import Meter

    class Recorder:
        def __init__(self):
            self.events, self.inside = [], False

        def window_opened(self):
            self.events.append("open")
            self.inside = True

        def window_closed(self):
            self.events.append("close")
            self.inside = False

    hook = Recorder()
    meter = Meter(MeasureConfig(warmup_steps=2, window_steps=3), torch.device("cpu"), hooks=[hook])
    batches = [(torch.zeros(4, 2), torch.zeros(4)) for _ in range(7)]
    inside = [hook.inside for _ in meter.steps(batches[:4])]  # epoch 1: 2 warm-up + 2 timed
    inside += [hook.inside for _ in meter.steps(batches[4:])]  # epoch 2: 1 timed + 2 after the window
    assert inside == [False, False, True, True, True, False, False]
    assert hook.events == ["open", "close", "open", "close"]
    assert meter.summary()["pid"] == os.getpid()


# -- compile tracking --------------------------------------------------------------------

def tracked(**compile_cfg) -> CompileTracker:
    torch._dynamo.reset()  # forgets earlier tests' graphs (and clears registered callbacks)
    return CompileTracker(CompileConfig(enabled=True, backend="eager", **compile_cfg))


def _compiled_linear(dynamic):
    return torch.compile(nn.Linear(4, 2), backend="eager", dynamic=dynamic)


def test_tracker_counts_a_recompile_and_places_it_in_the_window():
    tracker = tracked(dynamic=False)
    try:
        model = _compiled_linear(dynamic=False)
        model(torch.randn(8, 4))  # first compile, before the window
        tracker.window_opened()
        model(torch.randn(8, 4))  # cached
        model(torch.randn(3, 4))  # a new batch size: recompile, in the window
        tracker.window_closed()
        model(torch.randn(3, 4))  # cached
    finally:
        s = tracker.summary()
    assert s["compiles"] == 2 and s["recompiles"] == 1 and s["recompiles_in_window"] == 1
    assert s["compile_time_s"] >= s["compile_time_in_window_s"] > 0


def test_fail_on_recompile_raises_only_inside_the_window():
    tracker = tracked(dynamic=False, fail_on_recompile=True)
    try:
        model = _compiled_linear(dynamic=False)
        model(torch.randn(8, 4))
        model(torch.randn(5, 4))  # outside the window: allowed
        tracker.window_opened()
        with pytest.raises(Exception, match="[Rr]ecompil"):
            model(torch.randn(3, 4))
        tracker.window_closed()
        assert torch._dynamo.config.error_on_recompile is False
        model(torch.randn(3, 4))  # after the window: allowed again
    finally:
        tracker.close()


def test_marked_batch_dimension_does_not_recompile_for_a_short_last_batch():
    from harness.run.accel import DynamicBatchDim

    tracker = tracked()
    try:
        model = _compiled_linear(dynamic=None)
        for x, _ in DynamicBatchDim([(torch.randn(8, 4), 0), (torch.randn(8, 4), 0), (torch.randn(3, 4), 0)]):
            model(x)
    finally:
        s = tracker.summary()
    assert s["compiles"] == 1 and s["recompiles"] == 0


def test_tracker_is_inert_when_compile_is_off():
    torch._dynamo.reset()
    tracker = CompileTracker(CompileConfig())
    _compiled_linear(dynamic=False)(torch.randn(2, 4))
    assert tracker.summary()["compiles"] is None  # null in the report, not a measured 0


# -- fp16 scaler bookkeeping -------------------------------------------------------------

@pytest.mark.parametrize("model_name, skipped", [("finite", 0), ("infinite", 3)])
def test_loop_counts_the_steps_a_gradient_scaler_skipped(model_name, skipped):
    """accelerate's fp16 scaler is a CUDA one; here a CPU GradScaler is put in its place so
    the loop's count is checked against accelerate's real optimizer wrapper on any machine."""
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    from harness.run.guard import StepGuard, StopSignals
    from harness.run.loop import TrainParts, train_epoch
    from harness.measure.config import MeasureConfig
    from harness.measure.meter import NullMeter
    from fixtures.mode_models import InfiniteGradients

    acc = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = InfiniteGradients(1, (2, 2), 3) if model_name == "infinite" else nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    model, opt = acc.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    scaler = torch.amp.GradScaler("cpu")
    acc.scaler = scaler
    opt = AcceleratedOptimizer(opt.optimizer, scaler=scaler)
    acc._optimizers = [opt]
    batches = [(torch.randn(4, 1, 2, 2), torch.randint(0, 3, (4,))) for _ in range(3)]
    parts = TrainParts(acc, model, opt, None, nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="none"))
    guard = StepGuard(acc, StopSignals())
    result = train_epoch(parts, batches, NullMeter(MeasureConfig(warmup_steps=0), acc.device), guard)
    assert result.steps == 3 and result.skipped_steps == skipped
    assert result.stop is None  # skipped steps have infinite gradients, not a non-finite loss
