"""Run modes without starting processes: what `harness launch` runs, modes the machine cannot give."""

from __future__ import annotations

import pytest
import torch

from conftest import run_cli
from harness.accel import RuntimeConfig, resolve_device
from harness.errors import BadInput

CONFIG = "configs/digits_cnn.yaml"


# -- bad modes are bad input -------------------------------------------------------------

def test_fp16_without_cuda_exits_2_with_one_line(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("run", CONFIG, "runtime.device=cpu", "runtime.precision=fp16", "--output", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: runtime.precision: fp16 needs a CUDA GPU; on the CPU use bf16 or no"]
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_without_cuda_exits_2(tmp_path):
    proc = run_cli("launch", "--mode", "gpu", CONFIG, "--output", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert "runtime.device: gpu was asked for but CUDA is not available" in proc.stderr


def test_launch_checks_the_config_before_starting_processes(tmp_path):
    proc = run_cli("launch", "--mode", "ddp", "--nproc", "2", CONFIG, "loader.batch_size=-4",
                   "--output", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {CONFIG}: loader.batch_size: expected an integer > 0, got -4"]


def test_launch_puts_the_modes_overrides_before_run_options():
    from harness.launch import build_command

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
