"""train.grad_accum_steps: K micro-batches of B make one optimizer step on a batch of K x B.

Real runs of the shipped recipes, shortened: the weights after the same optimizer steps
agree with one big batch's within float tolerance, the report's batch block says the
global batch, and under DDP (two gloo processes) the non-stepping micro-batches skip
the gradient all-reduce, counted by a comm hook.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.cli import main
from harness.report.io import load_report
from support.cli import run_cli, run_in_process
from support.paths import REPO
from support.runs import weights

pytestmark = pytest.mark.usefixtures("one_thread")

MLP = str(REPO / "configs/digits_mlp.yaml")
GPT = str(REPO / "configs/tiny_gpt.yaml")
# No dropout, no augmentation (digits_mlp has none): the only difference is the batch's split.
QUICK = ["train.epochs=1", "measure.warmup_steps=0", "measure.measure_peak=false", "output.progress=false",
         "output.checkpoint_every_epoch=false"]
MLP_RUN = [MLP, "data.subset=360", "model.kwargs.dropout=0.0", "train.max_steps=2", *QUICK]
CORPUS_LINE = "a stitch in time saves nine; "


def _run(tmp_path, name: str, *items: str) -> tuple[dict, dict]:
    out = tmp_path / name
    assert main(["run", *items, "--output", str(out)]) == 0
    return load_report(out), weights(out)


def _apart(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_four_micro_batches_of_8_step_as_one_batch_of_32(tmp_path):
    acc_r, acc_w = _run(tmp_path, "k4", *MLP_RUN, "loader.batch_size=8", "train.grad_accum_steps=4")
    one_r, one_w = _run(tmp_path, "b32", *MLP_RUN, "loader.batch_size=32")
    small_r, small_w = _run(tmp_path, "b8", *MLP_RUN, "loader.batch_size=8")
    assert _apart(acc_w, one_w) < 1e-5
    # It can fail: two steps of 8 samples end far from two of 32.
    assert _apart(small_w, one_w) > 1e-3
    assert acc_r["batch"] == {"micro_batch_size": 8, "grad_accum_steps": 4, "world_size": 1, "global_batch_size": 32}
    assert one_r["batch"]["global_batch_size"] == acc_r["throughput"]["global_batch_size"] == 32
    # The meter counts optimizer steps, and every sample of their micro-batches.
    for r in (acc_r, one_r):
        assert r["throughput"]["measured_steps"] == 2 and r["throughput"]["measured_samples"] == 64
        assert len(r["raw"]["step_time_ms"]) == 2
    assert acc_r["accuracy"]["dev"][0]["train_loss"] == pytest.approx(one_r["accuracy"]["dev"][0]["train_loss"],
                                                                      rel=1e-5)


def test_clipping_under_accumulation_clips_the_whole_groups_gradient(tmp_path):
    """optim.grad_clip_norm acts at the optimizer step, on the K micro-batches' summed
    gradient: K=4 x 8 clipped steps as one clipped batch of 32 (a micro-batch clipped on
    its own would not)."""
    clip = ["optim.grad_clip_norm=0.05", "optim.name=sgd", "optim.lr=0.5"]
    _, acc_w = _run(tmp_path, "k4", *MLP_RUN, *clip, "loader.batch_size=8", "train.grad_accum_steps=4")
    _, one_w = _run(tmp_path, "b32", *MLP_RUN, *clip, "loader.batch_size=32")
    _, free_w = _run(tmp_path, "free", *MLP_RUN, *clip[1:], "loader.batch_size=32")
    assert _apart(acc_w, one_w) < 1e-5
    # It can fail: the clipping changed the steps.
    assert _apart(free_w, one_w) > 1e-3


def test_k_is_part_of_the_recipe_and_k1_keeps_earlier_hashes():
    from harness.config.recipe import differing_keys
    from harness.config.run import load_config, recipe_hash, to_dict

    cfg = load_config(REPO / "configs/digits_cnn.yaml")
    before = to_dict(cfg)
    before["train"].pop("grad_accum_steps")  # a config written before the key existed
    assert differing_keys(before, to_dict(cfg)) == []
    k2 = load_config(REPO / "configs/digits_cnn.yaml", ["train.grad_accum_steps=2"])
    assert differing_keys(to_dict(cfg), to_dict(k2)) == ["train.grad_accum_steps"]
    assert recipe_hash(k2) != recipe_hash(cfg)


def test_tiny_gpt_accumulates_by_tokens(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS_LINE * 1500)
    gpt = [GPT, f"data.root={corpus}", "train.max_steps=2", *QUICK]
    acc_r, acc_w = _run(tmp_path, "k4", *gpt, "loader.batch_size=8", "train.grad_accum_steps=4")
    one_r, one_w = _run(tmp_path, "b32", *gpt, "loader.batch_size=32")
    assert _apart(acc_w, one_w) < 1e-5
    assert acc_r["batch"]["global_batch_size"] == one_r["batch"]["global_batch_size"] == 32
    t = acc_r["throughput"]
    assert t["measured_steps"] == 2 and t["measured_tokens"] == 2 * 32 * 64 and t["tokens_per_step"] == 32 * 64


def test_a_short_last_group_weighs_each_micro_batch_by_its_units():
    """Micro-batches of 8, 8 and 3 (a short group of a K=4 run) give the gradient of one batch of 19."""
    from accelerate.state import AcceleratorState, PartialState

    from harness.run.accel import RuntimeConfig, build_accelerator
    from harness.run.loop import TrainParts, accumulate

    torch.manual_seed(0)
    x, y = torch.randn(19, 6), torch.randint(0, 3, (19,))
    ref = nn.Linear(6, 3)
    nn.functional.cross_entropy(ref(x), y).backward()
    try:
        acc, _ = build_accelerator(RuntimeConfig(device="cpu"), grad_accum_steps=4)
        model = nn.Linear(6, 3)
        model.load_state_dict(ref.state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model, opt = acc.prepare(model, opt)
        parts = TrainParts(acc, model, opt, None, nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="none"),
                           grad_accum_steps=4)
        loss, units = accumulate(parts, [(x[:8], y[:8]), (x[8:16], y[8:16]), (x[16:], y[16:])])
        assert acc.sync_gradients, "the group's last micro-batch lets the optimizer step"
    finally:
        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    assert units == 19
    assert loss.item() == pytest.approx(nn.functional.cross_entropy(ref(x), y).item(), rel=1e-6)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
    # It can fail: an unweighted mean of the three micro-batches' losses is another gradient.
    plain = nn.Linear(6, 3)
    plain.load_state_dict(ref.state_dict())
    sum(nn.functional.cross_entropy(plain(x[a:b]), y[a:b]) for a, b in ((0, 8), (8, 16), (16, 19))).div(3).backward()
    assert (plain.weight.grad - ref.weight.grad).abs().max() > 1e-3


def test_an_epoch_whose_micro_batches_are_not_a_multiple_of_k_ends_on_a_short_group(tmp_path):
    # 360 digits -> 252 train samples = 32 micro-batches of 8 (the last of 4): 10 groups of 3, then one of 2.
    r, _ = _run(tmp_path, "k3", MLP, "data.subset=360", "loader.batch_size=8", "train.grad_accum_steps=3",
                *QUICK, "measure.warmup_steps=0")
    train = r["data"]["sizes"]["train"]
    micro = -(-train // 8)
    assert r["throughput"]["measured_steps"] == -(-micro // 3)
    assert r["throughput"]["measured_samples"] == train


def test_a_device_resident_loader_groups_and_ends_its_epoch_as_the_dataloader_does(tmp_path):
    # Accelerate never sees a device-resident loader: the harness's own groups decide the short last step.
    common = [MLP, "data.subset=360", "model.kwargs.dropout=0.0", "loader.batch_size=8", "train.grad_accum_steps=3",
              *QUICK, "train.epochs=2"]
    dl_r, dl_w = _run(tmp_path, "dataloader", *common)
    dr_r, dr_w = _run(tmp_path, "resident", *common, "loader.kind=device_resident")
    assert _apart(dl_w, dr_w) == 0.0
    assert dl_r["accuracy"]["dev"] == dr_r["accuracy"]["dev"]
    steps = -(-(-(-dl_r["data"]["sizes"]["train"] // 8)) // 3)  # micro-batches of 8 in groups of 3
    assert dl_r["throughput"]["measured_steps"] == dr_r["throughput"]["measured_steps"] == 2 * steps


@pytest.mark.slow
def test_tiny_gpt_k4_of_8_and_batch_32_reach_the_same_test_loss(tmp_path):
    """The issue's check on the shipped recipe, shortened: same global batch, test losses within 1%.

    And the same run step by step: every step's training loss within 1e-3 (relative). Over
    these 30 steps the recipe without its warm-up and clipping spiked at step 24 and the two
    parted by 3% there (docs/grad_accum.md); a bug in the accumulation (a scheduler stepped per
    micro-batch, another loss weighting, another data order) parts them from step 2. The
    recipe's 120 steps over five seeds take minutes: docs/grad_accum.md gives the command."""
    from harness.observe.metrics_stream import read

    short = [GPT, "train.max_steps=30", "measure.warmup_steps=2", "output.progress=false",
             "measure.measure_peak=false", "output.checkpoint_every_epoch=false", "tracking.every_n_steps=1"]
    acc_r, _ = _run(tmp_path, "k4", *short, "loader.batch_size=8", "train.grad_accum_steps=4")
    one_r, _ = _run(tmp_path, "b32", *short, "loader.batch_size=32")
    assert acc_r["batch"]["global_batch_size"] == one_r["batch"]["global_batch_size"] == 32
    a, b = acc_r["accuracy"]["test_loss"], one_r["accuracy"]["test_loss"]
    assert abs(a - b) / b < 0.01, (a, b)
    curves = [[r["train_loss"] for r in read(tmp_path / name / "metrics.jsonl") if r["kind"] == "interval"]
              for name in ("k4", "b32")]
    assert len(curves[0]) == len(curves[1]) == 30
    assert curves[0] == pytest.approx(curves[1], rel=1e-3, abs=0)


@pytest.mark.slow
def test_a_signal_inside_a_group_stops_after_it_and_resume_matches(tmp_path):
    """8 micro-batches an epoch in groups of 2: the 11th forward is the first micro-batch of
    epoch 2's second step; the run stops after that step and resumes 4 micro-batches in."""
    import signal

    from support.paths import TESTS_PATH
    from support.recipes import CONFIG, TINY
    from support.runs import assert_same_run

    # One torch thread in every run, as the reference's in this process (the module's one_thread):
    # assert_same_run compares weights bit for bit, and another thread count rounds otherwise.
    env = {"PYTHONPATH": TESTS_PATH, "OMP_NUM_THREADS": "1"}
    common = [CONFIG, *TINY, "train.epochs=3", "train.grad_accum_steps=2", "model.name=fixtures.custom_models:SignalAt",
              f"model.kwargs={{step: 11, signum: {int(signal.SIGTERM)}, marker: {tmp_path / 'sent'}}}"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    (tmp_path / "sent").write_text("the reference run must not be signalled\n")
    assert run_in_process(common, whole) == 0  # the reference: in this process, one torch thread as the runs'
    (tmp_path / "sent").unlink()
    proc = run_cli("run", *common, "--output", str(part), env=env)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert [p.name for p in (part / "checkpoints").iterdir()] == ["epoch_0001_step_0002"]
    proc = run_cli("run", "--resume", str(part), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert load_report(part)["resumed_from_step_in_epoch"] == 2
    assert_same_run(whole, part)


# -- DDP: two gloo processes ------------------------------------------------------------

def _launch(tmp_path, name: str, *items: str) -> dict:
    out = tmp_path / name
    proc = run_cli("launch", "--mode", "ddp", "--nproc", "2", *items, "runtime.device=cpu", "--output", str(out),
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_k2_steps_as_k1_with_double_the_micro_batch(tmp_path):
    k2 = _launch(tmp_path, "k2", *MLP_RUN, "loader.batch_size=8", "train.grad_accum_steps=2")
    k1 = _launch(tmp_path, "k1", *MLP_RUN, "loader.batch_size=16")
    assert _apart(weights(k2), weights(k1)) < 1e-5
    r = load_report(k2)
    assert r["batch"] == {"micro_batch_size": 8, "grad_accum_steps": 2, "world_size": 2, "global_batch_size": 32}
    assert r["per_rank"][0]["steps"] == r["per_rank"][1]["steps"] == 2
    assert load_report(k1)["batch"]["global_batch_size"] == 32


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_all_reduces_once_per_optimizer_step(tmp_path):
    """A comm hook counts DDP's all-reduces: one per optimizer step with K=4, one per
    micro-batch with K=1; the K=4 weights are a single process's steps on each group's samples."""
    ranks = _accumulating_ranks(tmp_path, "accum_allreduce_worker.py")
    for k in (4, 1):
        assert ranks[k][0]["wrapped"] == "DistributedDataParallel" and ranks[k][0]["micro_batches"] == 10
    counts = {k: (r0["allreduces"], r1["allreduces"], r0["steps"]) for k, (r0, r1) in ranks.items()}
    # 10 micro-batches a rank: groups of 4, 4 and 2 -> 3 optimizer steps, 3 all-reduces (one bucket).
    assert counts[4] == (3, 3, 3)
    assert counts[1] == (10, 10, 10)
    state = ranks[4][0]["state"]
    for name, ref in _one_process_steps().items():
        assert torch.allclose(state[name], ref, atol=1e-6), name


def _accumulating_ranks(tmp_path, worker: str) -> dict[int, tuple[dict, dict]]:
    """Each rank's record of one epoch of tests/fixtures/``worker`` over two gloo processes,
    with K=4 and with K=1: both in one launch, one after the other."""
    from test_distributed import accelerate_launch, ok

    for k in (4, 1):
        (tmp_path / str(k)).mkdir()
    ok(accelerate_launch("launch/cpu-ddp.yaml", f"tests/fixtures/{worker}", str(tmp_path), "4", "1"))
    return {k: tuple(torch.load(tmp_path / str(k) / f"rank{r}.pt", weights_only=True) for r in (0, 1))
            for k in (4, 1)}


def _one_process_steps() -> dict:
    """The workers' K=4 epoch as one process steps it: global micro-batches alternate between
    the ranks, so step j trains on samples 16j..16j+15 (the last on 32..39)."""
    from fixtures.accum_allreduce_worker import LR, data, tiny_model

    x, y = data()
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for a, b in ((0, 16), (16, 32), (32, 40)):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[a:b]), y[a:b]).backward()
        opt.step()
    return model.state_dict()


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp2_reduces_once_per_optimizer_step_and_steps_as_one_batch(tmp_path):
    """The harness shards FSDP2 itself on the CPU, where Accelerate's no_sync does nothing: the
    model is told to skip the reduce-scatter of the K-1 non-stepping micro-batches. Counted per
    rank (one unit, the root: one reduction per synchronised backward); the K=4 weights are a
    single process's steps on each group's samples, as under DDP."""
    ranks = _accumulating_ranks(tmp_path, "accum_fsdp_worker.py")
    for k in (4, 1):
        assert ranks[k][0]["sharded"] and ranks[k][0]["micro_batches"] == 10
    counts = {k: (r0["reductions"], r1["reductions"], r0["steps"]) for k, (r0, r1) in ranks.items()}
    assert counts[4] == (3, 3, 3)
    assert counts[1] == (10, 10, 10)
    assert _apart(ranks[4][0]["state"], _one_process_steps()) < 1e-5
