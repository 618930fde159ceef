"""runtime.activation_checkpointing: the same training, less kept for the backward, HFU above MFU.

Two tiny GPT runs (configs/tiny_gpt.yaml: 2 blocks, d_model 128, windows of 64 tokens)
from one seed, with and without checkpointing, a few steps each.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from harness.cli import main
from harness.models.gpt import GPT
from harness.report.io import load_report
from harness.run import act_ckpt
from support.groups import one_worker
from support.paths import REPO
from support.runs import weights
from support.threads import one_torch_thread

GPT_CONFIG = str(REPO / "configs/tiny_gpt.yaml")
QUICK = ["train.max_steps=4", "measure.warmup_steps=1", "output.progress=false"]
L, D, T, V = 2, 128, 64, 256
PROBE = 8
"""Samples in the probe batch the FLOPs and saved bytes are counted on (finish.PROBE_BATCH)."""

pytestmark = [pytest.mark.usefixtures("one_thread"), one_worker(__name__)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{False: the plain run's folder, True: the checkpointed run's}."""
    with one_torch_thread():
        out = {}
        for on in (False, True):
            folder = tmp_path_factory.mktemp(f"act_ckpt_{on}")
            assert main(["run", GPT_CONFIG, *QUICK, f"runtime.activation_checkpointing={str(on).lower()}",
                         "--output", str(folder)]) == 0
            out[on] = folder
        return out


def test_checkpointing_trains_the_same_weights(runs):
    plain, ckpt = weights(runs[False]), weights(runs[True])
    assert plain.keys() == ckpt.keys()
    # The recomputed forward is the same arithmetic on the same inputs: on the CPU the
    # weights agree to float rounding (in practice bit for bit).
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=0, atol=1e-6)
    a, b = load_report(runs[False]), load_report(runs[True])
    assert b["accuracy"]["test_loss"] == pytest.approx(a["accuracy"]["test_loss"], abs=1e-5)


def test_model_pt_loads_into_a_plain_gpt(runs):
    model = GPT(V, T, L, 4, D)
    model.load_state_dict(weights(runs[True]))  # strict: no wrapper prefix, no missing key
    assert type(model.blocks[0]).__name__ == "Block" and not act_ckpt.checkpointed(model)


def test_the_model_block_says_what_was_checkpointed(runs):
    assert load_report(runs[False])["model"]["activation_checkpointing"] is None
    ac = load_report(runs[True])["model"]["activation_checkpointing"]
    assert ac == {"blocks": L, "block_class": "Block", "first": "blocks.0", "last": f"blocks.{L - 1}"}


def test_saved_for_backward_falls_by_what_the_blocks_keep(runs):
    """Per block, without checkpointing, a probe batch of B windows keeps (in B*T*d floats):
    the two LayerNorms' inputs (2), the qkv projection's input (1) and its output, which
    attention saves as q, k, v (3), attention's output, the output projection's input (1),
    the MLP's input (1), the GELU's input (4) and the MLP projection's input (4): 16, plus
    per-row statistics (LayerNorm mean and rstd, attention's logsumexp: under 1/10).
    Checkpointed, a block keeps only its input (1). So the fall is 15 per block; the
    bounds leave room for what an attention kernel saves differently (the math path also
    keeps the T x T scores: +2 at T = 64, d = 128)."""
    plain = load_report(runs[False])["memory"]["saved_for_backward_mb"]
    ckpt = load_report(runs[True])["memory"]["saved_for_backward_mb"]
    unit_mb = PROBE * T * D * 4 / 2**20  # one B*T*d tensor of fp32
    fall_per_block = (plain - ckpt) / unit_mb / L
    assert 14.5 < fall_per_block < 17.5, fall_per_block
    # What remains: the blocks' inputs (L), the final LayerNorm's input and output (2)
    # and the logits (vocab / d = 2): about 6 units, nothing of the blocks' insides.
    assert 5 < ckpt / unit_mb < 7.5, ckpt / unit_mb


def test_hfu_adds_one_forward_of_the_checkpointed_blocks(runs):
    plain, ckpt = load_report(runs[False])["compute"], load_report(runs[True])["compute"]
    assert plain["flops_per_sample"] == ckpt["flops_per_sample"]  # model FLOPs do not change
    assert plain["recomputed_flops_per_sample"] == 0
    assert plain["hardware_flops_per_sample"] == plain["flops_per_sample"]
    assert plain["hfu_measured_peak"] == plain["mfu_measured_peak"]
    # A block's forward per token: its four matmuls (qkv 3d^2, out d^2, MLP 4d^2 + 4d^2,
    # 2 FLOPs each) and attention's two (2*T*d each): 24 d^2 + 4 T d. Its forward+backward
    # is three times that (6 N + 12 L H Q T restricted to the blocks), so the recompute is
    # one third of the checkpointed blocks' model FLOPs.
    block_forward = 24 * D * D + 4 * T * D
    assert ckpt["recomputed_flops_per_sample"] == L * block_forward * T
    assert ckpt["recomputed_flops_per_sample"] == pytest.approx(L * (72 * D * D + 12 * T * D) * T / 3)
    assert ckpt["hardware_flops_per_sample"] == ckpt["flops_per_sample"] + ckpt["recomputed_flops_per_sample"]
    assert ckpt["hardware_flops_per_token"] == pytest.approx(ckpt["hardware_flops_per_sample"] / T)
    ratio = ckpt["hardware_flops_per_sample"] / ckpt["flops_per_sample"]
    assert ratio > 1.2
    # Against a peak measured on a busy machine (it reads low) the product can pass 1: then
    # the HFU is null with a warning, never above 1 (docs/report.md).
    if ckpt["mfu_measured_peak"] * ratio <= 1:
        assert ckpt["hfu_measured_peak"] == pytest.approx(ckpt["mfu_measured_peak"] * ratio)
    else:
        assert ckpt["hfu_measured_peak"] is None


def test_a_checkpointed_block_runs_its_forward_again_in_the_backward():
    torch.manual_seed(0)
    model = GPT(V, 16, L, 2, 32)
    act_ckpt.apply(model, "gpt")
    calls = []
    # attn, not mlp: torch's recomputation stops once the backward's tensors exist again,
    # before the block's last matmul (the MLP's projection) finishes.
    model.blocks[0].attn.register_forward_hook(lambda *_: calls.append(1))
    model(torch.randint(0, V, (2, 16))).sum().backward()
    assert len(calls) == 2  # the forward, then the recomputation
    calls.clear()
    with torch.no_grad():
        model(torch.randint(0, V, (2, 16)))
    assert len(calls) == 1  # nothing saved, nothing recomputed
    calls.clear()
    probe = copy.deepcopy(model)  # the hook comes along
    probe(torch.randint(0, V, (2, 16))).sum().backward()
    assert len(calls) == 2  # a copy checkpoints too (the FLOP count's probe is one) ...
    calls.clear()
    with act_ckpt.plain(probe):  # ... unless made plain
        probe(torch.randint(0, V, (2, 16))).sum().backward()
    assert len(calls) == 1


def test_the_blocks_of_other_models():
    from torchvision.models import resnet18

    assert act_ckpt.find_blocks(resnet18()) == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    stack = nn.Sequential(nn.Flatten(), nn.Sequential(*(nn.Linear(4, 4) for _ in range(3))), nn.Linear(4, 2))
    assert act_ckpt.find_blocks(stack) == ["1.0", "1.1", "1.2"]
    # Mixed classes (Linear, ReLU, Linear) are one network, not a stack of blocks.
    assert act_ckpt.find_blocks(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))) == []
    before = list(stack.state_dict())
    act_ckpt.apply(stack, "stack")
    assert list(stack.state_dict()) == before and len(act_ckpt.checkpointed(stack)) == 3


def test_a_model_without_blocks_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", str(REPO / "configs/digits_cnn.yaml"), "model.name=mlp",
                 "runtime.activation_checkpointing=true", "--output", str(out)])
    stdout, stderr = capsys.readouterr()
    lines = stderr.splitlines()
    assert code == 2, stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: runtime.activation_checkpointing"), stderr
    assert "'mlp'" in lines[0] and "Traceback" not in stderr
    assert stdout == "" and not out.exists()


def test_saved_bytes_count_each_storage_once_and_leave_the_weights_out():
    from harness.measure.saved import saved_for_backward_bytes

    x = torch.randn(100, 1000)
    net = nn.Sequential(nn.Linear(1000, 1000), nn.ReLU())
    # The Linear keeps its input (100 x 1000 fp32: 400,000 bytes; its weight is the model's,
    # not counted), the ReLU its output (400,000); the sum keeps nothing.
    assert saved_for_backward_bytes(net, x, None, lambda out, _t: out.sum()) == 800_000
    # The product keeps a view of the input (for the gradient of ``out``; ``x`` needs none):
    # the storage the Linear keeps already, counted once.
    twice = nn.Sequential(nn.Linear(1000, 1000))
    assert saved_for_backward_bytes(twice, x, None, lambda out, _t: (out * x[:, :1000]).sum()) == 400_000


def test_saved_bytes_of_checkpointed_blocks_read_the_same_on_the_meta_device():
    """A sharded run counts on its meta copy: inside checkpointed blocks nothing depends on
    the kernels, so the count from shapes equals the CPU's."""
    from harness.measure.saved import saved_for_backward_bytes

    torch.manual_seed(0)
    model = GPT(V, T, L, 4, D)
    act_ckpt.apply(model, "gpt")
    x, y = torch.randint(0, V, (2, T)), torch.randint(0, V, (2, T))

    def loss(logits, t):
        return nn.functional.cross_entropy(logits.reshape(-1, V), t.reshape(-1))

    blocks = act_ckpt.checkpointed(model)
    cpu = saved_for_backward_bytes(model, x, y, loss, blocks)
    meta = copy.deepcopy(model).to("meta")
    assert saved_for_backward_bytes(meta, x.to("meta"), y.to("meta"), loss, blocks) == cpu


def test_batch_norm_statistics_are_updated_once_per_step():
    """The recomputation is a second train-mode forward: without care a BatchNorm's running
    statistics would take the momentum twice per step."""
    class Unit(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.bn = nn.Linear(6, 6), nn.BatchNorm1d(6)

        def forward(self, x):
            return torch.relu(self.bn(self.lin(x)))

    torch.manual_seed(0)
    plain = nn.Sequential(nn.Sequential(Unit(), Unit(), Unit()), nn.Linear(6, 1))
    ckpt = copy.deepcopy(plain)
    assert act_ckpt.apply(ckpt, "units")["blocks"] == 3
    x = torch.randn(16, 6)
    for model in (plain, ckpt):
        for _ in range(2):
            model(x).sum().backward()
    for (name, a), (_, b) in zip(plain.named_buffers(), ckpt.named_buffers()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-7, msg=name)
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.slow
def test_a_checkpointed_gpt_compiles_whole_and_gives_the_eager_gradients():
    """torch.compile traces torch.utils.checkpoint as one region only without side effects
    in it (a context_fn or a mutated closure breaks fullgraph)."""
    torch.manual_seed(0)
    eager = GPT(V, 16, L, 2, 32)
    compiled = copy.deepcopy(eager)
    act_ckpt.apply(compiled, "gpt")
    x = torch.randint(0, V, (2, 16))
    eager(x).sum().backward()
    torch.compile(compiled, backend="aot_eager", fullgraph=True)(x).sum().backward()
    for (name, a), (_, b) in zip(eager.named_parameters(), compiled.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_a_gpu_checkpointing_keeps_less_and_hfu_rises_against_the_datasheet(tmp_path):
    """The same recipe on the GPU, fp32: the blocks' insides are dropped (the fused attention
    kernels keep q, k, v, the output and a logsumexp, as on the CPU), and HFU against the
    datasheet peak is MFU times the same hardware/model ratio."""
    reports = {}
    for on in (False, True):
        out = tmp_path / str(on)
        assert main(["run", GPT_CONFIG, *QUICK, "runtime.device=gpu", "measure.measure_peak=false",
                     f"runtime.activation_checkpointing={str(on).lower()}", "--output", str(out)]) == 0
        reports[on] = load_report(out)
    unit_mb = PROBE * T * D * 4 / 2**20
    plain, ckpt = (reports[on]["memory"]["saved_for_backward_mb"] for on in (False, True))
    assert 13 < (plain - ckpt) / unit_mb / L < 18, (plain, ckpt)
    c = reports[True]["compute"]
    assert c["recomputed_flops_per_sample"] == L * (24 * D * D + 4 * T * D) * T
    if c["mfu_datasheet"] is not None:  # a GPU in the datasheet table
        assert c["hfu_datasheet"] == pytest.approx(c["mfu_datasheet"] * c["hardware_flops_per_sample"]
                                                   / c["flops_per_sample"])
    # GPU kernels may sum in another order from run to run: close, not equal.
    a, b = weights(tmp_path / "False"), weights(tmp_path / "True")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4)
