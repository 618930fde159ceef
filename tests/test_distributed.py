"""Run modes with real processes: CPU DDP over gloo, torchrun, gradient and mode parity, compile.

Every multi-process test starts real OS processes on loopback, as a user would
(``harness launch``, ``accelerate launch``, ``torchrun``); nothing is simulated.
GPU tests skip cleanly without CUDA.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from support.cli import run_cli
from support.paths import REPO
from support.recipes import CONFIG, TINY
from harness.cli import main
from harness.launch.command import free_port
from harness.report.io import load_report

# Runs here measure modes, not the machine: skip the matmul peak, keep checkpoints out.
QUIET = [*TINY, "measure.measure_peak=false", "output.checkpoint_every_epoch=false"]
ON_CPU = [*QUIET, "runtime.device=cpu"]  # CPU tests stay on the CPU on a GPU machine too
LAUNCH_TIMEOUT_S = 300  # a hung rank fails the test instead of the whole suite

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")


def run_module(*args: str, timeout: float = LAUNCH_TIMEOUT_S, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m ARGS`` from the repository root, output captured."""
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def accelerate_launch(config_file: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_module("accelerate.commands.launch", "--config_file", config_file, *args, env=env)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def assert_two_gloo_ranks(report: dict) -> None:
    dist = report["distributed"]
    assert dist["world_size"] == 2
    assert dist["backend"] == "gloo"
    assert dist["distributed_type"] == "MULTI_CPU"
    ranks = report["per_rank"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["pid"] != ranks[1]["pid"], "both ranks ran in one OS process"


# -- CPU DDP through the launchers --------------------------------------------------

@pytest.mark.slow
@pytest.mark.distributed
def test_harness_launch_ddp_runs_two_gloo_processes(tmp_path):
    """`harness launch --mode ddp --nproc 2` on a CPU-only machine: two real gloo ranks. On one
    node the launcher's process runs the preflight, so `harness launch` itself never imports torch."""
    probe = ("import sys; from harness.cli import main; code = main(sys.argv[1:]); "
             "print('launch imported torch:', 'torch' in sys.modules); sys.exit(code)")
    proc = ok(subprocess.run([sys.executable, "-c", probe, "launch", "--mode", "ddp", "--nproc", "2", CONFIG,
                              *ON_CPU, "--output", str(tmp_path)],
                             cwd=REPO, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S))
    assert "launch imported torch: False" in proc.stdout
    report = load_report(tmp_path)
    assert report["status"] == "completed"
    assert_two_gloo_ranks(report)
    ranks, thr = report["per_rank"], report["throughput"]
    # Both ranks stepped through the window in lock-step and contributed samples.
    assert ranks[0]["steps"] == ranks[1]["steps"] == thr["measured_steps"] > 0
    assert all(r["samples"] > 0 for r in ranks)
    assert thr["measured_samples"] == ranks[0]["samples"] + ranks[1]["samples"]
    assert thr["global_batch_size"] == 2 * 32
    # Issue 3: global rate = every rank's samples / the slowest rank's window, recomputed here.
    slowest = max(r["window_s"] for r in ranks)
    assert thr["window_s"] == slowest
    assert thr["samples_per_s"] == pytest.approx(sum(r["samples"] for r in ranks) / slowest, rel=1e-12)
    # ...which is not rank 0's rate times the world size unless the ranks took equally long.
    assert report["imbalance"] == pytest.approx(slowest / min(r["window_s"] for r in ranks), rel=1e-12)
    # Only the main process prints its summary.
    assert proc.stdout.count("best dev accuracy") == 1


@pytest.mark.slow
@pytest.mark.distributed
def test_harness_launch_ddp_trains_the_language_model_in_tokens(tmp_path):
    """configs/tiny_gpt.yaml on two gloo ranks: one report, tokens counted across ranks, every
    test window counted once (the distributed sampler's padding dropped)."""
    from types import SimpleNamespace

    from harness.data.text import build_text_data

    proc = ok(run_cli("launch", "--mode", "ddp", "--nproc", "2", "configs/tiny_gpt.yaml", "train.max_steps=16",
                      "measure.warmup_steps=4", "measure.measure_peak=false", "output.save_model=false",
                      "output.checkpoint_every_epoch=false", "output.progress=false", "runtime.device=cpu",
                      "--output", str(tmp_path), timeout=LAUNCH_TIMEOUT_S))
    report = load_report(tmp_path)
    assert report["status"] == "completed", proc.stderr[-2000:]
    assert_two_gloo_ranks(report)
    thr = report["throughput"]
    # batch_size 16 windows of 64 tokens on each of two ranks per optimizer step
    assert thr["tokens_per_step"] == 2 * 16 * 64
    assert thr["tokens_per_s"] > 0
    text = build_text_data(None, 64, SimpleNamespace(train=0.9, dev=0.05, test=0.05))
    assert report["accuracy"]["test_tokens"] == len(text.test) * 64


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_gives_world_size_two_and_one_report(tmp_path):
    proc = ok(run_module("torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                         "-m", "harness", "run", CONFIG, *ON_CPU, "train.epochs=1", "--output", str(tmp_path)))
    report = load_report(tmp_path)
    assert report["status"] == "completed"
    assert_two_gloo_ranks(report)
    # One report and one summary: rank 1 neither writes nor prints.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.json", "config.yaml", "metrics.jsonl", "model.pt",
                                                          "report.yaml"]
    assert proc.stdout.count("best dev accuracy") == 1


# -- gradient parity -----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_step_matches_a_single_process_step_on_the_global_batch(tmp_path):
    """Two gloo ranks, each on its half of one global batch, end one SGD step where one
    process ends on the whole batch: DDP averages the ranks' gradients."""
    from torch import nn

    from fixtures.ddp_parity_worker import LR, global_batch, tiny_model

    ok(accelerate_launch("launch/cpu-ddp.yaml", "tests/fixtures/ddp_parity_worker.py", str(tmp_path)))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2 and r0["backend"] == "gloo"
    assert r0["wrapped"] == "DistributedDataParallel" and r0["pid"] != r1["pid"]
    x, y = global_batch()
    assert torch.equal(r0["inputs"], x[:4]) and torch.equal(r1["inputs"], x[4:]), "each rank gets its half"
    assert r0["steps"] == r1["steps"] == 1

    def one_step(inputs, targets) -> dict:
        model = tiny_model()
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        nn.CrossEntropyLoss()(model(inputs), targets).backward()
        opt.step()
        return model.state_dict()

    initial, reference, half_only = tiny_model().state_dict(), one_step(x, y), one_step(x[:4], y[:4])
    for name, ref in reference.items():
        assert torch.equal(r0["state"][name], r1["state"][name]), f"replicas diverged at {name}"
        assert torch.allclose(r0["state"][name], ref, rtol=0, atol=1e-6), name
    # The comparison can fail: the step moved the weights, and a rank that stepped on its
    # own half (no all-reduce) would be far outside the tolerance.
    moved = max((reference[k] - initial[k]).abs().max().item() for k in reference)
    apart = max((half_only[k] - reference[k]).abs().max().item() for k in reference)
    assert moved > 1e-2 and apart > 1e-3


# -- mode parity ---------------------------------------------------------------------

# The default recipe for 4 of its 30 epochs, seed 0, the same global batch of 64 in every
# mode: DDP runs 2 x 32 (loader.batch_size is per device), so every mode takes the same
# optimizer steps on the same samples; what differs is the mode: gradients averaged over
# two ranks, bf16 activations, and rank 1 drawing its own augmentation.
# Final dev accuracy (270 images, one image = 0.0037) measured on a 2-core CPU:
#   seed 0: cpu 0.930, ddp 0.937, bf16 0.926 (spread 0.011)
#   seed 1: cpu 0.926, ddp 0.937, bf16 0.930 (spread 0.011)
#   seed 2: cpu 0.915, ddp 0.956, bf16 0.915 (spread 0.041)
# Four epochs are not converged, so a run moves by a few images with any change of its
# random draws; the tolerance, 0.05, sits above the largest spread seen (0.041) so that
# another CPU's rounding does not fail it, and far below a mode that does not train (0.1).
PARITY_EPOCHS = 4
PARITY_TOLERANCE = 0.05
PARITY = ["output.progress=false", "output.checkpoint_every_epoch=false", "output.save_model=false",
          "measure.measure_peak=false", f"train.epochs={PARITY_EPOCHS}", "seed=0"]


@pytest.mark.slow
@pytest.mark.distributed
def test_cpu_ddp_and_bf16_reach_the_same_dev_accuracy(tmp_path):
    runs = {
        "cpu": ("launch/cpu.yaml", []),
        "ddp": ("launch/cpu-ddp.yaml", ["runtime.device=cpu", "loader.batch_size=32"]),
        "bf16": ("launch/cpu.yaml", ["runtime.precision=bf16"]),
    }
    # The three runs at once, each process on one torch thread (as the DDP ranks are): this
    # CNN's steps are too small to share between threads, and nothing here is timed.
    with ThreadPoolExecutor(len(runs)) as pool:
        procs = {name: pool.submit(accelerate_launch, config_file, "-m", "harness", "run", CONFIG, *PARITY, *extra,
                                   "--output", str(tmp_path / name), env={"OMP_NUM_THREADS": "1"})
                 for name, (config_file, extra) in runs.items()}
    acc = {}
    for name, proc in procs.items():
        ok(proc.result())
        report = load_report(tmp_path / name)
        acc[name] = report["accuracy"]["final_dev_accuracy"]
        assert report["distributed"]["world_size"] == (2 if name == "ddp" else 1)
        assert report["distributed"]["precision"] == ("bf16" if name == "bf16" else "no")
        assert report["throughput"]["global_batch_size"] == 64
    print(f"mode parity, final dev accuracy after {PARITY_EPOCHS} epochs: {acc}")
    assert max(acc.values()) - min(acc.values()) <= PARITY_TOLERANCE, acc
    assert min(acc.values()) > 0.85, acc


# -- compile -------------------------------------------------------------------------

@pytest.mark.slow
def test_compile_smoke_reports_compile_time_and_recompiles(tmp_path):
    """inductor on the CPU: the compile lands in warm-up, none in the timed window, even
    though the last train batch (252 = 7 x 32 + 28) has another size.

    The model is the two-layer TinyNet, not the recipe's CNN: what is checked is how the
    harness times and counts compiles, which does not depend on the model, and inductor
    generates and builds C++ for every kernel. On a cold cache (a fresh machine, as CI's)
    the CNN's run took 40 s of CPU, TinyNet's 18 (idle, TORCHINDUCTOR_CACHE_DIR empty)."""
    assert main(["run", CONFIG, *ON_CPU, "runtime.compile.enabled=true", "runtime.compile.fail_on_recompile=true",
                 "model.name=fixtures.custom_models:TinyNet", "--output", str(tmp_path)]) == 0
    report = load_report(tmp_path)
    block = report["compile"]
    print(f"compile: {block}")
    assert report["status"] == "completed"
    assert block["enabled"] and block["backend"] == "inductor"
    assert block["compile_time_s"] > 0 and block["compiles"] >= 1
    assert block["recompiles_in_window"] == 0 and block["compile_time_in_window_s"] == 0
    # Evaluation (eval mode, no grad) compiles its own graph: a recompile, outside the window.
    assert block["recompiles"] >= 1
    assert not any("compil" in w for w in report["warnings"])
    assert report["throughput"]["samples_per_s"] > 0


@pytest.mark.slow
def test_fail_on_recompile_stops_a_run_that_recompiles_in_the_window(tmp_path):
    """dynamic: false specialises the batch size, so the last train batch of 28 recompiles
    inside the window. The eager backend traces without generating code: quick."""
    compile_args = ["runtime.compile.enabled=true", "runtime.compile.backend=eager", "runtime.compile.dynamic=false"]
    assert main(["run", CONFIG, *ON_CPU, *compile_args, "--output", str(tmp_path / "counted")]) == 0
    counted = load_report(tmp_path / "counted")["compile"]
    assert counted["recompiles_in_window"] == 1, counted
    assert any("inside the timed window" in w for w in load_report(tmp_path / "counted")["warnings"])

    out = tmp_path / "strict"
    assert main(["run", CONFIG, *ON_CPU, *compile_args, "runtime.compile.fail_on_recompile=true",
                 "--output", str(out)]) == 1
    report = load_report(out)
    assert report["status"] == "failed"
    assert "RecompileError" in report["error"] and "size mismatch" in report["error"]


# -- GPU modes (skipped without CUDA) ------------------------------------------------------

@pytest.mark.gpu
@needs_cuda
def test_gpu_mode_runs_on_the_gpu(tmp_path):
    ok(run_cli("launch", "--mode", "gpu", CONFIG, *QUIET, "--output", str(tmp_path), timeout=LAUNCH_TIMEOUT_S))
    report = load_report(tmp_path)
    assert report["distributed"]["device"].startswith("cuda")
    assert report["distributed"]["world_size"] == 1
    assert report["memory"]["device_peak_allocated_mb"] > 0


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_mixed_precision(tmp_path, precision):
    assert main(["run", CONFIG, *QUIET, "runtime.device=gpu", f"runtime.precision={precision}",
                 "--output", str(tmp_path)]) == 0
    report = load_report(tmp_path)
    assert report["distributed"]["mixed_precision"] == precision
    skipped = report["distributed"]["scaler_skipped_steps"]
    if precision == "bf16":
        assert skipped is None  # no scaler
    else:  # the scaler may skip a few early steps while it finds its scale, never all
        steps = report["throughput"]["measured_steps"] + report["throughput"]["warmup_steps"]
        assert isinstance(skipped, int) and 0 <= skipped < steps


@pytest.mark.gpu
@needs_cuda
def test_fp16_counts_every_step_the_scaler_skips(tmp_path):
    """A model whose gradients are always infinite: the scaler skips every step."""
    steps = 5
    assert main(["run", CONFIG, *QUIET, "runtime.device=gpu", "runtime.precision=fp16",
                 "model.name=fixtures.mode_models:InfiniteGradients", f"train.max_steps={steps}", "train.epochs=1",
                 "--output", str(tmp_path)]) == 0
    assert load_report(tmp_path)["distributed"]["scaler_skipped_steps"] == steps


@pytest.mark.gpu
@pytest.mark.distributed
@needs_two_gpus
def test_multi_gpu_ddp_uses_nccl(tmp_path):
    ok(run_cli("launch", "--mode", "ddp", "--nproc", "2", CONFIG, *QUIET, "runtime.device=gpu",
               "--output", str(tmp_path), timeout=LAUNCH_TIMEOUT_S))
    report = load_report(tmp_path)
    assert report["distributed"]["world_size"] == 2
    assert report["distributed"]["backend"] == "nccl"
    assert report["per_rank"][0]["pid"] != report["per_rank"][1]["pid"]
