"""FSDP2 (runtime.sharding: fsdp2): real gloo ranks on loopback, against DDP from the same seed.

What is checked: the loss curve DDP follows, the state each rank holds (a half of DDP's
on two ranks; DDP's equal to the arithmetic of parameters, gradients and Adam's two
moments), what the report says ran, a SIGTERM inside an epoch then --resume ending
with DDP's guarantee (model.pt identical to an uninterrupted run), model.pt loading
into an unsharded model, and the bad input refused by name. GPU tests skip cleanly
without CUDA.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.report.io import load_report
from support.cli import run_cli
from support.paths import REPO, TESTS_PATH
from support.recipes import CONFIG, TINY
from support.runs import assert_same_run

pytestmark = pytest.mark.usefixtures("one_thread")

LAUNCH_TIMEOUT_S = 300  # a hung rank fails the test instead of the whole suite
GPT = ["configs/tiny_gpt.yaml", "train.max_steps=20", "measure.warmup_steps=4", "measure.measure_peak=false",
       "output.progress=false", "output.checkpoint_every_epoch=false", "runtime.device=cpu",
       "tracking.every_n_steps=1"]
# The loss curves of FSDP2 and DDP differ only in how the ranks' gradients are summed
# (reduce-scatter of shards against all-reduce of the whole): float rounding. Measured
# here over 20 steps of tiny_gpt: equal to the 5th decimal; 1e-3 leaves room for other CPUs.
LOSS_TOLERANCE = 1e-3
MB = 2 ** 20

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def step_losses(run: Path) -> list[float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [line["train_loss"] for line in lines if line["kind"] == "interval"]


def adam_state_mb(parameters: int, tensors: int) -> float:
    """fp32 parameters, their gradients and Adam's two moments, plus one fp32 step count per tensor."""
    return (4 * parameters * 4 + 4 * tensors) / MB


# -- FSDP2 against DDP -----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp2_follows_ddp_and_holds_half_the_state_per_rank(tmp_path):
    runs = {mode: tmp_path / mode for mode in ("ddp", "fsdp")}
    # The two launches at once: nothing here is timed, and each one's ranks wait on each
    # other in every collective, waits the other launch fills.
    with ThreadPoolExecutor(2) as pool:
        procs = [pool.submit(run_cli, "launch", "--mode", mode, "--nproc", "2", *GPT, "--output", str(out),
                             timeout=LAUNCH_TIMEOUT_S) for mode, out in runs.items()]
    for proc in procs:
        ok(proc.result())
    ddp, fsdp = load_report(runs["ddp"]), load_report(runs["fsdp"])
    assert ddp["distributed"]["sharding"] == "none" and ddp["distributed"]["sharded_modules"] == 0
    assert fsdp["distributed"]["sharding"] == "fsdp2"
    assert fsdp["distributed"]["sharded_modules"] == 2 + 1  # tiny_gpt's two blocks, then the root
    assert fsdp["distributed"]["world_size"] == 2 and fsdp["distributed"]["backend"] == "gloo"

    # The same loss at every one of the 20 steps, and the same test loss (within 2%).
    a, b = step_losses(runs["ddp"]), step_losses(runs["fsdp"])
    assert len(a) == len(b) == 20
    assert max(abs(x - y) for x, y in zip(a, b)) < LOSS_TOLERANCE, (a, b)
    assert fsdp["accuracy"]["test_loss"] == pytest.approx(ddp["accuracy"]["test_loss"], rel=0.02)

    # DDP: every rank holds the whole model: the arithmetic of AdamW over its parameters.
    params = ddp["model"]["parameters"]
    tensors = len(torch.load(runs["ddp"] / "model.pt", weights_only=True)) - 1  # the head is tied to wte
    whole = adam_state_mb(params, tensors)
    assert ddp["memory"]["model_state_mb"] == pytest.approx(whole, rel=1e-3)
    assert ddp["memory"]["model_state"]["params_mb"] == pytest.approx(params * 4 / MB, rel=1e-6)
    # FSDP2 over two ranks: each holds about half (a shard of every tensor).
    for row in fsdp["per_rank"]:
        assert 0.4 <= row["model_state_mb"] / ddp["memory"]["model_state_mb"] <= 0.65, row
    assert fsdp["memory"]["model_state_mb"] == max(r["model_state_mb"] for r in fsdp["per_rank"])
    # The activations a forward keeps do not depend on how the weights are held: FSDP2's count
    # (on an unsharded copy, on the run's device and kernels) reads DDP's.
    assert fsdp["memory"]["saved_for_backward_mb"] == pytest.approx(ddp["memory"]["saved_for_backward_mb"],
                                                                    rel=1e-6)

    # model.pt is the whole model, gathered: the keys and tensors an unsharded GPT loads.
    from harness.models.gpt import GPT as GPTModel

    state = torch.load(runs["fsdp"] / "model.pt", weights_only=True)
    model = GPTModel(256, 64, n_layer=2, n_head=4, d_model=128)
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state)  # strict
    assert all(type(t) is torch.Tensor for t in state.values())
    # ...and `harness evaluate` (one process, unsharded: this one) reads the test loss the ranks reported.
    from harness.cli import main

    assert main(["evaluate", str(runs["fsdp"]), "--output", str(tmp_path / "eval")]) == 0
    import yaml

    evaluation = yaml.safe_load((tmp_path / "eval" / "eval.yaml").read_text())
    assert evaluation["loss"] == pytest.approx(fsdp["accuracy"]["test_loss"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.distributed
def test_sigterm_mid_epoch_under_fsdp2_then_resume_matches_an_uninterrupted_run(tmp_path):
    """Step 3 of a rank's 18 an epoch; the ranks agree to stop at the guard's check (step 10):
    the checkpoint is epoch_0000_step_0010, written as the ranks' shards."""
    def recipe(marker: Path) -> list[str]:
        return [CONFIG, *TINY, "train.epochs=1", "loader.batch_size=8", "runtime.device=cpu",
                "measure.measure_peak=false", "model.name=fixtures.custom_models:SignalAt",
                f"model.kwargs={{step: 3, signum: {int(signal.SIGTERM)}, marker: {marker}}}"]

    env = {"PYTHONPATH": TESTS_PATH}
    whole, part = tmp_path / "whole", tmp_path / "part"
    # The reference run's marker is written before it starts, so it never signals; it runs
    # beside the interrupted run and the refused one (each launch's ranks wait on each other
    # in every collective, waits the other fills) and is awaited before the comparison.
    (tmp_path / "never").write_text("the reference run must not be signalled\n")
    with ThreadPoolExecutor(1) as pool:  # on a failure, waits for the reference to end
        reference = pool.submit(run_cli, "launch", "--mode", "fsdp", "--nproc", "2", *recipe(tmp_path / "never"),
                                "--output", str(whole), env=env, timeout=LAUNCH_TIMEOUT_S)

        proc = run_cli("launch", "--mode", "fsdp", "--nproc", "2", *recipe(tmp_path / "sent"), "--output", str(part),
                       env=env, timeout=LAUNCH_TIMEOUT_S)
        assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
        assert load_report(part)["status"] == "interrupted"
        (ckpt,) = (part / "checkpoints").iterdir()
        assert ckpt.name == "epoch_0000_step_0010"
        assert sorted(p.name for p in (ckpt / "fsdp2").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
        assert not list(ckpt.glob("optimizer*")), "the optimizer's shards go through DCP, not Accelerate"

        # Another world size is refused by name, and leaves the checkpoint as it was.
        proc = run_cli("launch", "--mode", "fsdp", "--nproc", "3", "--resume", str(part), env=env,
                       timeout=LAUNCH_TIMEOUT_S)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "written by 2 ranks" in proc.stderr and "--nproc 2" in proc.stderr
        assert [p.name for p in (part / "checkpoints").iterdir()] == ["epoch_0000_step_0010"]

        ok(run_cli("launch", "--mode", "fsdp", "--nproc", "2", "--resume", str(part), env=env,
                   timeout=LAUNCH_TIMEOUT_S))
        resumed = load_report(part)
        assert (resumed["resumed_from_epoch"], resumed["resumed_from_step_in_epoch"]) == (0, 10)
        assert resumed["distributed"]["sharding"] == "fsdp2"
        ok(reference.result())
    assert_same_run(whole, part)


# -- bad input -------------------------------------------------------------------------


def test_fsdp2_with_one_process_is_refused_by_name_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    from harness.cli import main

    # In this process, as `harness run` would: refused by name, before anything is written.
    # (tests/test_bad_input.py checks the one line and exit status of such refusals as processes.)
    assert main(["run", CONFIG, *TINY, "runtime.device=cpu", "runtime.sharding=fsdp2", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runtime.sharding" in err[0] and "world size 1" in err[0], err
    assert not out.exists()
    # Refused before any process starts or anything is read.
    for args in (["launch", "--mode", "fsdp", "--nproc", "1"], ["run", "runtime.sharding=zero3"]):
        assert main([*args, CONFIG, "--output", str(out)]) == 2
        assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert "--nproc: fsdp needs at least 2 processes" in err[0] and "runtime.sharding" in err[1], err
    # validate checks the recipe in one process: the sharding is the launch's to give.
    assert main(["validate", CONFIG, "data.subset=360", "runtime.sharding=fsdp2"]) == 0
    assert "ok" in capsys.readouterr().out


def test_sharding_none_keeps_earlier_hashes_and_checkpoints_and_fsdp2_is_another_recipe():
    from harness.config.recipe import drop_workload_defaults
    from harness.config.run import config_hash, load_config, recipe_hash, to_dict
    from harness.run.resume import recipe_changes

    plain, sharded = load_config(CONFIG, []), load_config(CONFIG, ["runtime.sharding=fsdp2"])
    before = to_dict(plain)
    before["runtime"].pop("sharding")  # a config written before the key existed
    assert drop_workload_defaults(before) == drop_workload_defaults(to_dict(plain))
    assert recipe_changes(before, to_dict(plain), 0) == []
    assert config_hash(sharded) != config_hash(plain) and recipe_hash(sharded) != recipe_hash(plain)
    assert [c.split(" ")[0] for c in recipe_changes(to_dict(plain), to_dict(sharded), 0)] == ["runtime.sharding"]


def test_launch_fsdp_is_ddps_launch_with_sharding_on():
    from harness.launch.command import build_command

    cmd = build_command("fsdp", 2, [CONFIG, "--output", "runs/x"], port=29500)
    assert "--multi_gpu" in cmd and cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[-3:] == ["runtime.sharding=fsdp2", "--output", "runs/x"]
    assert not any("sharding" in a for a in build_command("ddp", 2, [CONFIG], port=29500))


def test_what_cannot_shard_is_refused_and_an_unsharded_model_never_trains_as_fsdp2():
    from harness.errors import BadInput
    from harness.run.accel import CompileConfig, RuntimeConfig
    from harness.run.sharding import check, verify

    with pytest.raises(BadInput, match="runtime.compile.enabled"):
        check(RuntimeConfig(sharding="fsdp2", compile=CompileConfig(enabled=True)), 2, use_cuda=False)
    # On a GPU, Accelerate honours the plugin only under a distributed launch.
    with pytest.raises(BadInput, match="runtime.sharding: fsdp2 on a GPU needs a distributed launch"):
        check(RuntimeConfig(sharding="fsdp2"), 1, use_cuda=True, distributed_type="NO")
    check(RuntimeConfig(sharding="fsdp2"), 1, use_cuda=True, distributed_type="FSDP")  # one GPU, torchrun
    check(RuntimeConfig(sharding="fsdp2"), 2, use_cuda=False)
    check(RuntimeConfig(sharding="none"), 1, use_cuda=False)
    with pytest.raises(RuntimeError, match="not sharded"):
        verify(RuntimeConfig(sharding="fsdp2"), nn.Linear(2, 2))
    verify(RuntimeConfig(sharding="none"), nn.Linear(2, 2))


# -- units of sharding and the state a rank holds (one process) -------------------------

def test_units_are_the_gpt_blocks_or_the_large_children():
    from harness.models.gpt import GPT as GPTModel
    from harness.run.sharding import MIN_SHARD_PARAMS, units

    gpt = GPTModel(256, 16, n_layer=3, n_head=2, d_model=32)
    assert units(gpt) == list(gpt.blocks)
    big, small = nn.Linear(MIN_SHARD_PARAMS, 1), nn.Linear(10, 10)
    model = nn.Sequential(nn.ModuleList([big, small]), nn.Linear(MIN_SHARD_PARAMS // 10, 10))
    assert units(model) == [big, model[1]]
    assert units(nn.Sequential(nn.Linear(10, 10))) == []


def test_model_state_counts_params_grads_and_adam_once_each():
    from harness.measure.model_state import model_state

    model = nn.Sequential(nn.Linear(100, 50), nn.Linear(50, 100))
    model[1].weight = nn.Parameter(model[0].weight.t().contiguous())  # untied: two tensors
    opt = torch.optim.Adam(model.parameters())
    before = model_state(model, opt)
    assert before["model_state"]["grads_mb"] == 0 and before["model_state"]["optimizer_mb"] == 0
    model(torch.randn(4, 100)).sum().backward()
    opt.step()
    params = sum(p.numel() for p in model.parameters())
    held = model_state(model, opt)
    assert held["model_state_mb"] == pytest.approx(adam_state_mb(params, 4), rel=1e-12)
    assert held["model_state"]["params_mb"] == pytest.approx(params * 4 / MB, rel=1e-12)

    tied = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 10, bias=False))
    tied[1].weight = tied[0].weight
    assert model_state(tied, torch.optim.SGD(tied.parameters(), lr=0.1))["model_state_mb"] == 10 * 8 * 4 / MB


BF16_SCRIPT = """
import os, torch, torch.distributed as dist
from harness.models.gpt import GPT
from harness.run.accel import resolve_precision
from harness.run.sharding import is_sharded, shard_on_cpu
dist.init_process_group("gloo", init_method="file://" + os.environ["STORE"], rank=0, world_size=1)
torch.manual_seed(0)
model = shard_on_cpu(GPT(256, 16, n_layer=2, n_head=2, d_model=32), resolve_precision("bf16", False), 1)
idx = torch.randint(0, 256, (2, 16))
logits = model(idx)
logits.flatten(0, 1).logsumexp(-1).mean().backward()
grads = {p.grad.to_local().dtype for p in model.parameters()}
print(is_sharded(model), logits.dtype, model.blocks[0].ln1.weight.dtype, sorted(map(str, grads)))
dist.destroy_process_group()
"""


def test_bf16_policy_computes_in_bf16_and_hands_back_fp32(tmp_path):
    """runtime.precision: bf16 under FSDP2 on the CPU: the units compute in bf16 (a unit's output
    meets the root's final LayerNorm in bf16, which the CPU kernels need), the root's logits come
    back in fp32 for the loss, and the sharded gradients are fp32."""
    proc = subprocess.run([sys.executable, "-c", BF16_SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "STORE": str(tmp_path / "store")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[-2] == "True torch.float32 torch.float32 ['torch.float32']"


# -- GPU: Accelerate's FSDP2 plugin -----------------------------------------------------

@pytest.mark.gpu
@needs_cuda
@pytest.mark.slow
def test_fsdp2_on_a_gpu_runs_accelerates_plugin_and_saves_a_whole_model(tmp_path):
    """One GPU is a world of one: FSDP2 shards nothing there, but the plugin's path (prepare,
    sharded checkpoint, gathered model.pt) runs as on N GPUs."""
    out = tmp_path / "gpu"
    gpt = [a for a in GPT if a not in ("runtime.device=cpu", "output.checkpoint_every_epoch=false")]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
                           "--master_port", str(_free_port()), "-m", "harness", "run", *gpt, "runtime.device=gpu",
                           "runtime.sharding=fsdp2", "runtime.precision=bf16", "--output", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, env=os.environ.copy())
    ok(proc)
    report = load_report(out)
    assert report["distributed"]["sharding"] == "fsdp2", report["distributed"]
    assert report["distributed"]["distributed_type"] == "FSDP"
    assert report["memory"]["model_state_mb"] > 0
    assert list((out / "checkpoints").glob("epoch_*/pytorch_model_fsdp_0/.metadata"))
    from harness.models.gpt import GPT as GPTModel

    state = torch.load(out / "model.pt", weights_only=True)
    GPTModel(256, 64, n_layer=2, n_head=4, d_model=128).load_state_dict(state)


def _free_port() -> int:
    from harness.launch.command import free_port

    return free_port()
